"""IAM database login (MLFLOW_BACKEND_STORE_AUTH=iam): migrate.sh and start.sh against a real
PostgreSQL whose IAM user's password is the access token a local fake metadata server hands out.

The database is shaped as Cloud SQL makes it: owned by `cloudsqlsuperuser` (as every database the
Cloud SQL API creates), the IAM user a member of that role and nothing else (what `database_roles`
grants), and on PostgreSQL 15+ the `public` schema creatable by the database owner only.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from google.auth._helpers import REFRESH_THRESHOLD
from mlflow import MlflowClient

from tests.server.conftest import Database, Launcher
from tests.server.fake_metadata import IAM_DATABASE_USER, FakeMetadataServer
from tests.server.pg import PostgresCluster
from tests.server.proc import MIGRATE_SH, START_SH, ConnectionSampler, ServerProcess, run_load, run_script, script_env

SCOPE = "https://www.googleapis.com/auth/sqlservice.login"
_names = itertools.count(1)


@pytest.fixture
def metadata() -> Iterator[FakeMetadataServer]:
    server = FakeMetadataServer().start()
    yield server
    server.stop()


@pytest.fixture
def iam_env(metadata: FakeMetadataServer, tmp_path: Path) -> dict[str, str]:
    """The variables the service and the job get in IAM mode, plus where ADC finds the fake."""
    gcloud_config = tmp_path / "gcloud"
    gcloud_config.mkdir()
    # No IAP in front of these servers (test_iap_identity.py covers it).
    return {"MLFLOW_BACKEND_STORE_AUTH": "iam", "MLFLOW_IAP_VERIFICATION": "off", **metadata.environment(gcloud_config)}


@pytest.fixture(scope="module")
def iam_user(postgres: PostgresCluster) -> str:
    """The service account's IAM database user, in Cloud SQL's `cloudsqlsuperuser` role only."""
    postgres.query("CREATE ROLE cloudsqlsuperuser NOLOGIN")
    postgres.query(f'CREATE ROLE "{IAM_DATABASE_USER}" LOGIN IN ROLE cloudsqlsuperuser')
    return IAM_DATABASE_USER


def set_token_password(postgres: PostgresCluster, token: str) -> None:
    postgres.query(f'ALTER ROLE "{IAM_DATABASE_USER}" PASSWORD %s', (token,))


@pytest.fixture
def iam_database(postgres: PostgresCluster, iam_user: str) -> Database:
    """An empty database owned by cloudsqlsuperuser; its URI names the IAM user and has no password."""
    name = f"mlflow_iam_{next(_names)}"
    postgres.create_database(name, owner="cloudsqlsuperuser")
    uri = f"postgresql+psycopg2://{quote(iam_user, safe='')}@/{name}?host={postgres.socket_dir}"
    return Database(name=name, uri=uri, tcp_uri="")


def run(script: Path, db: Database, env: dict[str, str]):
    variables = script_env(MLFLOW_BACKEND_STORE_URI=db.uri, **env)
    variables.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    return run_script(script, variables)


def start(launcher: Launcher, db: Database, env: dict[str, str], **more: str) -> ServerProcess:
    return launcher(db, **env, **more)


def log_a_run(url: str, name: str) -> str:
    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    for step in range(3):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def iam_sessions(postgres: PostgresCluster, db: Database) -> list[tuple]:
    return postgres.query(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE usename = %s AND datname = %s",
        (IAM_DATABASE_USER, db.name),
    )


# --- the whole path ------------------------------------------------------------------------------


def test_migrate_then_start_log_in_with_access_tokens_and_mlflow_logs_runs(
    postgres: PostgresCluster,
    metadata: FakeMetadataServer,
    iam_env: dict[str, str],
    iam_database: Database,
    start_server: Launcher,
) -> None:
    token = "ya29.iam-token-for-the-e2e-test"
    metadata.issue(token)
    set_token_password(postgres, token)

    migrated = run(MIGRATE_SH, iam_database, iam_env)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    # The IAM user created MLflow's tables in `public` (the owner's right on PostgreSQL 15+) and owns them.
    owners = postgres.query(
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'", dbname=iam_database.name
    )
    assert owners == [(IAM_DATABASE_USER,)]
    assert [r.scopes for r in metadata.token_requests] == [SCOPE]

    metadata.token_requests.clear()
    server = start(start_server, iam_database, iam_env)
    server.wait_healthy()
    run_id = log_a_run(server.url, "iam-e2e")

    logged = MlflowClient(tracking_uri=server.url).get_run(run_id)
    assert logged.data.params == {"alpha": "0.5"} and logged.data.metrics == {"loss": 1.0 / 3}
    assert iam_sessions(postgres, iam_database), "the server holds no connection as the IAM user"
    # One worker serves in serve.py's own process (MLflow imported once): one token, cached across
    # its start-up checks and every connection it opened, and always for the Cloud SQL login scope.
    assert [r.scopes for r in metadata.token_requests] == [SCOPE]
    # The token is fetched at run time: in no argument, no environment and no log line.
    for process in server.tree():
        assert token not in " ".join(process.cmdline())
        assert token not in "".join(process.environ().values())
    assert token not in server.log()


def test_a_rotated_token_is_used_by_new_connections_while_pooled_ones_keep_serving(
    postgres: PostgresCluster,
    metadata: FakeMetadataServer,
    iam_env: dict[str, str],
    iam_database: Database,
    start_server: Launcher,
) -> None:
    # The first token is fresh for a few seconds in google-auth's eyes (which refreshes
    # REFRESH_THRESHOLD before the expiry), the second for an hour.
    lifetime = 8
    metadata.issue("ya29.token-one", expires_in=int(REFRESH_THRESHOLD.total_seconds()) + lifetime)
    set_token_password(postgres, "ya29.token-one")
    assert run(MIGRATE_SH, iam_database, iam_env).returncode == 0
    server = start(start_server, iam_database, iam_env, MLFLOW_SQLALCHEMYSTORE_POOL_SIZE="1")
    server.wait_healthy()
    log_a_run(server.url, "before-rotation")
    pooled = iam_sessions(postgres, iam_database)
    assert pooled

    # Google rotates the token; Cloud SQL accepts only the new one from now on.
    rotated_at = time.monotonic()
    metadata.issue("ya29.token-two")
    set_token_password(postgres, "ya29.token-two")
    requests_before = len(metadata.token_requests)

    # The connections opened with the old token go on serving: the password is checked at login only.
    log_a_run(server.url, "right-after-rotation")
    assert {pid for pid, _ in iam_sessions(postgres, iam_database)} >= {pid for pid, _ in pooled}

    # Once the old token is stale, new connections (here: the pooled ones are gone) log in with the new one.
    time.sleep(max(0.0, lifetime + 1 - (time.monotonic() - rotated_at)))
    for pid, _ in pooled:
        postgres.query("SELECT pg_terminate_backend(%s)", (pid,))
    run_id = log_a_run(server.url, "after-rotation")

    assert MlflowClient(tracking_uri=server.url).get_run(run_id).data.params == {"alpha": "0.5"}
    new_sessions = {pid for pid, _ in iam_sessions(postgres, iam_database)} - {pid for pid, _ in pooled}
    assert new_sessions, "no new connection was opened after the rotation"
    fetched = [r.token for r in metadata.token_requests[requests_before:]]
    assert fetched and set(fetched) == {"ya29.token-two"}
    assert server.proc.poll() is None


def test_with_two_workers_every_worker_logs_in_with_a_token(
    postgres: PostgresCluster,
    metadata: FakeMetadataServer,
    iam_env: dict[str, str],
    iam_database: Database,
    start_server: Launcher,
) -> None:
    """uvicorn's workers are fresh processes: each installs the hook when it imports mlflow_asgi."""
    metadata.issue("ya29.two-workers")
    set_token_password(postgres, "ya29.two-workers")
    assert run(MIGRATE_SH, iam_database, iam_env).returncode == 0
    metadata.token_requests.clear()
    # Over TCP, so that each database connection can be traced to the worker holding it.
    tcp = f"postgresql+psycopg2://{quote(IAM_DATABASE_USER, safe='')}@127.0.0.1:{postgres.port}/{iam_database.name}"
    server = start(start_server, iam_database, iam_env, MLFLOW_WORKERS="2", MLFLOW_BACKEND_STORE_URI=tcp)
    server.wait_healthy()

    def search(session: requests.Session, i: int) -> requests.Response:
        # A new HTTP connection each time, so that either worker may accept it.
        url = f"{server.url}/api/2.0/mlflow/experiments/search"
        return session.post(url, json={"max_results": 1}, headers={"Connection": "close"}, timeout=30)

    def connected_workers() -> list[int]:
        return [p.pid for p in server.tree() if p.pid != server.proc.pid and sampled.max_by_pid.get(p.pid, 0) > 0]

    # Until both workers hold a connection: the second may still be starting when the first answers.
    deadline = time.monotonic() + 60
    with ConnectionSampler(server, postgres.port, lambda: 0) as sampled:
        while True:
            load = run_load(clients=8, seconds=2, request=search)
            # Without a token a worker's connection would have had no password at all and been refused.
            assert load.ok > 10 and not load.failed, load
            if len(connected_workers()) == 2 or time.monotonic() > deadline:
                break
    assert len(connected_workers()) == 2, sampled.max_by_pid
    # serve.py's start-up checks, then each worker: one token each, cached for all their connections.
    assert [r.scopes for r in metadata.token_requests] == [SCOPE] * 3


