"""Memory under hostile requests, and what the identity rules cost: docker/ against main's docker/.

    python bench/identity_memory.py [--seconds 8] [--rounds 4] [--body-mib 300] [--artifact-mib 400]

One throwaway PostgreSQL (tests/server/pg.py); two start.sh servers with IAP verification on, each
on its own migrated database, both pinned to the same CPU (Cloud Run's cpu=1) and measured in turn:
  new: this tree's docker/;
  old: `git archive BASELINE docker`, by default 39a7696 (main before issue 26's route rules), the baseline.

1. log_metric throughput (requests per second, --clients threads back to back), old and new
   alternating for --rounds rounds; the ratio new/old must be at least 0.90. The server's CPU per
   request is printed beside it (steadier than throughput when others share the machine).
2. RSS growth of the server for one --body-mib JSON body to runs/search (not an artifact route):
   HTTP/1.1 with Content-Length, HTTP/1.1 chunked and h2c without a length (counted as it comes).
3. RSS growth while 3 readers that stop reading hold a --artifact-mib artifact, on the Flask
   bridge's /get-artifact and on the FastAPI artifact route (HTTP/1.1 sockets that read 64 KiB, then
   nothing, for 10 s).
Each growth must stay under 64 MiB on the new server; the old server's numbers are what the issue
reported. Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.server.iap_signer import AUDIENCE, IapSigner  # noqa: E402
from tests.server.pg import PostgresCluster, free_port  # noqa: E402
from tests.server.proc import PeakRss, ServerProcess, log_metric_body, run_load, run_script, script_env, split_cpus  # noqa: E402

USER, PASSWORD = "bench", "b@nch/p%ss"
MiB = 2**20
GROWTH_LIMIT = 64 * MiB
THROUGHPUT_FLOOR = 0.90


BASELINE = "39a7696"
"""main before issue 26: the request path without route rules."""


def baseline_docker(workdir: Path, baseline: str) -> Path:
    """The baseline's docker/ directory, unpacked: the old code, run the same way."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", baseline, "docker"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    return workdir / "docker"


def launch(
    cluster: PostgresCluster, docker: Path, name: str, signer: IapSigner, cpus: set[int] | None, workdir: Path
) -> tuple[ServerProcess, Path]:
    cluster.create_database(name, owner=USER)
    uri = cluster.tcp_uri(USER, PASSWORD, name)
    migrated = run_script(docker / "migrate.sh", script_env(MLFLOW_BACKEND_STORE_URI=uri))
    assert migrated.returncode == 0, migrated.stderr
    port, artifacts = free_port(), workdir / f"artifacts-{name}"
    env = script_env(
        MLFLOW_BACKEND_STORE_URI=uri,
        PORT=str(port),
        MLFLOW_ARTIFACTS_DESTINATION=str(artifacts),
        MLFLOW_IAP_VERIFICATION="on",
        MLFLOW_IAP_AUDIENCE=AUDIENCE,
        MLFLOW_IAP_TEST_KEYS_URL=signer.keys_url,
    )
    server = ServerProcess.launch([str(docker / "start.sh")], env, port, workdir / f"{name}.log", cpus=cpus)
    server.wait_healthy(timeout=300)
    return server, artifacts


class Target:
    def __init__(self, label: str, server: ServerProcess, artifacts: Path, headers: dict[str, str]) -> None:
        self.label, self.server, self.artifacts, self.headers = label, server, artifacts, headers
        api = f"{server.url}/api/2.0/mlflow"
        self.api = api
        experiment = requests.post(
            f"{api}/experiments/create", json={"name": "bench"}, headers=headers, timeout=60
        ).json()
        run = requests.post(
            f"{api}/runs/create", json={"experiment_id": experiment["experiment_id"]}, headers=headers, timeout=60
        )
        info = run.json()["run"]["info"]
        self.run_id, self.artifact_uri = info["run_id"], info["artifact_uri"]

    def log_metric(self, session: requests.Session, i: int) -> requests.Response:
        body = log_metric_body(self.run_id, i)
        return session.post(f"{self.api}/runs/log-metric", json=body, headers=self.headers, timeout=60)

    def artifact_file(self, name: str) -> Path:
        relative = self.artifact_uri.removeprefix("mlflow-artifacts:/").lstrip("/")
        path = self.artifacts / relative / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


# --- 1. throughput ---------------------------------------------------------------------------------


def throughput(targets: list[Target], clients: int, seconds: float, rounds: int) -> dict[str, tuple[float, float]]:
    """Per server: (log_metric/s, server CPU ms per request), summed over the rounds. The CPU cost is
    the steadier of the two on a machine others share (it does not count time spent waiting)."""
    ok = {t.label: 0 for t in targets}
    spent = {t.label: 0.0 for t in targets}
    cpu = {t.label: 0.0 for t in targets}
    for round_ in range(rounds):
        for target in targets if round_ % 2 == 0 else reversed(targets):
            cpu_before = target.server.cpu_seconds()
            result = run_load(clients, seconds, target.log_metric)
            cpu[target.label] += target.server.cpu_seconds() - cpu_before
            ok[target.label] += result.ok
            spent[target.label] += result.seconds
            failed = f", failed {dict(result.failed)}" if result.failed else ""
            print(f"  round {round_ + 1} {target.label}: {result.per_second:8.1f} log_metric/s{failed}", flush=True)
    return {label: (ok[label] / spent[label], 1000 * cpu[label] / max(ok[label], 1)) for label in ok}


# --- 2. one large body -------------------------------------------------------------------------------


def body_chunks(mib: int) -> Iterator[bytes]:
    """A JSON body of `mib` MiB: runs/search with a field of spaces it ignores."""
    yield b'{"experiment_ids": ["0"], "padding": "'
    block = b" " * MiB
    for _ in range(mib):
        yield block
    yield b'"}'


