"""Memory, connections and log_metric throughput: docker/start.sh against stock `mlflow server`.

    python bench/server.py [--clients 8] [--seconds 15]

One throwaway PostgreSQL (as in the tests: tests/server/pg.py), one freshly migrated database per
configuration, each server started in turn:

  (a) docker/start.sh with its defaults (1 worker, pool 2 + overflow 1, no job runner), IAP
      verification off;
  (ai) the same with IAP verification on (every request carries an assertion signed by the local
      stand-in for IAP, tests/server/iap_signer.py; its keys fetched once and cached): the
      "ratio ai/a" column is the cost of verifying and recording who calls;
  (aa) (ai) with teams ([access], docker/iap_access.py): MLflow's auth app decides every request
      for the IAP-verified user, a member of the team whose workspace the load runs in: the
      "ratio aa/ai" column is the cost of MLflow's permissions (target: at most ACCESS_TARGET
      slower, in req/s and p95);
  (a2) (a) with MLFLOW_WORKERS=2;
  (b) `mlflow server` with its defaults (4 uvicorn workers, job execution on, pools of SQLAlchemy's
      defaults 5 + 10), as `mlflow server --backend-store-uri URI --artifacts-destination DIR`.

Each server is pinned to one CPU (Cloud Run's cpu=1), the load generator to the others; servers
connect over TCP so each database connection can be traced to its process. Memory is the sum over
the server's whole process tree: RSS, and PSS (shared pages counted once, nearer to what the
container's memory limit sees). Telemetry is off for all (no internet here).

Cold start is process start to the first answered API call (GET experiments/search, what a client's
first request after idle waits for on Cloud Run with min_instances 0); the ratio (a)/(b) is printed
at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.iap_signer import AUDIENCE, IapSigner
from tests.server.pg import PostgresCluster, free_port
from tests.server.proc import (
    MIGRATE_SH,
    START_SH,
    VENV_BIN,
    ConnectionSampler,
    LoadResult,
    ServerProcess,
    run_load,
    run_script,
    script_env,
    split_cpus,
    tcp_connections_to,
)

USER, PASSWORD = "bench", "b@nch/p%ss"
FIRST_API_CALL = "/api/2.0/mlflow/experiments/search?max_results=1"
COLD_START_TARGET = 0.15
"""Most the cold start of (a) may be, as a fraction of stock `mlflow server`'s (b) in the same run."""
MiB = 2**20
ACCESS_TARGET = 0.15
"""Most (aa) may be slower than (ai) in the same run: req/s at least 1 - this, p95 at most 1 + this."""
BENCH_USER, BENCH_WORKSPACE = "bench@example.com", "bench"
ACCESS_ENV = {
    "MLFLOW_IAP_ACCESS": json.dumps(
        {
            "admins": [],
            "others": "none",
            "teams": [{"name": "bench", "workspace": BENCH_WORKSPACE, "members": [f"user:{BENCH_USER}"]}],
        }
    ),
    "MLFLOW_AUTH_ADMIN_PASSWORD": "bench-bootstrap-admin-password",
}


@dataclass
class Config:
    key: str
    title: str
    stock: bool
    env: dict[str, str]
    iap: bool = False
    access: bool = False


CONFIGS = [
    Config("a", "start.sh defaults", stock=False, env={}),
    Config("ai", "start.sh, IAP verified", stock=False, env={}, iap=True),
    Config("aa", "start.sh, IAP + [access]", stock=False, env=ACCESS_ENV, iap=True, access=True),
    Config("a2", "start.sh MLFLOW_WORKERS=2", stock=False, env={"MLFLOW_WORKERS": "2"}),
    Config("b", "stock mlflow server", stock=True, env={}),
]


@dataclass
class Result:
    config: Config
    first_api_s: float
    processes: int
    idle_rss: int
    idle_pss: int
    idle_db: int
    load_rss: int
    load_pss: int
    load: LoadResult
    db_max_total: int
    db_max_per_worker: int
    db_workers: int
    cpu_s: float
    idle_db_by_process: dict[str, int]


class MemorySampler(threading.Thread):
    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server, self.max_rss, self.max_pss = server, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.max_rss = max(self.max_rss, self.server.rss_bytes())
            self.max_pss = max(self.max_pss, self.server.pss_bytes())
            self.done.wait(0.5)


def wait_settled(server: ServerProcess, quiet: float = 5.0, timeout: float = 90.0) -> None:
    """Until the process tree has not changed for `quiet` seconds (the job runner starts late)."""
    start = last_change = time.monotonic()
    pids = {p.pid for p in server.tree()}
    while time.monotonic() - start < timeout and time.monotonic() - last_change < quiet:
        time.sleep(0.5)
        now = {p.pid for p in server.tree()}
        if now != pids:
            pids, last_change = now, time.monotonic()


