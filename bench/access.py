"""What teams ([access], docker/iap_access.py) cost a log_metric, measured in CPU time, which a
loaded machine does not inflate the way it inflates wall time:

    python bench/access.py [--requests 300] [--rounds 3] [--clients 1]

Each round starts two fresh processes in turn, each on its own database of one throwaway PostgreSQL
(tests/server/pg.py): the image's ASGI app (docker/mlflow_asgi.py: IAP verification, MLflow) with
[access] off, then on (MLflow's auth app, workspaces, the caller a team member working in its
workspace). Each drives its app directly through ASGI (no sockets, no client threads) with
`--requests` log_metric calls carrying a signed IAP assertion (from `--clients` concurrent callers),
after a warm-up, and reports the process CPU time and the wall time per call. bench/server.py measures the same through uvicorn
with a load generator; this one isolates the server's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.15
"""Most [access] may add to a log_metric's CPU time (bench/server.py's target, in CPU)."""
USER, WORKSPACE = "bench@example.com", "bench"


def child(access: bool, requests: int, clients: int) -> dict[str, float]:
    sys.path[:0] = [str(REPO), str(REPO / "docker")]
    os.chdir(tempfile.mkdtemp(prefix="bench-access-"))  # whatever MLflow writes beside itself stays out of the repo
    from tests.server.iap_signer import AUDIENCE, IapSigner
    from tests.server.pg import PostgresCluster
    from tests.server.proc import MIGRATE_SH, run_script, script_env

    cluster = PostgresCluster.create()
    signer = IapSigner().__enter__()
    try:
        cluster.create_user("bench", "bench-password")
        cluster.create_database("bench", owner="bench")
        uri = cluster.tcp_uri("bench", "bench-password", "bench")
        assert run_script(MIGRATE_SH, script_env(MLFLOW_BACKEND_STORE_URI=uri)).returncode == 0
        os.environ.update(
            MLFLOW_BACKEND_STORE_URI=uri, MLFLOW_IAP_VERIFICATION="on", MLFLOW_IAP_AUDIENCE=AUDIENCE,
            MLFLOW_IAP_TEST_KEYS_URL=signer.keys_url, _MLFLOW_SGI_NAME="uvicorn", MLFLOW_DISABLE_TELEMETRY="true",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE="true",
            # What `mlflow server --serve-artifacts` hands its app (serve.py does the same through MLflow's CLI).
            _MLFLOW_SERVER_FILE_STORE=uri, _MLFLOW_SERVER_ARTIFACT_ROOT="mlflow-artifacts:/", _MLFLOW_SERVER_SERVE_ARTIFACTS="true",
            _MLFLOW_SERVER_ARTIFACT_DESTINATION=tempfile.mkdtemp(prefix="bench-access-"),
        )  # fmt: skip
        headers = signer.headers(USER, lifetime=3600)
        if access:
            model = {"admins": [], "teams": [{"name": "bench", "workspace": WORKSPACE, "members": [f"user:{USER}"]}]}
            os.environ.update(MLFLOW_IAP_ACCESS=json.dumps(model), MLFLOW_AUTH_ADMIN_PASSWORD="bench-bootstrap-admin")
            import iap_access
            import serve

            serve.start_access(iap_access.model_from_environ(), uri)
            headers["X-MLflow-Workspace"] = WORKSPACE
        import mlflow_asgi

        return asyncio.run(drive(mlflow_asgi.app, headers, requests, clients))
    finally:
        signer.__exit__()
        cluster.stop()


async def call(app, headers: dict[str, str], path: str, body: dict) -> tuple[int, bytes]:
    raw = json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("localhost", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), (b"host", b"localhost")],
    }  # fmt: skip
    sent, out = False, []

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message):
        out.append(message)

    await app(scope, receive, send)
    return out[0]["status"], b"".join(m.get("body", b"") for m in out[1:])


async def drive(app, headers: dict[str, str], requests: int, clients: int) -> dict[str, float]:
    api = "/api/2.0/mlflow"
    status, body = await call(app, headers, f"{api}/experiments/create", {"name": "bench"})
    assert status == 200, body
    status, body = await call(app, headers, f"{api}/runs/create", {"experiment_id": json.loads(body)["experiment_id"]})
    run_id = json.loads(body)["run"]["info"]["run_id"]
    for i in range(30):  # warm-up: first sight of the user, the caches filled
        status, body = await call(
            app, headers, f"{api}/runs/log-metric", {"run_id": run_id, "key": "m", "value": i, "timestamp": i + 1}
        )
        assert status == 200, body
    walls: list[float] = []

    async def client(k: int) -> None:
        for i in range(requests // clients):
            started = time.perf_counter()
            body = {"run_id": run_id, "key": f"m{k}", "value": i, "timestamp": i + 1}
            status, answer = await call(app, headers, f"{api}/runs/log-metric", body)
            assert status == 200, answer
            walls.append(time.perf_counter() - started)

    cpu = time.process_time()
    await asyncio.gather(*(client(k) for k in range(clients)))
    requests = len(walls)
    walls.sort()
    return {"cpu_ms": 1000 * (time.process_time() - cpu) / requests, "p95_ms": 1000 * walls[int(0.95 * len(walls))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1, help="concurrent callers (8: bench/server.py's load)")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "on", args.requests, args.clients)))
        return
    results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for round_ in range(1, args.rounds + 1):
        for mode in ("off", "on"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--requests",
                    str(args.requests),
                    "--clients",
                    str(args.clients),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                raise SystemExit(f"[access] {mode}: the measuring process failed:\n{out.stderr[-3000:]}")
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[mode][-1]
            print(
                f"round {round_}, [access] {mode:3}: {r['cpu_ms']:.2f} CPU ms, p95 {r['p95_ms']:.2f} ms per log_metric",
                flush=True,
            )
    cpu = {m: statistics.median(r["cpu_ms"] for r in rs) for m, rs in results.items()}
    p95 = {m: statistics.median(r["p95_ms"] for r in rs) for m, rs in results.items()}
    ratio = cpu["on"] / cpu["off"]
    verdict = "within" if ratio <= 1 + TARGET else "ABOVE"
    print(f"median over {args.rounds} rounds: CPU ms per log_metric off {cpu['off']:.2f}, on {cpu['on']:.2f}, ratio on/off "
          f"{ratio:.2f} ({verdict} the target of at most {TARGET:.0%} more); p95 off {p95['off']:.2f} ms, on {p95['on']:.2f} ms, "
          f"ratio {p95['on'] / p95['off']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
