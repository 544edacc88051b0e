"""A throwaway PostgreSQL cluster shaped like Cloud SQL as Cloud Run sees it.

Shared by the server tests (`tests/server/conftest.py`) and the benchmark (`bench/server.py`).

The cluster listens on 127.0.0.1 (a free port) and on a unix socket in a directory whose path ends
in `cloudsql/PROJECT:REGION:INSTANCE`, which is where Cloud Run's Cloud SQL volume puts the
instance's socket (`/cloudsql/PROJECT:REGION:INSTANCE`). Application users log in with a password
(scram-sha-256) on both; the `postgres` superuser is trusted, for setup and inspection only.

Postgres refuses to run as root, so when the tests run as root every server binary runs as the
`postgres` system user (`runuser`), and the cluster's directory belongs to that user.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2

CLOUDSQL_INSTANCE = "example-project:europe-west1:mlflow-db"
"""The Cloud SQL connection name the socket directory is named after."""

INITDB_GLOB = "/usr/lib/postgresql/*/bin/initdb"


class PostgresNotInstalled(RuntimeError):
    pass


def find_postgres_bindir() -> Path:
    """The bin directory of the newest PostgreSQL server installed the Debian way, else `initdb` on PATH."""
    found = glob.glob(INITDB_GLOB)
    if not found:
        on_path = shutil.which("initdb")
        if on_path:
            return Path(on_path).parent
        raise PostgresNotInstalled(
            f"No PostgreSQL server binaries (nothing matches {INITDB_GLOB}, no initdb on PATH): "
            "install them with `sudo apt-get install postgresql` (Debian/Ubuntu) or "
            "`brew install postgresql@16` (macOS), then re-run; ./scripts/setup.sh does it where it can."
        )

    def major(path: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", path)
        return int(m.group(1)) if m else -1

    return Path(max(found, key=major)).parent


FIRST_PORT, PORTS_PER_WORKER = 20_000, 1_000
"""Ports handed out lie below the kernel's ephemeral range (32768 and up), which outgoing connections
draw from, and each pytest-xdist worker has its own block: a port chosen here and bound a few seconds
later by a server cannot meanwhile be taken by another worker's server or by some client socket."""
_next_port = itertools.count(random.randrange(PORTS_PER_WORKER))


def free_port() -> int:
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    block = FIRST_PORT + worker % 12 * PORTS_PER_WORKER
    for _ in range(PORTS_PER_WORKER):
        port = block + next(_next_port) % PORTS_PER_WORKER
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use: another run's, or a server of this worker still stopping
            return port
    raise RuntimeError(f"no free port in {block}-{block + PORTS_PER_WORKER - 1}")


def url_password(password: str) -> str:
    """A password as it must appear in a database URL: every reserved character escaped."""
    return quote(password, safe="")


@dataclass
class PostgresCluster:
    base: Path
    bindir: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        return self.base / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """Ends in `cloudsql/example-project:europe-west1:mlflow-db`, like `/cloudsql/...` on Cloud Run."""
        return self.base / "cloudsql" / CLOUDSQL_INSTANCE

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls) -> PostgresCluster:
        """initdb and start a new cluster; `stop()` removes it again."""
        bindir = find_postgres_bindir()
        # A short base keeps the socket path (base + cloudsql/... + .s.PGSQL.PORT) far below the
        # ~107 bytes a unix socket path may have.
        base = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
        cluster = cls(base=base, bindir=bindir, port=free_port())
        try:
            cluster._init()
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *argv: str) -> None:
        cmd = [*self._as_owner(), *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{log}")

    def _init(self) -> None:
        self.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for path in [self.base, self.base / "cloudsql", self.socket_dir]:
                os.chown(path, pg.pw_uid, pg.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        # The superuser is trusted (setup, inspection); every other role needs its password.
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "local all postgres trust\n"
            "host  all postgres 127.0.0.1/32 trust\n"
            "local all all scram-sha-256\n"
            "host  all all 127.0.0.1/32 scram-sha-256\n"
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "300",
            "password_encryption": "'scram-sha-256'",
            # A scratch cluster: durability buys nothing here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D", str(self.data_dir),
            "-l", str(self.log_file),
            "-w", "-t", "60",
            "start",
        )  # fmt: skip
        # Cloud SQL's socket is `.s.PGSQL.5432` and the URI Terraform writes names no port; this
        # cluster's port is a free one, so give its socket the default name too.
        default_socket = self.socket_dir / ".s.PGSQL.5432"
        if self.port != 5432:
            default_socket.symlink_to(f".s.PGSQL.{self.port}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [
                    *self._as_owner(),
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
            )
        shutil.rmtree(self.base, ignore_errors=True)

    # --- administration (as the superuser) ---------------------------------------------------

    def admin_connect(self, dbname: str = "postgres") -> Any:
        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname)
        conn.autocommit = True
        return conn

    def query(self, sql: str, params: Any = None, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        conn = self.admin_connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_user(self, name: str, password: str) -> None:
        # psycopg2 quotes the parameter client-side, so a utility statement can take it.
        self.query(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (password,))

    def create_database(self, name: str, owner: str) -> None:
        self.query(f'CREATE DATABASE "{name}" OWNER "{owner}"')

    def tables(self, dbname: str) -> set[str]:
        rows = self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", dbname=dbname)
        return {name for (name,) in rows}

    # --- what the MLflow server is given -----------------------------------------------------

    def socket_uri(self, user: str, password: str, dbname: str) -> str:
        """The Cloud Run shape: psycopg2 over the Cloud SQL unix socket, password URL-encoded."""
        return f"postgresql+psycopg2://{user}:{url_password(password)}@/{dbname}?host={self.socket_dir}"

    def tcp_uri(self, user: str, password: str, dbname: str) -> str:
        return f"postgresql+psycopg2://{user}:{url_password(password)}@127.0.0.1:{self.port}/{dbname}"

    def connection_counter(self, dbname: str) -> tuple[Any, Any]:
        """(count, close): `count()` is how many sessions pg_stat_activity shows on `dbname`,
        through one admin connection kept open until `close()`."""
        conn = self.admin_connect()

        def count() -> int:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
                )
                return cur.fetchone()[0]

        return count, conn.close
