"""Running docker/start.sh and docker/migrate.sh outside the image, and watching the processes.

Shared by the server tests and `bench/server.py`. The scripts run exactly as in the image, except
that `python` and `mlflow` come from this environment (its bin directory goes first on PATH).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
START_SH = DOCKER_DIR / "start.sh"
MIGRATE_SH = DOCKER_DIR / "migrate.sh"
VENV_BIN = Path(sys.executable).parent


GATEWAY_KEY = secrets.token_urlsafe(48)
"""The AI gateway's passphrase every script gets, as Terraform gives every deployment its own (start.sh
refuses to serve the gateway without one)."""


def image_module(name: str) -> Any:
    """A module of docker/, imported as the image runs it: beside its neighbours (docker/ on the
    path while it and what it imports load), not as part of the tests' package."""
    sys.path.insert(0, str(DOCKER_DIR))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(DOCKER_DIR))


def script_env(**variables: str) -> dict[str, str]:
    """This process's environment without any MLflow or PORT setting of its own, plus the gateway's
    key and `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PORT"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_CRYPTO_KEK_PASSPHRASE"] = GATEWAY_KEY
    env.update(variables)
    return env


def run_script(script: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class ServerProcess:
    """A server started in its own session, so that whatever it leaves behind can be killed."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    launched_at: float = field(default_factory=time.monotonic)
    """time.monotonic() just before the process was started."""
    _known: dict[int, psutil.Process] = field(default_factory=dict)

    @classmethod
    def launch(
        cls, argv: list[str], env: dict[str, str], port: int, log_path: Path, cpus: set[int] | None = None
    ) -> ServerProcess:
        """`cpus`: the CPUs the server (and every process it starts) may run on."""

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        with log_path.open("wb") as log:
            launched_at = time.monotonic()
            proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pin
            )
        return cls(proc=proc, port=port, log_path=log_path, launched_at=launched_at)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 120) -> float:
        """Seconds until /health answered 200."""
        start = time.monotonic()
        if self._poll_until_200("/health", start, timeout, interval=0.2, headers=None):
            return time.monotonic() - start
        raise TimeoutError(f"server not healthy after {timeout} s:\n{self.log()[-5000:]}")

    def wait_first_answer(self, path: str, timeout: float = 180, headers: dict[str, str] | None = None) -> float:
        """Seconds from the process's start until GET `path` first answered 200 (polled every 50 ms);
        `headers`: what every request carries (IAP's signed assertion behind verification)."""
        if self._poll_until_200(path, self.launched_at, timeout, interval=0.05, headers=headers):
            return time.monotonic() - self.launched_at
        raise TimeoutError(f"{path} not answered {timeout} s after the start:\n{self.log()[-5000:]}")

    def _poll_until_200(
        self, path: str, since: float, timeout: float, interval: float, headers: dict[str, str] | None
    ) -> bool:
        """GET `path` until it answers 200 (True) or `timeout` s have passed since `since` (False);
        RuntimeError if the server exits meanwhile."""
        while time.monotonic() - since < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before answering:\n{self.log()[-5000:]}")
            try:
                if requests.get(f"{self.url}{path}", headers=headers, timeout=2).status_code == 200:
                    return True
            except (requests.ConnectionError, requests.Timeout):
                # A server still starting may accept the connection and answer late (stock
                # `mlflow server` on a loaded machine): ask again, until `timeout`.
                pass
            time.sleep(interval)
        return False

    def tree(self) -> list[psutil.Process]:
        """The server's process and all its descendants that are running now."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            self._known.setdefault(p.pid, p)
        return procs

    def _tree_sum(self, measure: Callable[[psutil.Process], float]) -> float:
        """`measure` summed over the tree; a process that exits meanwhile counts as nothing."""
        total = 0.0
        for p in self.tree():
            try:
                total += measure(p)
            except (psutil.NoSuchProcess, AttributeError):
                pass
        return total

    def rss_bytes(self) -> int:
        return int(self._tree_sum(lambda p: p.memory_info().rss))

    def pss_bytes(self) -> int:
        """Proportional set size: shared pages divided among the processes sharing them."""
        return int(self._tree_sum(lambda p: p.memory_full_info().pss))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the tree's running processes."""
        return self._tree_sum(lambda p: sum(p.cpu_times()[:2]))

    def alive(self) -> list[psutil.Process]:
        """Every process of the tree seen so far that still runs (zombies count as gone)."""
        self.tree()
        running = []
        for p in self._known.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    running.append(p)
            except psutil.NoSuchProcess:
                pass
        return running

    def terminate(self, timeout: float = 10) -> float:
        """SIGTERM to the server's own process only (as Cloud Run does); seconds until the whole
        tree had exited. Raises TimeoutError (after killing what is left) if it took longer."""
        self.tree()
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        while time.monotonic() - start < timeout:
            self.proc.poll()
            if not self.alive():
                return time.monotonic() - start
            time.sleep(0.05)
        left = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in self.alive()]
        self.kill()
        raise TimeoutError(f"still running {timeout} s after SIGTERM: {left}")

    def kill(self) -> None:
        """Cleanup: SIGKILL the whole session and every known descendant."""
        self.tree()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in self._known.values():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def tcp_connections_to(process: psutil.Process, port: int) -> int:
    """How many TCP connections `process` has open to 127.0.0.1:`port` (a database, here)."""
    try:
        return sum(
            1
            for c in process.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        )
    except psutil.NoSuchProcess:
        return 0


