"""Artifacts bigger than Cloud Run's 32 MiB HTTP/1 request limit, through a proxy configured like
Cloud Run (cloud_run_proxy.py), logged and downloaded with MLflow's own client.

One start.sh server (serving HTTP/1.1 and h2c on its one port) on a freshly migrated database, with
two proxies in front of it: `http1` (Cloud Run's default: HTTP/1.1 to the container, request bodies
over 32 MiB refused with 413) and `h2c` (end-to-end HTTP/2, a container port named h2c). A 200 MiB
artifact fails through the first and round-trips through the second, and the server streams it:
its memory stays far below the artifact's size. Run with -s to see the timings and memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider
from mlflow.tracking.request_header.registry import _request_header_provider_registry

from tests.server.cloud_run_proxy import CLOUD_RUN_HTTP1_LIMIT, CloudRunProxy
from tests.server.conftest import SERVER_DOMAIN, Database, Launcher
from tests.server.proc import PeakRss, ServerProcess, sha256

pytestmark = pytest.mark.slow

MiB = 2**20
LARGE = 200 * MiB
PEAK_RSS_LIMIT = 450 * MiB
"""The server's whole process tree, while it moves a 200 MiB artifact either way."""
GROWTH_LIMIT = 64 * MiB
"""How far above its idle RSS the server may go meanwhile: a buffered artifact would be 200 MiB."""


# --- the server, the proxies, MLflow's client ------------------------------------------------------


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gcs-mount")


@pytest.fixture(scope="module")
def server(
    module_launcher: Launcher, new_migrated_database: Callable[[], Database], artifact_dir: Path
) -> ServerProcess:
    db = new_migrated_database()
    server = module_launcher(db, MLFLOW_ARTIFACTS_DESTINATION=str(artifact_dir), MLFLOW_ALLOWED_HOSTS=SERVER_DOMAIN)
    server.wait_healthy()
    return server


@pytest.fixture(scope="module")
def h2c_proxy(server: ServerProcess) -> Iterator[CloudRunProxy]:
    with CloudRunProxy(server.url, "h2c") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def http1_proxy(server: ServerProcess) -> Iterator[CloudRunProxy]:
    with CloudRunProxy(server.url, "http1") as proxy:
        yield proxy


@dataclass(frozen=True)
class LargeFile:
    path: Path
    sha256: str


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> LargeFile:
    path = tmp_path_factory.mktemp("large") / "model.bin"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(LARGE // (8 * MiB)):
            block = os.urandom(8 * MiB)
            digest.update(block)
            f.write(block)
    return LargeFile(path, digest.hexdigest())


class DomainHost(RequestHeaderProvider):
    """Sends the service's domain as Host, as the load balancer in front of Cloud Run does."""

    def in_context(self) -> bool:
        return True

    def request_headers(self) -> dict[str, str]:
        return {"Host": SERVER_DOMAIN}


@pytest.fixture
def mlflow_through(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[CloudRunProxy], MlflowClient]]:
    """Points MLflow's client (and fluent API) at a proxy, every request with Host: the domain."""
    # One attempt per request: a refused upload is an answer, not something to retry.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    provider = DomainHost()
    _request_header_provider_registry.register(lambda: provider)

    def through(proxy: CloudRunProxy) -> MlflowClient:
        mlflow.set_tracking_uri(proxy.url)
        return MlflowClient(tracking_uri=proxy.url)

    try:
        yield through
    finally:
        _request_header_provider_registry._registry.remove(provider)
        mlflow.set_tracking_uri(None)


def report(line: str) -> None:
    """A measurement, on the terminal with `pytest -s`."""
    print(f"\n[large artifacts] {line}", flush=True)


def access_log(server: ServerProcess, method: str, path_part: str) -> list[str]:
    return [line for line in server.log().splitlines() if f'"{method} ' in line and path_part in line]


# --- the server speaks both on one port ----------------------------------------------------------


