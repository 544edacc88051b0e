"""The key MLflow's AI gateway encrypts stored API keys with: never MLflow's published default.

MLflow 3.17 wraps each gateway secret's data key with a KEK derived from MLFLOW_CRYPTO_KEK_PASSPHRASE
(and MLFLOW_CRYPTO_KEK_VERSION); when the passphrase is unset it silently uses a default that is
printed in its source (mlflow/utils/crypto.py), so anyone holding a database backup or export can
decrypt every stored key. serve.py calls `check` before anything else touches the database:

* gateway on (MLflow's default, MLFLOW_ENABLE_AI_GATEWAY unset or true): a passphrase of at least 32
  characters is required (the deployment's, from Secret Manager), and MLflow's default is refused;
* gateway off (MLFLOW_ENABLE_AI_GATEWAY=false): no secret can be stored or read through the gateway's
  routes, so none is required; a passphrase given is still checked, and when none is given a random
  one, for this process only, takes its place, so no code path left can fall back to the default.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import MutableMapping

PASSPHRASE_ENV = "MLFLOW_CRYPTO_KEK_PASSPHRASE"
GATEWAY_ENV = "MLFLOW_ENABLE_AI_GATEWAY"
# MLflow's own advice for the passphrase (mlflow/server/constants.py): 32+ high-entropy characters.
MIN_PASSPHRASE_LENGTH = 32
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
"""What MLflow's boolean environment variables accept (anything else fails its first request)."""


def gateway_enabled(environ: MutableMapping[str, str]) -> bool:
    # Exactly as MLflow reads it (no stripping), start.sh having turned an empty value into true.
    value = (environ.get(GATEWAY_ENV) or "true").lower()
    if value not in BOOLEANS:
        raise ValueError(f"{GATEWAY_ENV} must be true or false, got {environ[GATEWAY_ENV]!r}")
    return BOOLEANS[value]


def check(environ: MutableMapping[str, str] = os.environ) -> None:
    """Raises ValueError with one line, or leaves `environ` with a passphrase that is not MLflow's default."""
    from mlflow.utils.crypto import DEFAULT_KEK_PASSPHRASE

    enabled = gateway_enabled(environ)
    passphrase = environ.get(PASSPHRASE_ENV, "")
    if passphrase == DEFAULT_KEK_PASSPHRASE:
        raise ValueError(
            f"{PASSPHRASE_ENV} is MLflow's published default passphrase, which anyone with a database backup can "
            "decrypt stored API keys with; give the deployment's key (Secret Manager secret <name_prefix>-gateway-key)"
        )
    if passphrase and len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise ValueError(
            f"{PASSPHRASE_ENV} has {len(passphrase)} characters; use at least {MIN_PASSPHRASE_LENGTH} random ones "
            "(the deployment's key: Secret Manager secret <name_prefix>-gateway-key)"
        )
    if passphrase:
        return
    if enabled:
        raise ValueError(
            f"{PASSPHRASE_ENV} is not set, so MLflow's AI gateway would encrypt stored API keys with its published "
            f"default passphrase; give the deployment's key (Secret Manager secret <name_prefix>-gateway-key) or set "
            f"{GATEWAY_ENV}=false"
        )
    environ[PASSPHRASE_ENV] = secrets.token_urlsafe(48)
