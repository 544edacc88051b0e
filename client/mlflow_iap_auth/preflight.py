"""A first request that fails in seconds with one line saying what to do.

MLflow's client cannot be told by a header provider to give up: without credentials it logs a warning
and sends the request anyway, and before DNS resolves it retries with back-off for minutes. `check()`
asks once, without retries and with short timeouts, before a script starts logging:

0. is the plugin switched on (MLFLOW_TRACKING_AUTH=iap), else MLflow's requests carry no token;
1. can a token be made here (Application Default Credentials, impersonation); nothing is sent without;
2. is the server reachable (DNS, TCP, TLS: the states of a first deploy), and does IAP accept the
   token (membership, policy propagation)?
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests

from mlflow_iap_auth._auth import (
    ENV_TRACKING_AUTH,
    HEADER,
    TRACKING_AUTH_NAME,
    IapAuthError,
    get_token,
    one_line,
)

PROBE_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
TIMEOUT = 10  # seconds, for the whole of each request (name resolution included)
JUST_DEPLOYED = (
    "right after a first deploy: delegate DNS (the name_servers and ds_record_command outputs) and wait "
    "for the certificate (certificate_status_command), usually 15-60 minutes; with direct_iap use the mlflow_url output"
)


def check(url: str | None = None, environ: Mapping[str, str] | None = None, timeout: float = TIMEOUT) -> None:
    """Raise IapAuthError (one line) unless `url` (default MLFLOW_TRACKING_URI) answers an IAP-authenticated request."""
    env = os.environ if environ is None else environ
    target = (url or env.get("MLFLOW_TRACKING_URI", "")).rstrip("/")
    if not target:
        raise IapAuthError(
            "MLFLOW_TRACKING_URI is not set; export MLFLOW_TRACKING_URI=https://DOMAIN (the mlflow_url output)"
        )
    host = urlsplit(target).hostname or target
    if urlsplit(target).scheme.lower() != "https":
        raise IapAuthError(
            f"MLFLOW_TRACKING_URI={target!r} is not https://; IAP serves only https (the mlflow_url output)"
        )
    if env.get(ENV_TRACKING_AUTH, "").strip() != TRACKING_AUTH_NAME:
        raise IapAuthError(
            f"{ENV_TRACKING_AUTH} is not {TRACKING_AUTH_NAME!r}, so MLflow would send its requests without the IAP "
            f"token; export {ENV_TRACKING_AUTH}={TRACKING_AUTH_NAME}"
        )
    token = get_token(target, env)
    response = _probe(target, host, {HEADER: f"Bearer {token}"}, timeout)
    if response.status_code in (401, 403):
        raise IapAuthError(
            f"IAP at {host} refused the token (HTTP {response.status_code}: {one_line(response.text, 160)}): the signing "
            "account must be in iap_members (or be your account in the client_service_accounts output); "
            "a new grant takes up to ~7 minutes"
        )


def _probe(target: str, host: str, headers: dict[str, str], timeout: float) -> requests.Response:
    """One GET, no retries, bounded in wall time (a resolver that hangs included)."""
    outcome: dict[str, object] = {}

    def get() -> None:
        try:
            outcome["response"] = requests.get(
                target + PROBE_PATH, headers=headers, timeout=timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=get, daemon=True)
    worker.start()
    worker.join(timeout)
    error = outcome.get("error")
    if "response" in outcome:
        return outcome["response"]  # type: ignore[return-value]
    text = str(error) if error else "no answer"
    if error is None or isinstance(error, requests.Timeout):
        raise IapAuthError(f"{host} did not answer within {timeout:g} s; check MLFLOW_TRACKING_URI and your network")
    if "resolve" in text or "Name or service not known" in text or "nodename nor servname" in text:
        raise IapAuthError(f"{host} does not resolve (DNS); check MLFLOW_TRACKING_URI, or {JUST_DEPLOYED}")
    if isinstance(error, requests.exceptions.SSLError):
        raise IapAuthError(f"TLS with {host} failed (the managed certificate is not active yet?); {JUST_DEPLOYED}")
    raise IapAuthError(f"cannot connect to {host}: {one_line(text, 200)}")
