"""migrate.sh, the migration job's command: brings an empty database to MLflow's schema head
without ever putting the backend store URI (and its password) on a process's command line."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import psutil

from tests.server.conftest import APP_PASSWORD, Database
from tests.server.pg import PostgresCluster, url_password
from tests.server.proc import MIGRATE_SH, script_env


def command_lines_while_running(db: Database) -> tuple[int, set[str]]:
    """Exit status of migrate.sh, and every command line its process tree showed while it ran."""
    proc = subprocess.Popen(
        [str(MIGRATE_SH)],
        env=script_env(MLFLOW_BACKEND_STORE_URI=db.uri),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: set[str] = set()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                seen.add(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return proc.returncode, seen


def test_migrate_creates_the_schema_and_keeps_the_password_off_every_command_line(
    postgres: PostgresCluster, new_database: Callable[[], Database]
) -> None:
    db = new_database()
    status, command_lines = command_lines_while_running(db)
    assert status == 0
    assert any("mlflow.cli" in line for line in command_lines), command_lines
    for secret in (APP_PASSWORD, url_password(APP_PASSWORD)):
        assert not [line for line in command_lines if secret in line]
    tables = postgres.query(
        "select count(*) from information_schema.tables where table_name = 'experiments'", dbname=db.name
    )
    assert tables == [(1,)]
