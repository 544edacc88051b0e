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
      slower, in req/s and p95). When both are chosen, (ai) and (aa) run as a pair: both servers
      up at once on the same CPU, the load alternating between them in 3 s slices, so a loaded
      machine slows both alike (`--seconds 60 --rounds 3` for a verdict; rounds are also pooled);
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
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
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
    log_metric_body,
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
PAIR = ("ai", "aa")
"""Run as a pair (`paired`): the [access] verdict compares them, and a loaded machine moves a
comparison of servers run one after the other by more than the target."""
PAIR_SLICE_SECONDS = 3.0
PAIR_WARM_UP_SECONDS = 2.0
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

    @classmethod
    def of(
        cls, running: Running, memory: MemorySampler, load: LoadResult, cpu_s: float, db: tuple[int, int, int]
    ) -> Result:
        """`db`: most connections under load, in all and per worker, and how many workers."""
        return cls(
            config=running.config,
            first_api_s=running.first_api_s,
            processes=running.idle.processes,
            idle_rss=running.idle.rss,
            idle_pss=running.idle.pss,
            idle_db=running.idle.db,
            load_rss=memory.max_rss,
            load_pss=memory.max_pss,
            load=load,
            db_max_total=db[0],
            db_max_per_worker=db[1],
            db_workers=db[2],
            cpu_s=cpu_s,
            idle_db_by_process=running.idle.db_by_process,
        )


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


@dataclass
class Idle:
    """The server settled, before its first experiment."""

    rss: int
    pss: int
    processes: int
    db: int
    db_by_process: dict[str, int]

    @classmethod
    def measure(cls, server: ServerProcess, count: Callable[[], int], db_port: int) -> Idle:
        by_process: dict[str, int] = {}
        for p in server.tree():
            if n := tcp_connections_to(p, db_port):
                by_process[kind(p)] = by_process.get(kind(p), 0) + n
        return cls(server.rss_bytes(), server.pss_bytes(), len(server.tree()), count(), by_process)


@dataclass
class Running:
    """A started server of one configuration, its database migrated and a run to log metrics to."""

    config: Config
    server: ServerProcess
    count: Callable[[], int]
    headers: dict[str, str]
    first_api_s: float
    idle: Idle
    run_id: str = ""

    def log_metric(self, session: requests.Session, i: int) -> requests.Response:
        body = log_metric_body(self.run_id, i)
        return session.post(
            f"{self.server.url}/api/2.0/mlflow/runs/log-metric", json=body, headers=self.headers, timeout=60
        )

    def load(self, clients: int, seconds: float) -> tuple[LoadResult, float]:
        """`clients` callers of log_metric for `seconds`: what they got, and the server's CPU seconds."""
        cpu_before = self.server.cpu_seconds()
        result = run_load(clients, seconds, self.log_metric)
        return result, self.server.cpu_seconds() - cpu_before


def server_argv_env(
    config: Config, uri: str, port: int, workdir: Path, signer: IapSigner
) -> tuple[list[str], dict[str, str]]:
    if config.stock:
        argv = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", uri, "--port", str(port),
                "--artifacts-destination", str(workdir / "artifacts")]  # fmt: skip
        return argv, script_env(MLFLOW_DISABLE_TELEMETRY="true")
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
    return [str(START_SH)], env


@contextlib.contextmanager
def started(
    config: Config, cluster: PostgresCluster, signer: IapSigner, server_cpus: set[int] | None, round_: int = 1
) -> Iterator[Running]:
    """The configuration's server on a freshly migrated database, answering, settled, with a run."""
    db = f"bench_{config.key}_{round_}"
    cluster.create_database(db, owner=USER)
    uri = cluster.tcp_uri(USER, PASSWORD, db)
    migrated = run_script(MIGRATE_SH, script_env(MLFLOW_BACKEND_STORE_URI=uri))
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{config.key}-"))
    argv, env = server_argv_env(config, uri, port, workdir, signer)
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
        running = Running(config, server, count, headers, first_api_s, Idle.measure(server, count, cluster.port))
        api = f"{server.url}/api/2.0/mlflow"
        experiment = requests.post(f"{api}/experiments/create", json={"name": "bench"}, headers=headers, timeout=30)
        run = requests.post(
            f"{api}/runs/create",
            json={"experiment_id": experiment.json()["experiment_id"]},
            headers=headers,
            timeout=30,
        )
        running.run_id = run.json()["run"]["info"]["run_id"]
        yield running
    finally:
        close()
        try:
            server.terminate(timeout=30)
        except TimeoutError:
            pass
        server.kill()


def bench(
    config: Config,
    cluster: PostgresCluster,
    signer: IapSigner,
    clients: int,
    seconds: float,
    server_cpus: set[int] | None,
    round_: int = 1,
) -> Result:
    with started(config, cluster, signer, server_cpus, round_) as running:
        server = running.server
        memory = MemorySampler(server)
        memory.start()
        with ConnectionSampler(server, cluster.port, running.count) as connections:
            load, cpu_s = running.load(clients, seconds)
        memory.done.set()
        memory.join()
        return Result.of(running, memory, load, cpu_s, db_use(server, connections))


def db_use(server: ServerProcess, connections: ConnectionSampler) -> tuple[int, int, int]:
    """Most database connections under load, in all and per uvicorn worker (the processes that serve
    requests), and how many workers."""
    workers = [p.pid for p in server.tree() if "spawn_main" in " ".join(p.cmdline())] or [server.proc.pid]
    per_worker = max(connections.max_by_pid.get(pid, 0) for pid in workers)
    return connections.max_on_server, per_worker, len(workers)