# --- refusals ------------------------------------------------------------------------------------


def refusal(script: Path, db: Database, env: dict[str, str], tmp_path: Path) -> str:
    result = run(script, db, {**env, "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")})
    assert result.returncode == 1, result
    [line] = result.stderr.splitlines()
    return line


def test_a_token_the_database_refuses_stops_the_start_with_one_line(
    postgres: PostgresCluster,
    metadata: FakeMetadataServer,
    iam_env: dict[str, str],
    iam_database: Database,
    tmp_path: Path,
) -> None:
    metadata.issue("ya29.accepted")
    set_token_password(postgres, "ya29.accepted")
    assert run(MIGRATE_SH, iam_database, iam_env).returncode == 0
    metadata.issue("ya29.refused")

    line = refusal(START_SH, iam_database, iam_env, tmp_path)

    assert line.startswith("start.sh: cannot reach the backend store: ")
    assert f'password authentication failed for user "{IAM_DATABASE_USER}"' in line
    assert "roles/cloudsql.instanceUser" in line
    assert "ya29.refused" not in line


def test_no_metadata_server_stops_the_start_with_one_line(
    iam_env: dict[str, str], iam_database: Database, metadata: FakeMetadataServer, tmp_path: Path
) -> None:
    metadata.stop()
    env = {**iam_env, "GCE_METADATA_DETECT_RETRIES": "1", "GCE_METADATA_TIMEOUT": "1"}
    line = refusal(START_SH, iam_database, env, tmp_path)
    assert line.startswith(
        "start.sh: cannot log in to the backend store with IAM: no access token from Application Default Credentials"
    )


