"""start.sh and migrate.sh refuse what would start a broken or misbehaving server: exit status 1 and
one line on stderr that names the problem, before serving anything."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.server.conftest import APP_PASSWORD, Database, migrate
from tests.server.pg import PostgresCluster, url_password
from tests.server.proc import MIGRATE_SH, START_SH, run_script, script_env

A_URI = "postgresql+psycopg2://mlflow:pw@/mlflow?host=/cloudsql/example-project:europe-west1:mlflow-db"


def refusal(script, **env: str) -> str:
    result = run_script(script, script_env(**env))
    assert result.returncode == 1, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def test_start_refuses_without_a_backend_store_uri() -> None:
    assert refusal(START_SH).startswith("start.sh: MLFLOW_BACKEND_STORE_URI is not set")
    assert refusal(START_SH, MLFLOW_BACKEND_STORE_URI="").startswith("start.sh: MLFLOW_BACKEND_STORE_URI is not set")


@pytest.mark.parametrize("uri", ["postgresql://u:p@/db?host=/cloudsql/x", "postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"])
def test_start_and_migrate_refuse_a_postgres_uri_for_another_driver(uri: str) -> None:
    # SQLAlchemy 2 reads a bare postgresql:// as psycopg 3; only psycopg2 is installed.
    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=uri)
    assert line.startswith("start.sh: MLFLOW_BACKEND_STORE_URI must start with postgresql+psycopg2://")
    assert "u:p@" not in line
    if not uri.startswith("postgresql+"):
        assert refusal(MIGRATE_SH, MLFLOW_BACKEND_STORE_URI=uri).startswith("migrate.sh: MLFLOW_BACKEND_STORE_URI must start")


def test_migrate_refuses_without_a_backend_store_uri() -> None:
    assert refusal(MIGRATE_SH) == "migrate.sh: MLFLOW_BACKEND_STORE_URI is not set"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "MLflow ignores 0 and uses 10"),
        ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "MLflow ignores 0"),
    ],
)
def test_start_refuses_a_pool_setting_of_0_that_mlflow_would_ignore(name: str, why: str) -> None:
    assert refusal(START_SH, MLFLOW_BACKEND_STORE_URI=A_URI, **{name: "0"}) == f"start.sh: {name} must be at least 1 ({why}), got 0"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "http", "PORT must be a whole number, got 'http'"),
        ("PORT", "65536", "PORT must be from 1 to 65535, got 65536"),
        ("MLFLOW_WORKERS", "0", "MLFLOW_WORKERS must be at least 1, got 0"),
        ("MLFLOW_WORKERS", "-2", "MLFLOW_WORKERS must be a whole number, got '-2'"),
        ("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "-1", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW must be a whole number, got '-1'"),
        ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "2.5", "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE must be a whole number, got '2.5'"),
    ],
)
def test_start_refuses_numbers_out_of_range(name: str, value: str, message: str) -> None:
    assert refusal(START_SH, MLFLOW_BACKEND_STORE_URI=A_URI, **{name: value}) == f"start.sh: {message}"


def test_start_refuses_a_database_it_cannot_log_in_to(postgres: PostgresCluster, new_database: Callable[[], Database]) -> None:
    db = new_database()
    wrong_password = db.uri.replace(url_password(APP_PASSWORD), "wrong", 1)
    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=wrong_password)
    assert line.startswith("start.sh: cannot reach the backend store: ")
    assert 'password authentication failed for user "mlflow"' in line


def test_start_never_migrates_an_empty_database(postgres: PostgresCluster, new_database: Callable[[], Database]) -> None:
    db = new_database()
    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=db.uri)
    assert line.startswith("start.sh: the backend store database is empty (no MLflow schema)")
    assert "run /app/migrate.sh" in line
    # Plain `mlflow server` would have created all of MLflow's tables here.
    assert postgres.tables(db.name) == set()


def test_start_never_upgrades_an_older_schema(postgres: PostgresCluster, new_database: Callable[[], Database]) -> None:
    db = new_database()
    migrate(db)
    tables = postgres.tables(db.name)
    # As if the database had been migrated by the previous MLflow release.
    postgres.query("UPDATE alembic_version SET version_num = 'an0lder0rev'", dbname=db.name)

    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=db.uri)

    assert line.startswith("start.sh: the backend store database is at revision an0lder0rev, this MLflow needs revision ")
    assert postgres.query("SELECT version_num FROM alembic_version", dbname=db.name) == [("an0lder0rev",)]
    assert postgres.tables(db.name) == tables


def test_migrate_creates_the_schema_and_is_idempotent(postgres: PostgresCluster, new_database: Callable[[], Database]) -> None:
    db = new_database()
    migrate(db)
    tables = postgres.tables(db.name)
    [(revision,)] = postgres.query("SELECT version_num FROM alembic_version", dbname=db.name)
    assert {"experiments", "runs", "metrics", "params", "registered_models", "model_versions"} <= tables

    migrate(db)

    assert postgres.tables(db.name) == tables
    assert postgres.query("SELECT version_num FROM alembic_version", dbname=db.name) == [(revision,)]
