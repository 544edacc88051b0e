"""Running docker/start.sh and docker/migrate.sh outside the image, and watching the processes.

Shared by the server tests and `bench/server.py`. The scripts run exactly as in the image, except
that `python` and `mlflow` come from this environment (its bin directory goes first on PATH).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
START_SH = DOCKER_DIR / "start.sh"
MIGRATE_SH = DOCKER_DIR / "migrate.sh"
VENV_BIN = Path(sys.executable).parent


def script_env(**variables: str) -> dict[str, str]:
    """This process's environment without any MLflow or PORT setting of its own, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PORT"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
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
    _known: dict[int, psutil.Process] = field(default_factory=dict)

    @classmethod
    def launch(cls, argv: list[str], env: dict[str, str], port: int, log_path: Path) -> ServerProcess:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(proc=proc, port=port, log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 120) -> float:
        """Seconds until /health answered 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before it was healthy:\n{self.log()[-5000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not healthy after {timeout} s:\n{self.log()[-5000:]}")

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

    def rss_bytes(self) -> int:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def pss_bytes(self) -> int:
        """Proportional set size: shared pages divided among the processes sharing them."""
        total = 0
        for p in self.tree():
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, AttributeError):
                pass
        return total

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