def test_one_port_answers_http1_and_h2c_prior_knowledge(server: ServerProcess) -> None:
    """Cloud Run's probes and the h2c hop reach the same port; bodyless HTTP/2 requests complete."""
    # One process: serve.py runs uvicorn in itself, and logs the command line uvicorn was given.
    [process] = server.tree()
    [uvicorn] = [line for line in server.log().splitlines() if line.startswith("start.sh: uvicorn ")]
    assert process.pid == server.proc.pid
    assert "--timeout-graceful-shutdown 8 --http zttp --http2" in uvicorn
    assert uvicorn.endswith(" mlflow_asgi:app")

    assert requests.get(f"{server.url}/health", timeout=10).text == "OK"

    search = f"{server.url}/api/2.0/mlflow/experiments/search"

    async def over_h2c() -> list[httpx.Response]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=20) as client:
            return [
                await client.get(f"{server.url}/health"),
                # MLflow's Flask routes read the (empty) body of a GET: this hung before mlflow_asgi.
                await client.get(search, params={"max_results": 1}, headers={"Host": SERVER_DOMAIN}),
                await client.get(search, params={"max_results": 1}, headers={"Host": "evil.example.net"}),
                await client.post(search, json={"max_results": 1}, headers={"Host": SERVER_DOMAIN}),
            ]

    health, searched, wrong_host, posted = asyncio.run(over_h2c())
    assert {r.http_version for r in (health, searched, wrong_host, posted)} == {"HTTP/2"}
    assert (health.status_code, health.text) == (200, "OK")
    assert searched.status_code == 200 and "experiments" in searched.json()
    assert wrong_host.status_code == 403
    assert posted.status_code == 200


# --- the proxy is Cloud Run's HTTP/1 limit ------------------------------------------------------


def test_the_http1_proxy_refuses_bodies_over_32_mib_before_the_server_sees_them(
    server: ServerProcess, http1_proxy: CloudRunProxy, artifact_dir: Path
) -> None:
    url = f"{http1_proxy.url}/api/2.0/mlflow-artifacts/artifacts/limit-check"
    headers = {"Host": SERVER_DOMAIN}
    at_limit = requests.put(f"{url}/at-limit.bin", data=b"\0" * CLOUD_RUN_HTTP1_LIMIT, headers=headers, timeout=60)
    assert at_limit.status_code == 200
    over = requests.put(f"{url}/over.bin", data=b"\0" * (CLOUD_RUN_HTTP1_LIMIT + 1), headers=headers, timeout=60)
    assert over.status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: the proxy counts
        for _ in range(33):
            yield b"\0" * MiB

    over_chunked = requests.put(f"{url}/over-chunked.bin", data=chunked(), headers=headers, timeout=60)
    assert over_chunked.status_code == 413

    assert (artifact_dir / "limit-check" / "at-limit.bin").stat().st_size == CLOUD_RUN_HTTP1_LIMIT
    assert not (artifact_dir / "limit-check" / "over.bin").exists()
    assert not (artifact_dir / "limit-check" / "over-chunked.bin").exists()
    assert not access_log(server, "PUT", "over")
    assert [e.upstream_http_version for e in http1_proxy.exchanges if e.method == "PUT"] == ["HTTP/1.1", None, None]


# --- a 200 MiB model through each ---------------------------------------------------------------


def test_over_http1_a_200_mib_artifact_is_refused_with_413_and_a_small_one_still_logs(
    server: ServerProcess,
    http1_proxy: CloudRunProxy,
    mlflow_through: Callable[[CloudRunProxy], MlflowClient],
    large_file: LargeFile,
    tmp_path: Path,
) -> None:
    client = mlflow_through(http1_proxy)
    mlflow.set_experiment("large-over-http1")
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(MiB))
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(small), artifact_path="model")
        with pytest.raises(requests.HTTPError) as refused:
            mlflow.log_artifact(str(large_file.path), artifact_path="model")
    assert refused.value.response.status_code == 413
    assert "413" in str(refused.value)

    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/small.bin"]
    downloaded = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="model/small.bin", dst_path=str(tmp_path / "dl")
    )
    assert sha256(Path(downloaded)) == sha256(small)
    assert not access_log(server, "PUT", f"{run.info.run_id}/artifacts/model/model.bin")