def merged(loads: list[LoadResult]) -> LoadResult:
    failed: Counter[str] = Counter()
    for load in loads:
        failed.update(load.failed)
    return LoadResult(
        ok=sum(x.ok for x in loads),
        failed=failed,
        seconds=sum(x.seconds for x in loads),
        latencies=[latency for x in loads for latency in x.latencies],
    )


def paired(
    pair: tuple[Config, Config],
    cluster: PostgresCluster,
    signer: IapSigner,
    clients: int,
    seconds: float,
    server_cpus: set[int] | None,
    round_: int = 1,
) -> tuple[list[Result], list[float]]:
    """Both servers up at once on the same CPU, the load alternating between them in slices of about
    PAIR_SLICE_SECONDS (A B B A A B ...), after a warm-up of each: whatever else the machine does
    falls on both alike. Also the req/s ratio of each pair of slices, the spread the noise leaves."""
    slices = max(2, round(seconds / PAIR_SLICE_SECONDS))
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(started(c, cluster, signer, server_cpus, round_)) for c in pair]
        for running in servers:
            running.load(clients, PAIR_WARM_UP_SECONDS)
        memories = [MemorySampler(r.server) for r in servers]
        connections = [stack.enter_context(ConnectionSampler(r.server, cluster.port, r.count)) for r in servers]
        for memory in memories:
            memory.start()
        loads: list[list[tuple[LoadResult, float]]] = [[], []]
        for k in range(slices):
            for i in (0, 1) if k % 2 == 0 else (1, 0):
                loads[i].append(servers[i].load(clients, seconds / slices))
        for memory in memories:
            memory.done.set()
            memory.join()
        spread = [b[0].per_second / a[0].per_second for a, b in zip(loads[0], loads[1], strict=True)]
        results = []
        for running, memory, sampled, load in zip(servers, memories, connections, loads, strict=True):
            db = db_use(running.server, sampled)
            results.append(Result.of(running, memory, merged([x for x, _ in load]), sum(c for _, c in load), db))
        return results, spread


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


def run_rounds(args: argparse.Namespace, cluster: PostgresCluster, signer: IapSigner) -> list[list[Result]]:
    """Each round runs the chosen configurations in order; ai and aa, when both are chosen, as a pair."""
    server_cpus = split_cpus("load generator")
    by_key = {c.key: c for c in CONFIGS}
    keys = list(args.only or by_key)
    as_pair = set(PAIR) <= set(keys)
    rounds: list[list[Result]] = []
    for round_ in range(1, args.rounds + 1):
        rounds.append([])
        for key in keys:
            if as_pair and key in PAIR:
                if key != next(k for k in keys if k in PAIR):
                    continue  # ran with the other, at its place in the order
                print(f"round {round_}: running ({PAIR[0]}) and ({PAIR[1]}) as a pair ...", flush=True)
                results, spread = paired(
                    (by_key[PAIR[0]], by_key[PAIR[1]]), cluster, signer, args.clients, args.seconds, server_cpus, round_
                )
                rounds[-1].extend(results)
                print(f"round {round_}: req/s ratio {PAIR[1]}/{PAIR[0]} per pair of slices: "
                      + " ".join(f"{x:.2f}" for x in spread), flush=True)  # fmt: skip
                continue
            print(f"round {round_}: running ({key}) {by_key[key].title} ...", flush=True)
            rounds[-1].append(bench(by_key[key], cluster, signer, args.clients, args.seconds, server_cpus, round_))
    return rounds


def access_verdict(label: str, on: LoadResult, off: LoadResult) -> str:
    throughput, p95 = on.per_second / off.per_second, on.latency_ms(0.95) / off.latency_ms(0.95)
    verdict = "within" if throughput >= 1 - ACCESS_TARGET and p95 <= 1 + ACCESS_TARGET else "OUTSIDE"
    return (f"[access] on/off, log_metric, {label}: req/s ratio {throughput:.2f}, p95 ratio {p95:.2f} "
            f"({verdict} the target of at most {ACCESS_TARGET:.0%} slower)")  # fmt: skip


def report(rounds: list[list[Result]], clients: int, seconds: float) -> None:
    for round_, results in enumerate(rounds, 1):
        print(f"\nround {round_}")
        print(table(results, clients, seconds))
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
    pairs = [{r.config.key: r.load for r in results if r.config.key in PAIR} for results in rounds]
    pairs = [p for p in pairs if len(p) == 2]
    for round_, pair in enumerate(pairs, 1):
        print(access_verdict(f"round {round_}", pair["aa"], pair["ai"]))
    if len(pairs) > 1:
        pooled = {key: merged([p[key] for p in pairs]) for key in PAIR}
        print(access_verdict(f"all {len(pairs)} rounds pooled", pooled["aa"], pooled["ai"]))
    for r in results:
        if r.load.failed:
            print(f"({r.config.key}) failures: {dict(r.load.failed)}")


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
    cluster = PostgresCluster.create()
    try:
        cluster.create_user(USER, PASSWORD)
        with IapSigner() as signer:
            rounds = run_rounds(args, cluster, signer)
            print(f"IAP key set fetched {signer.fetches} time(s) (once per server with verification on)")
    finally:
        cluster.stop()
    report(rounds, args.clients, args.seconds)


if __name__ == "__main__":
    main()
