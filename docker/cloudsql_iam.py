"""Cloud SQL IAM database authentication for the SQLAlchemy engines MLflow creates itself.

With `MLFLOW_BACKEND_STORE_AUTH=iam` the backend store URI names the service account's IAM database
user and carries no password. Every new PostgreSQL connection then logs in with an OAuth 2.0 access
token for the `sqlservice.login` scope as its password, from Application Default Credentials (on
Cloud Run: the metadata server). google-auth caches the token and refreshes it a few minutes before
it expires; a connection already open is not affected by its token expiring, since PostgreSQL checks
the password only at login.

`install()` is called by serve.py, migrate.sh and mlflow_asgi.py (every uvicorn worker) before
anything creates an engine; it listens on every engine's `do_connect`, so MLflow needs no change.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

AUTH_ENV = "MLFLOW_BACKEND_STORE_AUTH"
SCOPE = "https://www.googleapis.com/auth/sqlservice.login"


class TokenUnavailable(RuntimeError):
    """No access token could be had from Application Default Credentials."""


class AccessTokens:
    """The current access token of Application Default Credentials, fetched again only when stale."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # google-auth's credentials and transport request, made on first use (imports stay lazy).
        self._credentials: Any = None
        self._request: Any = None

    def current(self) -> str:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        with self._lock:
            try:
                if self._credentials is None:
                    self._request = google.auth.transport.requests.Request()
                    self._credentials, _ = google.auth.default(scopes=[SCOPE], request=self._request)
                # `valid` is false from REFRESH_THRESHOLD (3 min 45 s) before the expiry on.
                if not self._credentials.valid:
                    self._credentials.refresh(self._request)
            except google.auth.exceptions.GoogleAuthError as e:
                cause = " ".join(str(e).split())
                raise TokenUnavailable(f"no access token from Application Default Credentials: {cause}") from None
            token: str = self._credentials.token
            return token


_installed: AccessTokens | None = None
# Before logging is set up, google-auth's retry warnings would reach stderr through Python's
# last-resort handler and split a refusal over several lines; once it is, they reach the root logger.
logging.getLogger("google.auth").addHandler(logging.NullHandler())


def enabled() -> bool:
    return os.environ.get(AUTH_ENV, "password") == "iam"


def install() -> AccessTokens | None:
    """In IAM mode, give every new PostgreSQL connection of any engine the current token as password."""
    global _installed
    if not enabled():
        return None
    if _installed is not None:
        return _installed
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    tokens = AccessTokens()

    def provide_token(dialect: Any, connection_record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if dialect.name == "postgresql":
            cparams["password"] = tokens.current()

    event.listen(Engine, "do_connect", provide_token)
    _installed = tokens
    return tokens