def test_start_refuses_a_password_in_the_uri_in_iam_mode(iam_env: dict[str, str], tmp_path: Path) -> None:
    db = Database(name="x", uri="postgresql+psycopg2://mlflow:pw@/mlflow?host=/cloudsql/p:r:i", tcp_uri="")
    line = refusal(START_SH, db, iam_env, tmp_path)
    assert line.startswith("start.sh: MLFLOW_BACKEND_STORE_URI has a password, but MLFLOW_BACKEND_STORE_AUTH=iam")
    assert ":pw@" not in line


def test_start_refuses_an_unknown_login_method(tmp_path: Path) -> None:
    db = Database(name="x", uri="postgresql+psycopg2://mlflow@/mlflow?host=/cloudsql/p:r:i", tcp_uri="")
    line = refusal(START_SH, db, {"MLFLOW_BACKEND_STORE_AUTH": "token"}, tmp_path)
    assert line == "start.sh: MLFLOW_BACKEND_STORE_AUTH must be password or iam, got 'token'"


def test_without_the_database_owner_role_the_iam_user_cannot_create_mlflow_schema(
    postgres: PostgresCluster, metadata: FakeMetadataServer, iam_env: dict[str, str], iam_database: Database
) -> None:
    """Why `database_roles = ["cloudsqlsuperuser"]`: on PostgreSQL 15+ PUBLIC may not create in `public`."""
    loner = "mlflow-loner@example-project.iam"
    postgres.query(f'CREATE ROLE "{loner}" LOGIN PASSWORD %s', ("ya29.loner",))
    metadata.issue("ya29.loner")
    db = Database(
        name=iam_database.name,
        uri=iam_database.uri.replace(quote(IAM_DATABASE_USER, safe=""), quote(loner, safe="")),
        tcp_uri="",
    )
    try:
        result = run(MIGRATE_SH, db, iam_env)
    finally:
        postgres.query(f'DROP ROLE "{loner}"')
    assert result.returncode != 0
    assert "permission denied for schema public" in result.stderr
    assert postgres.tables(iam_database.name) == set()
