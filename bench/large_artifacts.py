"""Time and memory of moving one large artifact through docker/start.sh's server, both ways.

    python bench/large_artifacts.py [--mib 200] [--rounds 1]

One throwaway PostgreSQL (tests/server/pg.py), one migrated database, one start.sh server pinned to
one CPU (Cloud Run's cpu=1; the clients run on the others), its artifact destination a local
directory. The artifact (random bytes) is uploaded and downloaded three ways:

  (p) MLflow's client (mlflow.log_artifact / download_artifacts) through the Cloud Run stand-in
      proxy in h2c mode (tests/server/cloud_run_proxy.py): HTTP/1.1 to the proxy, h2c to the
      server. The test path; the proxy (pure Python h11 + h2) is part of what is timed.
  (h2) httpx, HTTP/2 with prior knowledge straight to the server: the server's own h2c cost.
  (h1) requests, HTTP/1.1 straight to the server (no 32 MiB limit without Cloud Run): baseline.

For each: seconds, MiB/s, the server's peak RSS (whole process tree, sampled every 20 ms) and
the server's CPU seconds. Every download is checked against the upload's sha256.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.cloud_run_proxy import CloudRunProxy
from tests.server.pg import PostgresCluster, free_port
from tests.server.proc import MIGRATE_SH, START_SH, PeakRss, ServerProcess, run_script, script_env, sha256, split_cpus

USER, PASSWORD = "bench", "b@nch/p%ss"
MiB = 2**20
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


@dataclass
class Row:
    way: str
    direction: str
    size: int
    sampled: PeakRss

    def line(self) -> str:
        s = self.sampled
        return (
            f"{self.way:<34}{self.direction:<10}{s.seconds:>8.1f}{self.size / MiB / s.seconds:>9.0f}"
            f"{s.peak / MiB:>11.0f}{s.cpu:>10.1f}"
        )


def via_mlflow_and_proxy(server: ServerProcess, src: Path, dst: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    import mlflow

    proxy = CloudRunProxy(server.url, "h2c").start()
    mlflow.set_tracking_uri(proxy.url)
    mlflow.set_experiment("bench-large")
    run = mlflow.start_run()
    mlflow.end_run()
    client = mlflow.MlflowClient(proxy.url)

    def upload() -> None:
        client.log_artifact(run.info.run_id, str(src), artifact_path="p")

    def download() -> None:
        got = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=f"p/{src.name}", dst_path=str(dst.parent / "p")
        )
        Path(got).replace(dst)
        proxy.stop()

    return upload, download


def via_httpx_h2c(server: ServerProcess, src: Path, dst: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    url = f"{server.url}{ARTIFACTS_API}/h2/{src.name}"

    async def chunks() -> AsyncIterator[bytes]:
        with src.open("rb") as f:
            while block := f.read(MiB):
                yield block

    async def up() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=300) as client:
            response = await client.put(url, content=chunks(), headers={"content-length": str(src.stat().st_size)})
            assert (response.status_code, response.http_version) == (200, "HTTP/2"), response.text

    async def down() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=300) as client:
            async with client.stream("GET", url) as response:
                assert (response.status_code, response.http_version) == (200, "HTTP/2")
                with dst.open("wb") as f:
                    async for block in response.aiter_raw():
                        f.write(block)

    return (lambda: asyncio.run(up())), (lambda: asyncio.run(down()))


def via_requests_http1(server: ServerProcess, src: Path, dst: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    url = f"{server.url}{ARTIFACTS_API}/h1/{src.name}"

    def upload() -> None:
        with src.open("rb") as f:
            requests.put(url, data=f, timeout=300).raise_for_status()

    def download() -> None:
        with requests.get(url, stream=True, timeout=300) as response, dst.open("wb") as f:
            response.raise_for_status()
            for block in response.iter_content(MiB):
                f.write(block)

    return upload, download


WAYS = [
    ("(p) MLflow client, h2c proxy", via_mlflow_and_proxy),
    ("(h2) httpx h2c, direct", via_httpx_h2c),
    ("(h1) requests HTTP/1.1, direct", via_requests_http1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=200, help="artifact size in MiB")
    parser.add_argument("--rounds", type=int, default=1, help="times to repeat each way")
    args = parser.parse_args()

    server_cpus = split_cpus("clients")

    work = Path(tempfile.mkdtemp(prefix="bench-large-"))
    src = work / "model.bin"
    with src.open("wb") as f:
        for _ in range(args.mib):
            f.write(os.urandom(MiB))
    size, digest = src.stat().st_size, sha256(src)

    cluster = PostgresCluster.create()
    server = None
    rows: list[Row] = []
    try:
        cluster.create_user(USER, PASSWORD)
        cluster.create_database("bench_large", owner=USER)
        uri = cluster.socket_uri(USER, PASSWORD, "bench_large")
        migrated = run_script(MIGRATE_SH, script_env(MLFLOW_BACKEND_STORE_URI=uri))
        assert migrated.returncode == 0, migrated.stderr
        port = free_port()
        env = script_env(
            MLFLOW_BACKEND_STORE_URI=uri,
            PORT=str(port),
            MLFLOW_ARTIFACTS_DESTINATION=str(work / "artifacts"),
            MLFLOW_IAP_VERIFICATION="off",  # the proxy stands in for Cloud Run, not for IAP
        )
        server = ServerProcess.launch([str(START_SH)], env, port, work / "server.log", cpus=server_cpus)
        server.wait_healthy(timeout=180)
        time.sleep(2)
        idle = server.rss_bytes()
        print(f"server idle RSS {idle / MiB:.0f} MiB; artifact {size / MiB:.0f} MiB")
        for _ in range(args.rounds):
            for way, make in WAYS:
                dst = work / "downloaded" / way.split()[0].strip("()") / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                upload, download = make(server, src, dst)
                for direction, step in [("upload", upload), ("download", download)]:
                    with PeakRss(server) as sampled:
                        step()
                    rows.append(Row(way, direction, size, sampled))
                assert sha256(dst) == digest, f"{way}: the download differs"
                dst.unlink()
    finally:
        if server is not None:
            server.kill()
        cluster.stop()

    print()
    print(f"{'':<34}{'':<10}{'s':>8}{'MiB/s':>9}{'peak RSS':>11}{'CPU s':>10}")
    for row in rows:
        print(row.line())
    print(f"(peak RSS: MiB, the server's process tree; idle {idle / MiB:.0f} MiB. CPU s: the server's, user + system)")


if __name__ == "__main__":
    main()
