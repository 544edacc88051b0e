#!/usr/bin/env python3
"""Re-wraps the AI gateway's stored API keys from the old key (KEK version N) to the new one (N+1).

What `mlflow crypto rotate-kek` is meant to do, which in MLflow 3.17.2 fails on every database that
holds a key ("Write operation detected on a read-only session": it writes through the store's
read-only session; tests/server/test_gateway_key.py keeps checking). Same library calls, one
transaction, the rows locked while it runs, so a key edited meanwhile waits instead of being lost.
Run it with MLflow 3.17.2 from a machine that reaches the database as the owner of MLflow's tables
(docs/security.md: AI gateway secrets):

  MLFLOW_BACKEND_STORE_URI      required  postgresql+psycopg2://... (never on a command line)
  MLFLOW_CRYPTO_KEK_PASSPHRASE  required  the old key
  MLFLOW_CRYPTO_KEK_VERSION     1         the old key's version (the old gateway_key_revision)
  standard input                          the new key, one line (never on a command line)

Only keys at the old version change (their data keys re-wrapped, the encrypted values untouched),
so it can be run again. Exit status 1 and one line on stderr for anything wrong; nothing written.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

PROG = "rotate_gateway_key.py"
MIN_PASSPHRASE_LENGTH = 32


def fail(message: str) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def settings() -> tuple[str, str, int, str]:
    from mlflow.utils.crypto import DEFAULT_KEK_PASSPHRASE

    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    old = os.environ.get("MLFLOW_CRYPTO_KEK_PASSPHRASE", "")
    version = os.environ.get("MLFLOW_CRYPTO_KEK_VERSION", "1")
    if not uri:
        fail("MLFLOW_BACKEND_STORE_URI is not set; give the database's URI")
    if not old:
        fail(
            "MLFLOW_CRYPTO_KEK_PASSPHRASE is not set; give the old key (MLflow's default for keys stored before it had one)"
        )
    if not version.isdigit() or int(version) < 1:
        fail(f"MLFLOW_CRYPTO_KEK_VERSION must be a whole number of at least 1, got {version!r}")
    new = sys.stdin.readline().rstrip("\r\n")
    if new in (DEFAULT_KEK_PASSPHRASE, old) or len(new) < MIN_PASSPHRASE_LENGTH:
        fail(
            f"the new key on standard input must be {MIN_PASSPHRASE_LENGTH}+ characters, not MLflow's default and not the old key"
        )
    return uri, old, int(version), new


def rotate(uri: str, old: str, version: int, new: str) -> int:
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlGatewaySecret
    from mlflow.utils.crypto import KEKManager, rotate_secret_encryption
    from sqlalchemy.orm import Session

    old_kek = KEKManager(passphrase=old, kek_version=version)
    new_kek = KEKManager(passphrase=new, kek_version=version + 1)
    engine = sqlalchemy.create_engine(uri)
    try:
        with Session(engine) as session, session.begin():
            # MLflow declares the columns untyped (Column[...]); each row's values are plain bytes and ints.
            secrets: list[Any] = (
                session.query(SqlGatewaySecret).filter(SqlGatewaySecret.kek_version == version).with_for_update().all()
            )
            for secret in secrets:
                try:
                    rotated = rotate_secret_encryption(secret.encrypted_value, secret.wrapped_dek, old_kek, new_kek)
                except Exception as e:
                    raise SystemExit(
                        f"{PROG}: cannot open gateway key {secret.secret_name!r} with the old key at version {version} "
                        f"({e}); nothing was changed"
                    ) from None
                secret.wrapped_dek = rotated.wrapped_dek
                secret.kek_version = version + 1
            return len(secrets)
    except sqlalchemy.exc.SQLAlchemyError as e:
        fail(f"cannot rotate in the backend store: {str(getattr(e, 'orig', e)).strip().splitlines()[0]}")
    finally:
        engine.dispose()


def main() -> None:
    uri, old, version, new = settings()
    count = rotate(uri, old, version, new)
    print(f"{PROG}: re-wrapped {count} gateway key(s) from KEK version {version} to {version + 1}")


if __name__ == "__main__":
    main()
