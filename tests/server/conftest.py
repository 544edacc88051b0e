"""Fixtures for the MLflow server image's scripts, run against a real, throwaway PostgreSQL."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.fake_cloud_identity import FakeCloudIdentity
from tests.server.fake_metadata import FakeMetadataServer
from tests.server.iap_signer import AUDIENCE, IapSigner
from tests.server.pg import PostgresCluster, PostgresNotInstalled, free_port
from tests.server.proc import MIGRATE_SH, START_SH, ServerProcess, run_script, script_env
from tests.server.teams import A2, ADMIN_PASSWORD, GROUPS_TTL, TEAM_A_GROUP, access_model

APP_USER = "mlflow"
# Needs URL-encoding in the backend store URI: '@' ends userinfo, '/' a path, '%' starts an escape.
APP_PASSWORD = "s3cr@t/pa%ss:w#rd?&="
SERVER_DOMAIN = "mlflow.example.com"


@dataclass(frozen=True)
class Database:
    name: str
    uri: str
    """What the server gets: psycopg2 over the Cloud SQL-style unix socket, password URL-encoded."""
    tcp_uri: str


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster.create()
    except PostgresNotInstalled as e:
        pytest.fail(str(e), pytrace=False)
    try:
        cluster.create_user(APP_USER, APP_PASSWORD)
        yield cluster
    finally:
        cluster.stop()


_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def new_database(postgres: PostgresCluster) -> Callable[[], Database]:
    """Makes an empty database owned by the application user."""

    def make() -> Database:
        name = f"mlflow_{next(_db_names)}"
        postgres.create_database(name, owner=APP_USER)
        return _database(postgres, name)

    return make


def _database(postgres: PostgresCluster, name: str) -> Database:
    return Database(
        name=name,
        uri=postgres.socket_uri(APP_USER, APP_PASSWORD, name),
        tcp_uri=postgres.tcp_uri(APP_USER, APP_PASSWORD, name),
    )


@pytest.fixture(scope="session")
def migrated_template(new_database: Callable[[], Database]) -> Database:
    """One database migrate.sh brought to MLflow's schema, once per session, that nothing connects to:
    the source of `new_migrated_database`. The migration itself is tested where it is the subject
    (test_migrate, test_upgrade, test_iam_login, test_start_refusals)."""
    db = new_database()
    migrate(db)
    return db


@pytest.fixture(scope="session")
def new_migrated_database(postgres: PostgresCluster, migrated_template: Database) -> Callable[[], Database]:
    """Makes a database at MLflow's schema, owned by the application user, as a copy of the template:
    PostgreSQL copies it in well under a second, where each migration costs seconds of CPU."""

    def make() -> Database:
        name = f"mlflow_{next(_db_names)}"
        postgres.query(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template.name}" OWNER "{APP_USER}"')
        return _database(postgres, name)

    return make


def migrate(db: Database) -> None:
    result = run_script(MIGRATE_SH, script_env(MLFLOW_BACKEND_STORE_URI=db.uri))
    assert result.returncode == 0, f"migrate.sh failed:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="session")
def migrated_database(new_migrated_database: Callable[[], Database]) -> Database:
    """A database at MLflow's schema (migrate.sh's, copied); servers are started on it."""
    return new_migrated_database()


@dataclass
class Launcher:
    tmp: Path
    started: list[ServerProcess]

    def __call__(self, db: Database, **env: str) -> ServerProcess:
        """Runs start.sh on a free port (the test's own env vars on top of `db`'s URI). IAP
        verification is off unless the test turns it on (test_iap_identity.py does)."""
        port = free_port()
        variables = {
            "MLFLOW_IAP_VERIFICATION": "off",
            "MLFLOW_BACKEND_STORE_URI": db.uri,
            "PORT": str(port),
            "MLFLOW_ARTIFACTS_DESTINATION": str(self.tmp / f"artifacts-{port}"),
            **env,
        }
        server = ServerProcess.launch([str(START_SH)], script_env(**variables), port, self.tmp / f"server-{port}.log")
        self.started.append(server)
        return server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Launcher]:
    """Starts start.sh servers; whatever is still running at the end of the test is killed."""
    launcher = Launcher(tmp_path, [])
    yield launcher
    for server in launcher.started:
        server.kill()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("servers"), [])
    yield launcher
    for server in launcher.started:
        server.kill()


@pytest.fixture(scope="module")
def signer() -> Iterator[IapSigner]:
    """IAP's stand-in: signs assertions with its own key set, served over HTTP on loopback."""
    with IapSigner() as signer:
        yield signer


# --- teams ([access], tests/server/teams.py) ------------------------------------------------------


@pytest.fixture(scope="module")
def metadata() -> Iterator[FakeMetadataServer]:
    server = FakeMetadataServer(token="ya29.groups-reader").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cloud_identity(metadata: FakeMetadataServer) -> Iterator[FakeCloudIdentity]:
    fake = FakeCloudIdentity(token=metadata.token, groups={TEAM_A_GROUP: {A2}}).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def access_env(
    signer: IapSigner,
    metadata: FakeMetadataServer,
    cloud_identity: FakeCloudIdentity,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., dict[str, str]]:
    """start.sh's environment for [access] (tests/server/teams.py): the model as JSON (teams.py's
    `access_model(others)` unless given), IAP verification against `signer`, groups from
    `cloud_identity`."""
    gcloud = tmp_path_factory.mktemp("gcloud")

    def env(others: str, model: dict | None = None) -> dict[str, str]:
        return {
            "MLFLOW_IAP_VERIFICATION": "on",
            "MLFLOW_IAP_AUDIENCE": AUDIENCE,
            "MLFLOW_IAP_TEST_KEYS_URL": signer.keys_url,
            "MLFLOW_IAP_ACCESS": json.dumps(model or access_model(others)),
            "MLFLOW_IAP_ACCESS_GROUPS_TTL_SECONDS": str(GROUPS_TTL),
            "MLFLOW_IAP_TEST_CLOUD_IDENTITY_URL": cloud_identity.url,
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **metadata.environment(gcloud),
        }

    return env