def kind(process) -> str:
    cmdline = " ".join(process.cmdline())
    for marker, name in [
        ("mlflow server", "mlflow CLI"),
        ("_job_runner", "job runner"),
        ("huey_consumer", "huey consumer"),
        ("resource_tracker", "resource tracker"),
        ("spawn_main", "uvicorn worker"),
        ("-m uvicorn", "uvicorn"),
    ]:
        if marker in cmdline:
            return name
    return cmdline[:40]


def bench(
    config: Config,
    cluster: PostgresCluster,
    signer: IapSigner,
    clients: int,
    seconds: float,
    server_cpus: set[int] | None,
    round_: int = 1,
) -> Result:
    db = f"bench_{config.key}_{round_}"
    cluster.create_database(db, owner=USER)
    uri = cluster.tcp_uri(USER, PASSWORD, db)
    migrated = run_script(MIGRATE_SH, script_env(MLFLOW_BACKEND_STORE_URI=uri))
    assert migrated.returncode == 0, migrated.stderr

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{config.key}-"))
    if config.stock:
        argv = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", uri, "--port", str(port),
                "--artifacts-destination", str(workdir / "artifacts")]  # fmt: skip
        env = script_env(MLFLOW_DISABLE_TELEMETRY="true")
    else:
        argv = [str(START_SH)]
        iap = {"MLFLOW_IAP_VERIFICATION": "off"}
        if config.iap:
            iap = {
                "MLFLOW_IAP_VERIFICATION": "on",
                "MLFLOW_IAP_AUDIENCE": AUDIENCE,
                "MLFLOW_IAP_TEST_KEYS_URL": signer.keys_url,
            }
        env = script_env(
            MLFLOW_BACKEND_STORE_URI=uri,
            PORT=str(port),
            MLFLOW_ARTIFACTS_DESTINATION=str(workdir / "artifacts"),
            **iap,
            **config.env,
        )
    # Valid for the whole run; the server verifies each request in full whatever the token (it
    # caches IAP's keys, not verdicts), so reusing one costs the server what fresh ones would.
    headers = signer.headers(BENCH_USER, lifetime=3600) if config.iap else {}
    if config.access:
        headers["X-MLflow-Workspace"] = BENCH_WORKSPACE
    server = ServerProcess.launch(argv, env, port, workdir / "server.log", cpus=server_cpus)
    count, close = cluster.connection_counter(db)
    try:
        first_api_s = server.wait_first_answer(FIRST_API_CALL, headers=headers)
        wait_settled(server)
        time.sleep(3)
        idle_rss, idle_pss, processes, idle_db = server.rss_bytes(), server.pss_bytes(), len(server.tree()), count()
        idle_db_by_process: dict[str, int] = {}
        for p in server.tree():
            if n := tcp_connections_to(p, cluster.port):
                idle_db_by_process[kind(p)] = idle_db_by_process.get(kind(p), 0) + n

        api = f"{server.url}/api/2.0/mlflow"
        experiment_id = requests.post(
            f"{api}/experiments/create", json={"name": "bench"}, headers=headers, timeout=30
        ).json()["experiment_id"]
        run = requests.post(
            f"{api}/runs/create", json={"experiment_id": experiment_id}, headers=headers, timeout=30
        ).json()
        run_id = run["run"]["info"]["run_id"]

        def log_metric(session: requests.Session, i: int) -> requests.Response:
            body = {
                "run_id": run_id,
                "key": f"m{i % 10}",
                "value": i * 0.5,
                "timestamp": int(time.time() * 1000),
                "step": i,
            }
            return session.post(f"{api}/runs/log-metric", json=body, headers=headers, timeout=60)

        memory = MemorySampler(server)
        memory.start()
        cpu_before = server.cpu_seconds()
        with ConnectionSampler(server, cluster.port, count) as connections:
            load = run_load(clients, seconds, log_metric)
        cpu_s = server.cpu_seconds() - cpu_before
        memory.done.set()
        memory.join()

        # Database connections per uvicorn worker: the processes that serve requests.
        per_process = connections.max_by_pid
        workers = [p.pid for p in server.tree() if "spawn_main" in " ".join(p.cmdline())] or [server.proc.pid]
        return Result(
            config=config,
            first_api_s=first_api_s,
            processes=processes,
            idle_rss=idle_rss,
            idle_pss=idle_pss,
            idle_db=idle_db,
            load_rss=memory.max_rss,
            load_pss=memory.max_pss,
            load=load,
            db_max_total=connections.max_on_server,
            db_max_per_worker=max(per_process.get(pid, 0) for pid in workers),
            db_workers=len(workers),
            cpu_s=cpu_s,
            idle_db_by_process=idle_db_by_process,
        )
    finally:
        close()
        try:
            server.terminate(timeout=30)
        except TimeoutError:
            pass
        server.kill()