def send_large_body(target: Target, way: str, mib: int) -> str:
    url = f"{target.api}/runs/search"
    headers = {**target.headers, "Content-Type": "application/json"}
    try:
        if way == "http1 content-length":
            body = b"".join(body_chunks(mib))
            response = requests.post(url, data=body, headers=headers, timeout=600)
            del body
            return f"{response.status_code}"
        with httpx.Client(http1=way.startswith("http1"), http2=way.startswith("h2c"), timeout=600) as client:
            return f"{client.post(url, content=body_chunks(mib), headers=headers).status_code}"
    except (requests.RequestException, httpx.HTTPError) as e:
        return f"connection closed ({type(e).__name__})"


# --- 3. stalled readers -----------------------------------------------------------------------------


def stalled_reader(target: Target, path: str) -> socket.socket:
    """An HTTP/1.1 GET that reads 64 KiB of the answer, then nothing (its receive buffer kept small)."""
    sock = socket.create_connection(("127.0.0.1", target.server.port), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    headers = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    received = 0
    while received < 64 * 1024:
        data = sock.recv(65536)
        if not data:
            break
        received += len(data)
    return sock


def readers_growth(target: Target, route: str, name: str, stall_seconds: float) -> tuple[int, str]:
    if route == "/get-artifact":
        path = f"/get-artifact?path={name}&run_id={target.run_id}"
    else:
        relative = target.artifact_uri.removeprefix("mlflow-artifacts:/").lstrip("/")
        path = f"/api/2.0/mlflow-artifacts/artifacts/{relative}/{name}"
    warm = requests.get(f"{target.server.url}{path.replace(name, 'small.bin')}", headers=target.headers, timeout=60)
    time.sleep(1)
    before = target.server.rss_bytes()
    with PeakRss(target.server, interval=0.05) as peak:
        readers = [stalled_reader(target, path) for _ in range(3)]
        time.sleep(stall_seconds)
    for reader in readers:
        reader.close()
    time.sleep(1)
    return peak.peak - before, f"warm-up {warm.status_code}"


def measure(target: Target, args: argparse.Namespace, rows: list[tuple[str, str, int, str]]) -> None:
    for way in ["http1 content-length", "http1 chunked", "h2c no length"]:
        before = target.server.rss_bytes()
        with PeakRss(target.server, interval=0.05) as peak:
            answer = send_large_body(target, way, args.body_mib)
        rows.append((target.label, f"{args.body_mib} MiB body to runs/search, {way}", peak.peak - before, answer))
        print(f"  {rows[-1]}", flush=True)
    big = target.artifact_file("big.bin")
    with big.open("wb") as f:
        f.truncate(args.artifact_mib * MiB)
    target.artifact_file("small.bin").write_bytes(b"x" * 1024)
    for route in ["/get-artifact", "mlflow-artifacts"]:
        growth, note = readers_growth(target, route, "big.bin", args.stall_seconds)
        rows.append((target.label, f"3 stalled readers of {args.artifact_mib} MiB, {route}", growth, note))
        print(f"  {rows[-1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="the commit whose docker/ is the old server")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--body-mib", type=int, default=300)
    parser.add_argument("--artifact-mib", type=int, default=400)
    parser.add_argument("--stall-seconds", type=float, default=10.0)
    args = parser.parse_args()

    cpus = split_cpus("load generator")
    workdir = Path(tempfile.mkdtemp(prefix="bench-identity-"))
    cluster = PostgresCluster.create()
    servers: list[ServerProcess] = []
    try:
        cluster.create_user(USER, PASSWORD)
        with IapSigner() as signer:
            headers = signer.headers("bench@example.com", lifetime=3600)
            targets = []
            for label, docker in [("old", baseline_docker(workdir, args.baseline)), ("new", REPO / "docker")]:
                server, artifacts = launch(cluster, docker, f"bench_{label}", signer, cpus, workdir)
                servers.append(server)
                targets.append(Target(label, server, artifacts, headers))
            print(f"log_metric, {args.clients} clients, {args.seconds:.0f} s x {args.rounds} rounds each, alternating:")
            rates = throughput(targets, args.clients, args.seconds, args.rounds)
            ratio = rates["new"][0] / rates["old"][0]
            print(
                f"log_metric/s old {rates['old'][0]:.1f}, new {rates['new'][0]:.1f}: ratio new/old {ratio:.3f} "
                f"(floor {THROUGHPUT_FLOOR}); server CPU per request old {rates['old'][1]:.2f} ms, "
                f"new {rates['new'][1]:.2f} ms: ratio {rates['new'][1] / rates['old'][1]:.3f}"
            )
            rows: list[tuple[str, str, int, str]] = []
            for target in reversed(targets):
                print(f"memory, {target.label}:", flush=True)
                measure(target, args, rows)
        print(f"\n{'server':<7}{'case':<58}{'RSS growth MiB':>15}  answer")
        for label, case, growth, answer in rows:
            print(f"{label:<7}{case:<58}{growth / MiB:>15.1f}  {answer}")
        missed = [
            f"{case}: {growth / MiB:.0f} MiB"
            for label, case, growth, _ in rows
            if label == "new" and growth >= GROWTH_LIMIT
        ]
        if ratio < THROUGHPUT_FLOOR:
            missed.append(f"log_metric throughput ratio {ratio:.3f} < {THROUGHPUT_FLOOR}")
        print(
            "\ntargets met (new: every growth < 64 MiB, throughput >= 0.90 of old)"
            if not missed
            else f"\nMISSED: {missed}"
        )
        sys.exit(1 if missed else 0)
    finally:
        for server in servers:
            server.kill()
        cluster.stop()


if __name__ == "__main__":
    main()