class ConnectionSampler:
    """Samples, in a background thread, the database connections of a server's processes (their
    own TCP sockets to the database port) and the total the database reports (`count_on_server`,
    e.g. a pg_stat_activity query). Keeps the maximum of each."""

    def __init__(self, server: ServerProcess, db_port: int, count_on_server, interval: float = 0.05) -> None:
        self.server = server
        self.db_port = db_port
        self.count_on_server = count_on_server
        self.interval = interval
        self.max_by_pid: dict[int, int] = {}
        self.max_total_sockets = 0
        self.max_on_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            counts = {p.pid: tcp_connections_to(p, self.db_port) for p in self.server.tree()}
            for pid, n in counts.items():
                self.max_by_pid[pid] = max(self.max_by_pid.get(pid, 0), n)
            self.max_total_sockets = max(self.max_total_sockets, sum(counts.values()))
            self.max_on_server = max(self.max_on_server, self.count_on_server())
            self._stop.wait(self.interval)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class LoadResult:
    ok: int
    failed: Counter[str]
    seconds: float
    latencies: list[float]
    """Of the successful requests, in seconds."""

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds

    def latency_ms(self, quantile: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] if ordered else float("nan")


def log_metric_body(run_id: str, i: int) -> dict[str, object]:
    """The i-th metric a load generator logs: ten keys in turn, each step once."""
    return {"run_id": run_id, "key": f"m{i % 10}", "value": i * 0.5, "timestamp": int(time.time() * 1000), "step": i}


def run_load(clients: int, seconds: float, request: Callable[[requests.Session, int], requests.Response]) -> LoadResult:
    """`clients` threads, each with its own HTTP session, call `request(session, i)` back to back
    for `seconds`; a response other than 200 (or an exception) counts as failed."""
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failed: Counter[str] = Counter()
    lock = threading.Lock()

    def client(index: int) -> None:
        with requests.Session() as session:
            i = 0
            while (sent := time.monotonic()) < deadline:
                try:
                    status = str(request(session, i).status_code)
                except requests.RequestException as e:
                    status = type(e).__name__
                if status == "200":
                    latencies[index].append(time.monotonic() - sent)
                else:
                    with lock:
                        failed[status] += 1
                i += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [latency for per_client in latencies for latency in per_client]
    return LoadResult(ok=len(done), failed=failed, seconds=time.monotonic() - start, latencies=done)


class PeakRss:
    """Over a `with` block: the server tree's peak RSS (sampled in a thread), wall seconds and CPU seconds."""

    def __init__(self, server: ServerProcess, interval: float = 0.02) -> None:
        self.server, self.interval = server, interval
        self.peak = self.samples = 0
        self.seconds = self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._cpu0, self.started = self.server.cpu_seconds(), time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.server.rss_bytes())
        self.cpu = self.server.cpu_seconds() - self._cpu0


def split_cpus(load: str = "clients") -> set[int] | None:
    """Keep the first CPU for the server and move this process (the load) to the others."""
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = {cpus[0]} if len(cpus) > 1 else None
    if server_cpus:
        os.sched_setaffinity(0, set(cpus[1:]))
    where = sorted(server_cpus) if server_cpus else "all (only one)"
    print(f"CPUs: server on {where}, {load} on {sorted(os.sched_getaffinity(0))}")
    return server_cpus


def sha256(path: Path) -> str:
    """Hex digest of a file, read in 8 MiB blocks (artifacts here are up to hundreds of MiB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()
