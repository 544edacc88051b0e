"""start.sh and migrate.sh refuse what would start a broken or misbehaving server: exit status 1 and
one line on stderr that names the problem, before serving anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.server.conftest import APP_PASSWORD, Database, migrate
from tests.server.pg import PostgresCluster, url_password
from tests.server.proc import DOCKER_DIR, MIGRATE_SH, START_SH, run_script, script_env

A_URI = "postgresql+psycopg2://mlflow:pw@/mlflow?host=/cloudsql/example-project:europe-west1:mlflow-db"


def refusal(script, *, as_user: int | None = None, **env: str) -> str:
    """The one line `script` refuses with. IAP verification is off unless `env` says otherwise, so
    that the checks after it (the database's) are reached. `as_user` runs it in the script's directory,
    which that user must be able to read (see `image_copy`)."""
    env = {"MLFLOW_IAP_VERIFICATION": "off", **env}
    if as_user is None:
        result = run_script(script, script_env(**env))
    else:
        # The image's user is not root: run the real script as an unprivileged uid, as in Cloud Run.
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", str(script)]
        result = subprocess.run(
            argv, env=script_env(**env), capture_output=True, text=True, timeout=60, cwd=Path(script).parent
        )
    assert result.returncode == 1, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def test_start_refuses_without_a_backend_store_uri() -> None:
    assert refusal(START_SH).startswith("start.sh: MLFLOW_BACKEND_STORE_URI is not set")
    assert refusal(START_SH, MLFLOW_BACKEND_STORE_URI="").startswith("start.sh: MLFLOW_BACKEND_STORE_URI is not set")


@pytest.mark.parametrize(
    "uri", ["postgresql://u:p@/db?host=/cloudsql/x", "postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"]
)
def test_start_and_migrate_refuse_a_postgres_uri_for_another_driver(uri: str) -> None:
    # SQLAlchemy 2 reads a bare postgresql:// as psycopg 3; only psycopg2 is installed.
    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=uri)
    assert line.startswith("start.sh: MLFLOW_BACKEND_STORE_URI must start with postgresql+psycopg2://")
    assert "u:p@" not in line
    if not uri.startswith("postgresql+"):
        assert refusal(MIGRATE_SH, MLFLOW_BACKEND_STORE_URI=uri).startswith(
            "migrate.sh: MLFLOW_BACKEND_STORE_URI must start"
        )


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
    assert (
        refusal(START_SH, MLFLOW_BACKEND_STORE_URI=A_URI, **{name: "0"})
        == f"start.sh: {name} must be at least 1 ({why}), got 0"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "http", "PORT must be a whole number, got 'http'"),
        ("PORT", "65536", "PORT must be from 1 to 65535, got 65536"),
        ("MLFLOW_WORKERS", "0", "MLFLOW_WORKERS must be at least 1, got 0"),
        ("MLFLOW_WORKERS", "-2", "MLFLOW_WORKERS must be a whole number, got '-2'"),
        (
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW",
            "-1",
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW must be a whole number, got '-1'",
        ),
        (
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE",
            "2.5",
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE must be a whole number, got '2.5'",
        ),
    ],
)
def test_start_refuses_numbers_out_of_range(name: str, value: str, message: str) -> None:
    assert refusal(START_SH, MLFLOW_BACKEND_STORE_URI=A_URI, **{name: value}) == f"start.sh: {message}"


def test_start_refuses_a_database_it_cannot_log_in_to(
    postgres: PostgresCluster, new_database: Callable[[], Database], tmp_path: Path
) -> None:
    db = new_database()
    wrong_password = db.uri.replace(url_password(APP_PASSWORD), "wrong", 1)
    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=wrong_password, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path))
    assert line.startswith("start.sh: cannot reach the backend store: ")
    assert 'password authentication failed for user "mlflow"' in line


def test_start_never_migrates_an_empty_database(
    postgres: PostgresCluster, new_database: Callable[[], Database], tmp_path: Path
) -> None:
    db = new_database()
    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=db.uri, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path))
    assert line.startswith("start.sh: the backend store database is empty (no MLflow schema)")
    assert "run /app/migrate.sh" in line
    # Plain `mlflow server` would have created all of MLflow's tables here.
    assert postgres.tables(db.name) == set()


def test_start_never_upgrades_an_older_schema(
    postgres: PostgresCluster, new_migrated_database: Callable[[], Database], tmp_path: Path
) -> None:
    db = new_migrated_database()
    tables = postgres.tables(db.name)
    # As if the database had been migrated by the previous MLflow release.
    postgres.query("UPDATE alembic_version SET version_num = 'an0lder0rev'", dbname=db.name)

    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=db.uri, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path))

    assert line.startswith(
        "start.sh: the backend store database is at revision an0lder0rev, this MLflow needs revision "
    )
    assert postgres.query("SELECT version_num FROM alembic_version", dbname=db.name) == [("an0lder0rev",)]
    assert postgres.tables(db.name) == tables


def test_migrate_creates_the_schema_and_is_idempotent(
    postgres: PostgresCluster, new_database: Callable[[], Database]
) -> None:
    db = new_database()
    migrate(db)
    tables = postgres.tables(db.name)
    [(revision,)] = postgres.query("SELECT version_num FROM alembic_version", dbname=db.name)
    assert {"experiments", "runs", "metrics", "params", "registered_models", "model_versions"} <= tables

    migrate(db)

    assert postgres.tables(db.name) == tables
    assert postgres.query("SELECT version_num FROM alembic_version", dbname=db.name) == [(revision,)]


NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's own tmp root is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="start-sh-"))
    path.chmod(0o755)
    yield path
    for child in path.iterdir():
        child.chmod(0o755)
    subprocess.run(["rm", "-rf", str(path)], check=True)


def image_copy(shared_dir: Path) -> Path:
    """docker/ copied where any user can read it, as the image's /app: the checkout itself may sit in a
    directory only its owner can enter (a home directory of mode 700)."""
    app = shared_dir / "app"
    shutil.copytree(DOCKER_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (app, *app.rglob("*")):
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return app


def test_start_refuses_an_artifact_directory_its_user_cannot_write(shared_dir: Path) -> None:
    """A GCS volume mounted without the image's uid/gid looks like this to user 10001."""
    read_only = shared_dir / "gcs"
    read_only.mkdir(mode=0o555)
    read_only.chmod(0o555)
    start_sh = image_copy(shared_dir) / START_SH.name
    line = refusal(
        start_sh, as_user=NOBODY, MLFLOW_BACKEND_STORE_URI=A_URI, MLFLOW_ARTIFACTS_DESTINATION=str(read_only)
    )
    assert line == (
        f"start.sh: cannot create and delete a file in MLFLOW_ARTIFACTS_DESTINATION={read_only} as uid {NOBODY}; "
        f"mount it read-write for this user (Cloud Run GCS volume: read_only false, mount options uid={NOBODY},gid={NOBODY}) "
        "or point MLFLOW_ARTIFACTS_DESTINATION at a writable directory"
    )
    assert list(read_only.iterdir()) == []


def test_start_refuses_an_artifact_path_that_cannot_be_a_directory(tmp_path: Path) -> None:
    """Even root cannot make a directory under a file."""
    (tmp_path / "a-file").write_text("")
    line = refusal(
        START_SH, MLFLOW_BACKEND_STORE_URI=A_URI, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "a-file" / "gcs")
    )
    assert line.startswith(
        f"start.sh: cannot create and delete a file in MLFLOW_ARTIFACTS_DESTINATION={tmp_path}/a-file/gcs as uid "
    )


