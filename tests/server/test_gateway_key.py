"""The AI gateway's stored API keys are encrypted with the deployment's key, never MLflow's published
default passphrase: start.sh refuses to serve the gateway without a real key, and a key stored
through the real server lands in PostgreSQL readable with the deployment's key only."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.utils.crypto import DEFAULT_KEK_PASSPHRASE, KEKManager, _decrypt_secret

from tests.server.conftest import Database, Launcher, migrate
from tests.server.pg import PostgresCluster
from tests.server.proc import GATEWAY_KEY, START_SH, VENV_BIN, script_env
from tests.server.test_start_refusals import refusal

CREATE = "/api/3.0/mlflow/gateway/secrets/create"
API_KEY = {"api_key": "sk-test-0123456789abcdef"}


def start_refusal(db: Database, tmp_path: Path, **env: str) -> str:
    """Everything else would start a server on a migrated database: only the gateway key is wrong."""
    return refusal(START_SH, MLFLOW_BACKEND_STORE_URI=db.uri, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path), **env)


def test_start_refuses_to_serve_the_gateway_without_a_key(migrated_database: Database, tmp_path: Path) -> None:
    line = start_refusal(migrated_database, tmp_path, MLFLOW_CRYPTO_KEK_PASSPHRASE="")
    assert line == (
        "start.sh: MLFLOW_CRYPTO_KEK_PASSPHRASE is not set, so MLflow's AI gateway would encrypt stored API keys with its "
        "published default passphrase; give the deployment's key (Secret Manager secret <name_prefix>-gateway-key) or set "
        "MLFLOW_ENABLE_AI_GATEWAY=false"
    )


@pytest.mark.parametrize("gateway", ["true", "false"])
def test_start_refuses_mlflows_default_passphrase_even_with_the_gateway_off(
    migrated_database: Database, tmp_path: Path, gateway: str
) -> None:
    line = start_refusal(
        migrated_database,
        tmp_path,
        MLFLOW_CRYPTO_KEK_PASSPHRASE=DEFAULT_KEK_PASSPHRASE,
        MLFLOW_ENABLE_AI_GATEWAY=gateway,
    )
    assert line.startswith("start.sh: MLFLOW_CRYPTO_KEK_PASSPHRASE is MLflow's published default passphrase, ")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLFLOW_CRYPTO_KEK_PASSPHRASE": "short-passphrase"},
         "MLFLOW_CRYPTO_KEK_PASSPHRASE has 16 characters; use at least 32 random ones"),
        ({"MLFLOW_ENABLE_AI_GATEWAY": "off"}, "MLFLOW_ENABLE_AI_GATEWAY must be true or false, got 'off'"),
        ({"MLFLOW_CRYPTO_KEK_VERSION": "0"}, "MLFLOW_CRYPTO_KEK_VERSION must be at least 1"),
        ({"MLFLOW_CRYPTO_KEK_VERSION": "v2"}, "MLFLOW_CRYPTO_KEK_VERSION must be a whole number, got 'v2'"),
    ],
    ids=["too short", "not a boolean", "version 0", "version not a number"],
)  # fmt: skip
def test_start_refuses_gateway_settings_mlflow_would_misuse(
    migrated_database: Database, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    assert start_refusal(migrated_database, tmp_path, **env).startswith(f"start.sh: {message}")


def stored_secret(postgres: PostgresCluster, db: Database, secret_id: str) -> dict:
    [(name, encrypted_value, wrapped_dek, kek_version)] = postgres.query(
        "SELECT secret_name, encrypted_value, wrapped_dek, kek_version FROM secrets WHERE secret_id = %s",
        (secret_id,),
        dbname=db.name,
    )
    return {
        "secret_name": name,
        "encrypted_value": bytes(encrypted_value),
        "wrapped_dek": bytes(wrapped_dek),
        "kek_version": kek_version,
    }


def decrypt(row: dict, secret_id: str, passphrase: str, version: int) -> dict:
    return _decrypt_secret(
        encrypted_value=row["encrypted_value"],
        wrapped_dek=row["wrapped_dek"],
        kek_manager=KEKManager(passphrase=passphrase, kek_version=version),
        secret_id=secret_id,
        secret_name=row["secret_name"],
    )


def test_a_key_stored_through_the_server_opens_with_the_deployments_key_only(
    postgres: PostgresCluster, new_database: Callable[[], Database], start_server: Launcher
) -> None:
    db = new_database()
    migrate(db)
    server = start_server(db, MLFLOW_CRYPTO_KEK_VERSION="2")
    server.wait_healthy()
    response = requests.post(
        server.url + CREATE,
        json={"secret_name": "openai-prod", "secret_value": API_KEY, "provider": "openai"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    secret_id = response.json()["secret"]["secret_id"]
    row = stored_secret(postgres, db, secret_id)
    assert row["kek_version"] == 2
    assert API_KEY["api_key"].encode() not in row["encrypted_value"]
    assert decrypt(row, secret_id, GATEWAY_KEY, 2) == API_KEY
    with pytest.raises(MlflowException, match="Failed to decrypt secret"):
        decrypt(row, secret_id, DEFAULT_KEK_PASSPHRASE, 2)
    with pytest.raises(MlflowException, match="Failed to decrypt secret"):
        decrypt(row, secret_id, DEFAULT_KEK_PASSPHRASE, 1)


def test_with_the_gateway_off_no_key_is_needed_and_nothing_can_be_stored(
    migrated_database: Database, start_server: Launcher
) -> None:
    server = start_server(migrated_database, MLFLOW_CRYPTO_KEK_PASSPHRASE="", MLFLOW_ENABLE_AI_GATEWAY="false")
    server.wait_healthy()
    response = requests.post(server.url + CREATE, json={"secret_name": "x", "secret_value": API_KEY}, timeout=30)
    assert response.status_code == 501, response.text
    assert "AI Gateway feature is disabled" in response.text


def test_with_the_gateway_off_and_no_key_a_random_one_stands_in_so_nothing_falls_back_to_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow would use its default for any code path still reaching a gateway secret; none can now."""
    monkeypatch.syspath_prepend(str(START_SH.parent))
    import gateway_key

    first, second = {"MLFLOW_ENABLE_AI_GATEWAY": "false"}, {"MLFLOW_ENABLE_AI_GATEWAY": "0"}
    gateway_key.check(first)
    gateway_key.check(second)
    assert len(first["MLFLOW_CRYPTO_KEK_PASSPHRASE"]) >= 32
    assert first["MLFLOW_CRYPTO_KEK_PASSPHRASE"] not in (DEFAULT_KEK_PASSPHRASE, second["MLFLOW_CRYPTO_KEK_PASSPHRASE"])
    given = {"MLFLOW_CRYPTO_KEK_PASSPHRASE": GATEWAY_KEY}
    gateway_key.check(given)
    assert given == {"MLFLOW_CRYPTO_KEK_PASSPHRASE": GATEWAY_KEY}, "a real key is used as it is"