def table(results: list[Result], clients: int, seconds: float) -> str:
    rows = [
        ("processes in tree (idle)", lambda r: r.processes, "{:d}"),
        ("process start to first API answer, s", lambda r: r.first_api_s, "{:.1f}"),
        ("idle RSS, MiB", lambda r: r.idle_rss / MiB, "{:.0f}"),
        ("idle PSS, MiB", lambda r: r.idle_pss / MiB, "{:.0f}"),
        ("RSS under load (max), MiB", lambda r: r.load_rss / MiB, "{:.0f}"),
        ("PSS under load (max), MiB", lambda r: r.load_pss / MiB, "{:.0f}"),
        (f"log_metric req/s, {clients} clients, {seconds:.0f} s", lambda r: r.load.per_second, "{:.0f}"),
        ("latency p50, ms", lambda r: r.load.latency_ms(0.5), "{:.1f}"),
        ("latency p95, ms", lambda r: r.load.latency_ms(0.95), "{:.1f}"),
        ("failed requests", lambda r: sum(r.load.failed.values()), "{:d}"),
        ("server CPU busy under load, % of 1 CPU", lambda r: 100 * r.cpu_s / r.load.seconds, "{:.0f}"),
        ("server CPU ms per log_metric", lambda r: 1000 * r.cpu_s / max(r.load.ok, 1), "{:.1f}"),
        ("DB connections idle", lambda r: r.idle_db, "{:d}"),
        ("DB connections under load (max, all)", lambda r: r.db_max_total, "{:d}"),
        ("DB connections per worker (max)", lambda r: r.db_max_per_worker, "{:d}"),
    ]
    by_key = {r.config.key: r for r in results}
    headers = [f"({r.config.key}) {r.config.title}" for r in results]
    ratios = [(x, "a") for x in ("ai", "b") if x in by_key and "a" in by_key]
    ratios += [("aa", "ai")] if "aa" in by_key and "ai" in by_key else []
    headers += [f"ratio {x}/{y}" for x, y in ratios]
    width = max(len(label) for label, _, _ in rows) + 2
    col = max(14, *(len(h) + 2 for h in headers))
    lines = ["".ljust(width) + "".join(h.rjust(col) for h in headers)]
    for label, get, fmt in rows:
        cells = [fmt.format(get(r)) for r in results]
        for x, y in ratios:
            a, b = get(by_key[y]), get(by_key[x])
            cells.append(f"{b / a:.2f}" if a else "-")
        lines.append(label.ljust(width) + "".join(c.rjust(col) for c in cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument(
        "--only", nargs="*", choices=[c.key for c in CONFIGS], help="configurations to run, in this order"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the configurations this many times in turn (ratios per round: noise)"
    )
    args = parser.parse_args()

    server_cpus = split_cpus("load generator")

    cluster = PostgresCluster.create()
    try:
        cluster.create_user(USER, PASSWORD)
        rounds: list[list[Result]] = []
        with IapSigner() as signer:
            by_key = {c.key: c for c in CONFIGS}
            for round_ in range(1, args.rounds + 1):
                rounds.append([])
                for config in [by_key[k] for k in args.only] if args.only else CONFIGS:
                    print(f"round {round_}: running ({config.key}) {config.title} ...", flush=True)
                    rounds[-1].append(bench(config, cluster, signer, args.clients, args.seconds, server_cpus, round_))
            print(f"IAP key set fetched {signer.fetches} time(s) (once per server with verification on)")
    finally:
        cluster.stop()
    for round_, results in enumerate(rounds, 1):
        print(f"\nround {round_}")
        print(table(results, args.clients, args.seconds))
    results = rounds[-1]
    for r in results:
        held = ", ".join(f"{name} {n}" for name, n in r.idle_db_by_process.items()) or "none"
        print(f"({r.config.key}) idle DB connections held by: {held}")
    by_key = {r.config.key: r for r in results}
    if "a" in by_key and "b" in by_key:
        a, b = by_key["a"].first_api_s, by_key["b"].first_api_s
        verdict = "within" if a / b <= COLD_START_TARGET else "ABOVE"
        print(f"cold start, process start to first API answer: (a) {a:.1f} s, (b) {b:.1f} s, "
              f"ratio a/b {a / b:.2f} ({verdict} the target of {COLD_START_TARGET:.2f})")  # fmt: skip
    if "aa" in by_key and "ai" in by_key:
        on, off = by_key["aa"].load, by_key["ai"].load
        throughput, p95 = on.per_second / off.per_second, on.latency_ms(0.95) / off.latency_ms(0.95)
        verdict = "within" if throughput >= 1 - ACCESS_TARGET and p95 <= 1 + ACCESS_TARGET else "OUTSIDE"
        print(f"[access] on/off, log_metric: req/s ratio {throughput:.2f}, p95 ratio {p95:.2f} ({verdict} the target "
              f"of at most {ACCESS_TARGET:.0%} slower)")  # fmt: skip
    for r in results:
        if r.load.failed:
            print(f"({r.config.key}) failures: {dict(r.load.failed)}")


if __name__ == "__main__":
    main()