def test_a_writable_artifact_directory_passes_the_check_and_keeps_no_probe_file(
    postgres: PostgresCluster, new_database: Callable[[], Database], tmp_path: Path
) -> None:
    """start.sh goes on to the database (a wrong password here), and the directory is as it was."""
    writable = tmp_path / "gcs"
    writable.mkdir()
    wrong_password = new_database().uri.replace(url_password(APP_PASSWORD), "wrong", 1)
    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=wrong_password, MLFLOW_ARTIFACTS_DESTINATION=str(writable))
    assert line.startswith("start.sh: cannot reach the backend store: ")
    assert list(writable.iterdir()) == []


# --- IAP verification: on unless switched off, and then only with an audience -------------------

AUDIENCE = "/projects/123456789012/global/backendServices/4242424242424242424"


def test_start_refuses_to_serve_unverified_unless_verification_is_switched_off(tmp_path: Path) -> None:
    """Neither an audience nor the off switch: a server that would accept anyone's word is not started."""
    line = refusal(
        START_SH, MLFLOW_IAP_VERIFICATION="", MLFLOW_BACKEND_STORE_URI=A_URI, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path)
    )
    assert line.startswith("start.sh: MLFLOW_IAP_AUDIENCE is not set: give the audience of IAP's signed header ")
    assert line.endswith("or set MLFLOW_IAP_VERIFICATION=off for a server nobody reaches through IAP")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLFLOW_IAP_VERIFICATION": "off", "MLFLOW_IAP_AUDIENCE": AUDIENCE},
         "MLFLOW_IAP_AUDIENCE is set but MLFLOW_IAP_VERIFICATION is off; unset one of them"),
        ({"MLFLOW_IAP_VERIFICATION": "false"}, "MLFLOW_IAP_VERIFICATION must be on or off, got 'false'"),
        ({"MLFLOW_IAP_VERIFICATION": "on", "MLFLOW_IAP_AUDIENCE": "https://mlflow.example.com/*"},
         "MLFLOW_IAP_AUDIENCE must be /projects/NUMBER/global/backendServices/ID or "
         "/projects/NUMBER/locations/REGION/services/NAME, got 'https://mlflow.example.com/*'"),
        ({"MLFLOW_IAP_VERIFICATION": "on", "MLFLOW_IAP_AUDIENCE": AUDIENCE, "MLFLOW_IAP_TEST_KEYS_URL": "https://keys.example.net/k"},
         "MLFLOW_IAP_TEST_KEYS_URL is for tests only and must be http://127.0.0.1:PORT/..., got 'https://keys.example.net/k'"),
    ],
    ids=["off with an audience", "neither on nor off", "not an IAP audience", "keys from elsewhere"],
)  # fmt: skip
def test_start_refuses_iap_settings_that_contradict_or_cannot_be_iaps(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    line = refusal(START_SH, MLFLOW_BACKEND_STORE_URI=A_URI, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path), **env)
    assert line == f"start.sh: {message}"


@pytest.mark.parametrize("audience", [AUDIENCE, "/projects/123456789012/locations/europe-west1/services/mlflow-server"])
def test_either_iap_audience_passes_the_check_before_the_database(
    new_database: Callable[[], Database], tmp_path: Path, audience: str
) -> None:
    """Load balancer and IAP-on-Cloud-Run audiences both get as far as the database (a wrong password here)."""
    wrong_password = new_database().uri.replace(url_password(APP_PASSWORD), "wrong", 1)
    line = refusal(
        START_SH,
        MLFLOW_IAP_VERIFICATION="on",
        MLFLOW_IAP_AUDIENCE=audience,
        MLFLOW_BACKEND_STORE_URI=wrong_password,
        MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path),
    )
    assert line.startswith("start.sh: cannot reach the backend store: ")