STORE_UNDER_MLFLOWS_DEFAULT = """
import sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
store = SqlAlchemyStore(sys.argv[1], sys.argv[2])
print(store.create_gateway_secret(secret_name=sys.argv[3], secret_value={"api_key": "sk-legacy"}).secret_id)
"""
ROTATE = START_SH.parent / "rotate_gateway_key.py"


def store_under_mlflows_default(postgres: PostgresCluster, db: Database, tmp_path: Path) -> str:
    """Stores one API key as a deployment before this change did: MLflow's default passphrase, KEK version 1."""
    stored = subprocess.run(
        [sys.executable, "-c", STORE_UNDER_MLFLOWS_DEFAULT, db.tcp_uri, str(tmp_path), f"legacy-{uuid.uuid4().hex}"],
        env=script_env(MLFLOW_CRYPTO_KEK_PASSPHRASE=""), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    secret_id = stored.stdout.split()[-1]
    assert decrypt(stored_secret(postgres, db, secret_id), secret_id, DEFAULT_KEK_PASSPHRASE, 1) == {
        "api_key": "sk-legacy"
    }
    return secret_id


@pytest.fixture
def key_under_mlflows_default(
    postgres: PostgresCluster, migrated_database: Database, tmp_path: Path
) -> tuple[Database, str]:
    """For the tests that must change nothing: the shared migrated database."""
    return migrated_database, store_under_mlflows_default(postgres, migrated_database, tmp_path)


def rotation(argv: list[str], db: Database, new_key: str) -> subprocess.CompletedProcess[str]:
    """Old key in the environment, the new one on standard input (a hidden prompt reads it there
    without a terminal), as docs/security.md *AI gateway secrets* says."""
    return subprocess.run(
        argv,
        env=script_env(
            MLFLOW_BACKEND_STORE_URI=db.tcp_uri, MLFLOW_CRYPTO_KEK_PASSPHRASE=DEFAULT_KEK_PASSPHRASE, MLFLOW_CRYPTO_KEK_VERSION="1"
        ),
        input=f"{new_key}\n{new_key}\n", capture_output=True, text=True, timeout=180, start_new_session=True,
    )  # fmt: skip


def test_readme_rotation_moves_keys_stored_under_mlflows_default_to_the_deployments_key(
    postgres: PostgresCluster, new_database: Callable[[], Database], tmp_path: Path
) -> None:
    """A deployment that stored keys before this change sets gateway_key_revision = 2 and re-wraps them."""
    db = new_database()
    migrate(db)
    secret_id = store_under_mlflows_default(postgres, db, tmp_path)
    done = rotation([sys.executable, str(ROTATE)], db, GATEWAY_KEY)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "rotate_gateway_key.py: re-wrapped 1 gateway key(s) from KEK version 1 to 2\n"
    row = stored_secret(postgres, db, secret_id)
    assert row["kek_version"] == 2
    assert decrypt(row, secret_id, GATEWAY_KEY, 2) == {"api_key": "sk-legacy"}
    with pytest.raises(MlflowException, match="Failed to decrypt secret"):
        decrypt(row, secret_id, DEFAULT_KEK_PASSPHRASE, 1)
    again = rotation([sys.executable, str(ROTATE)], db, GATEWAY_KEY)
    assert again.stdout == "rotate_gateway_key.py: re-wrapped 0 gateway key(s) from KEK version 1 to 2\n", (
        "it can be rerun"
    )


@pytest.mark.parametrize(
    ("new_key", "message"),
    [
        ("", "the new key on standard input must be 32+ characters"),
        (DEFAULT_KEK_PASSPHRASE, "the new key on standard input"),
    ],
    ids=["no new key", "mlflow's default"],
)
def test_rotation_refuses_a_new_key_that_is_no_better_and_changes_nothing(
    postgres: PostgresCluster, key_under_mlflows_default: tuple[Database, str], new_key: str, message: str
) -> None:
    db, secret_id = key_under_mlflows_default
    refused = rotation([sys.executable, str(ROTATE)], db, new_key)
    assert refused.returncode == 1 and refused.stderr.startswith(f"rotate_gateway_key.py: {message}"), refused.stderr
    assert stored_secret(postgres, db, secret_id)["kek_version"] == 1


def test_mlflows_own_rotate_kek_still_cannot_write_so_the_readme_uses_rotate_gateway_key(
    postgres: PostgresCluster, key_under_mlflows_default: tuple[Database, str]
) -> None:
    """When this fails, MLflow's command works: point docs/security.md *AI gateway secrets* back at it."""
    db, secret_id = key_under_mlflows_default
    argv = [str(VENV_BIN / "mlflow"), "crypto", "rotate-kek", "--backend-store-uri", db.tcp_uri, "--yes"]
    done = rotation(argv, db, GATEWAY_KEY)
    assert done.returncode == 1
    assert "Write operation detected on a read-only session" in done.stderr
    assert stored_secret(postgres, db, secret_id)["kek_version"] == 1
