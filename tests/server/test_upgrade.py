"""An upgrade of a database the previous MLflow release filled: the image's migrate.sh, then start.sh,
and everything reads back through MLflow's client as it was (artifacts by checksum)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from mlflow.store.db.utils import _get_latest_schema_revision

from tests.server.conftest import Database, Launcher, migrate
from tests.server.older_mlflow import OLDER_VERSION, older_mlflow_python
from tests.server.pg import PostgresCluster, free_port
from tests.server.proc import START_SH, VENV_BIN, ServerProcess, run_script, script_env

UPGRADE_DATA = Path(__file__).with_name("upgrade_data.py")


def revision(postgres: PostgresCluster, db: Database) -> str:
    return postgres.query("SELECT version_num FROM alembic_version", dbname=db.name)[0][0]


def client_script(python: Path, mode: str, server: ServerProcess, out: Path) -> dict:
    env = script_env(MLFLOW_TRACKING_URI=server.url, MLFLOW_DISABLE_TELEMETRY="true")
    env["PATH"] = f"{python.parent}:{env['PATH']}"
    result = subprocess.run(
        [str(python), str(UPGRADE_DATA), mode, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{python} {UPGRADE_DATA.name} {mode} failed:\n{result.stdout}{result.stderr}"
    return json.loads(out.read_text())


def test_a_database_of_the_previous_release_upgrades_with_nothing_lost(
    postgres: PostgresCluster, new_database: Callable[[], Database], start_server: Launcher, tmp_path: Path
) -> None:
    older_python = older_mlflow_python()
    db = new_database()
    artifacts = tmp_path / "artifacts"

    # The previous release's own server, as a deployment of it ran: it creates its schema itself.
    port = free_port()
    older = ServerProcess.launch(
        [str(older_python.parent / "mlflow"), "server", "--port", str(port), "--workers", "1",
         "--artifacts-destination", str(artifacts)],
        script_env(MLFLOW_BACKEND_STORE_URI=db.uri, MLFLOW_DISABLE_TELEMETRY="true",
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        port, tmp_path / "older-server.log",
    )  # fmt: skip
    try:
        older.wait_healthy(timeout=180)
        before = client_script(older_python, "populate", older, tmp_path / "before.json")
    finally:
        older.terminate(timeout=30)
    older_revision = revision(postgres, db)
    assert older_revision != _get_latest_schema_revision(), f"MLflow {OLDER_VERSION} has the image's schema head"

    refused = run_script(START_SH, script_env(MLFLOW_BACKEND_STORE_URI=db.uri, PORT=str(free_port()), MLFLOW_IAP_VERIFICATION="off",
                                              MLFLOW_ARTIFACTS_DESTINATION=str(artifacts)))  # fmt: skip
    assert refused.returncode == 1
    assert f"the backend store database is at revision {older_revision}, this MLflow needs revision" in refused.stderr
    assert revision(postgres, db) == older_revision

    migrate(db)
    assert revision(postgres, db) == _get_latest_schema_revision()
    server = start_server(db, MLFLOW_ARTIFACTS_DESTINATION=str(artifacts))
    server.wait_healthy()
    after = client_script(VENV_BIN / "python", "snapshot", server, tmp_path / "after.json")

    assert after == before
    # What was compared is what was logged: nothing is compared vacuously.
    runs = [run for e in before["experiments"] for run in e["runs"]]
    assert len(before["experiments"]) == 2 and len(runs) == 6
    assert sum(len(history) for run in runs for history in run["metric_history"].values()) == 2 * 25 + 4 * 2
    assert all(run["artifacts"] for run in runs if run["tags"].get("kind") == "parent")
    assert [len(t["spans"]) for t in before["traces"]] == [2] and before["traces"][0]["tags"]["reviewed"] == "yes"
    assert [v["version"] for v in before["model"]["versions"]] == ["1", "2"] and before["model"]["champion"] == "2"