def test_over_h2c_a_200_mib_artifact_logs_and_downloads_intact_and_the_server_streams_it(
    server: ServerProcess,
    h2c_proxy: CloudRunProxy,
    mlflow_through: Callable[[CloudRunProxy], MlflowClient],
    large_file: LargeFile,
    artifact_dir: Path,
    tmp_path: Path,
) -> None:
    client = mlflow_through(h2c_proxy)
    experiment_id = mlflow.set_experiment("large-over-h2c").experiment_id
    idle = server.rss_bytes()
    with mlflow.start_run() as run:
        with PeakRss(server) as upload:
            mlflow.log_artifact(str(large_file.path), artifact_path="model")
    run_id = run.info.run_id

    # It landed in the artifact destination (the GCS mount), under the run, whole.
    [stored] = artifact_dir.rglob("model.bin")
    assert stored.relative_to(artifact_dir).parts == (experiment_id, run_id, "artifacts", "model", "model.bin")
    assert stored.stat().st_size == LARGE
    assert sha256(stored) == large_file.sha256
    assert [(a.path, a.file_size) for a in client.list_artifacts(run_id, "model")] == [("model/model.bin", LARGE)]

    with PeakRss(server) as download:
        downloaded = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="model/model.bin", dst_path=str(tmp_path / "dl")
        )
    assert sha256(Path(downloaded)) == large_file.sha256

    # Every hop to the server was HTTP/2, the two big ones included; the server logged them so.
    assert h2c_proxy.exchanges and {e.upstream_http_version for e in h2c_proxy.exchanges} == {"HTTP/2"}
    [put] = [e for e in h2c_proxy.exchanges if e.method == "PUT" and e.target.endswith("/model/model.bin")]
    assert (put.status, put.request_body_bytes) == (200, LARGE)
    model_file = re.compile(r"/mlflow-artifacts/artifacts/[^?]*/model/model\.bin$")
    [get] = [e for e in h2c_proxy.exchanges if e.method == "GET" and model_file.search(e.target)]
    assert (get.status, get.response_body_bytes) == (200, LARGE)
    assert [line for line in access_log(server, "PUT", "model/model.bin") if "HTTP/2" in line and " 200" in line]

    mib = lambda n: f"{n / MiB:.0f} MiB"  # noqa: E731
    report(f"idle server RSS {mib(idle)}")
    for name, measured in [("upload  ", upload), ("download", download)]:
        speed = LARGE / MiB / measured.seconds
        report(
            f"{name} 200 MiB via h2c: {measured.seconds:.1f} s ({speed:.0f} MiB/s), "
            f"peak server RSS {mib(measured.peak)} ({measured.samples} samples)"
        )
    for name, measured in [("upload", upload), ("download", download)]:
        assert measured.peak < PEAK_RSS_LIMIT, f"{name}: peak server RSS {mib(measured.peak)}"
        assert measured.peak - idle < GROWTH_LIMIT, f"{name}: server RSS grew {mib(measured.peak - idle)} above idle"


# --- a reader that holds back HTTP/2 flow control ----------------------------------------------


def test_a_download_stalled_by_http2_flow_control_is_not_buffered_in_the_server(
    server: ServerProcess, large_file: LargeFile, artifact_dir: Path
) -> None:
    """Cloud Run's front end grants the container window only as fast as its own client reads. A
    reader that grants none for a while must not make the server read the artifact into memory."""
    stored = artifact_dir / "stalled" / "stalled.bin"
    stored.parent.mkdir()
    try:
        os.link(large_file.path, stored)
    except OSError:
        shutil.copyfile(large_file.path, stored)
    idle = server.rss_bytes()
    stall = 2.0

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(0.05)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()  # h2's initial windows: 64 KiB for the connection and the stream
        stream_id = conn.get_next_available_stream_id()
        target = "/api/2.0/mlflow-artifacts/artifacts/stalled/stalled.bin"
        request = [(":method", "GET"), (":path", target), (":scheme", "http"), (":authority", SERVER_DOMAIN)]
        conn.send_headers(stream_id, request, end_stream=True)
        sock.sendall(conn.data_to_send())
        digest, received, status, ended = hashlib.sha256(), 0, None, False

        def pump(grant: bool) -> None:
            """Reads what has come in; with `grant`, gives back window for it (a reading client)."""
            nonlocal received, status, ended
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                return
            if not data:
                ended = True
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    digest.update(event.data)
                    received += len(event.data)
                    if grant:
                        conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended = True
            sock.sendall(conn.data_to_send())

        with PeakRss(server) as during_stall:
            while during_stall.samples < 10 or time.monotonic() - during_stall.started < stall:
                pump(grant=False)
        stalled_at = received
        # Released: everything withheld is granted and plenty more, as a fast reader would.
        conn.increment_flow_control_window(64 * MiB)
        conn.increment_flow_control_window(64 * MiB, stream_id)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 60
        while not ended and time.monotonic() < deadline:
            pump(grant=True)

    assert status == b"200"
    assert (received, digest.hexdigest()) == (LARGE, large_file.sha256)
    mib = lambda n: f"{n / MiB:.0f} MiB"  # noqa: E731
    assert stalled_at < MiB  # the stall held it back
    report(
        f"download stalled {stall:.0f} s by HTTP/2 flow control: server RSS idle {mib(idle)}, "
        f"peak during the stall {mib(during_stall.peak)}"
    )
    grown = during_stall.peak - idle
    assert grown < GROWTH_LIMIT, f"the server buffered {mib(grown)} for a stalled reader"
