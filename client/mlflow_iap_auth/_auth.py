"""Service-account-signed JWTs for Identity-Aware Proxy, made from Application Default Credentials.

IAP in front of a backend service that uses the Google-managed OAuth client accepts, from programs,
a JWT signed by a service account whose `aud` is the application's URL (`https://HOST/*`). The JWT is
signed by Google through the IAM Service Account Credentials API (`signJwt`), called with whatever
Application Default Credentials (ADC) are at hand, so no key file is ever needed:

* a human's `gcloud auth application-default login` credentials, signing as the service account named
  in MLFLOW_IAP_SERVICE_ACCOUNT (the human needs roles/iam.serviceAccountTokenCreator on it);
* the service account attached to a VM, Cloud Run service/job or GKE workload, signing as itself.

Tokens are cached per audience and signed again shortly before they expire, under a lock, so a run
longer than a token's lifetime keeps logging and concurrent MLflow threads sign once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import google.auth
import google.auth.compute_engine
import google.auth.exceptions
import google.auth.jwt
import google.auth.transport.requests
import google.oauth2.service_account
import requests

from mlflow_iap_auth._own_account import OwnAccountError, own_account_for

_LOGGER = logging.getLogger(__name__)

ENV_SERVICE_ACCOUNT = "MLFLOW_IAP_SERVICE_ACCOUNT"
ENV_AUDIENCE = "MLFLOW_IAP_AUDIENCE"
ENV_HOSTS = "MLFLOW_IAP_HOSTS"
ENV_TOKEN_LIFETIME = "MLFLOW_IAP_TOKEN_LIFETIME"
# MLflow's own switch for request auth providers, and this plugin's name in it (here, not in plugin.py,
# so that preflight.py can read it without importing MLflow).
ENV_TRACKING_AUTH = "MLFLOW_TRACKING_AUTH"
TRACKING_AUTH_NAME = "iap"

# IAP accepts `Authorization` or `Proxy-Authorization`; the latter leaves `Authorization` to MLflow
# itself (MLFLOW_TRACKING_TOKEN, basic auth), so neither overwrites the other.
HEADER = "Proxy-Authorization"

MAX_TOKEN_LIFETIME = 3600  # seconds; a service-account JWT for IAP lives at most one hour
MAX_REFRESH_MARGIN = 300  # sign a new token this long before the cached one expires
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_SIGN_TIMEOUT = 30  # seconds, per signJwt call
_SIGN_ATTEMPTS = 3
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_SERVICE_ACCOUNT = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def origin(url: str) -> tuple[str, str, int] | None:
    """`(https, host, port)` of an https URL, the default port made explicit; None for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or not parts.hostname:
        return None
    return "https", parts.hostname.lower().rstrip("."), port or 443


def one_line(text: object, limit: int = 600) -> str:
    """`text` with all whitespace runs (newlines included) collapsed to one space, at most `limit` long."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class IapAuthError(Exception):
    """A one-line, actionable reason why no IAP token could be made."""

    def __init__(self, message: str):
        super().__init__(one_line(f"mlflow-iap-auth: {message}"))


@dataclass(frozen=True)
class Settings:
    """What the environment asks for. Every field is optional; the defaults suit the usual case."""

    service_account: str | None = None
    audience: str | None = None
    hosts: tuple[str, ...] = ()
    token_lifetime: int = MAX_TOKEN_LIFETIME

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        service_account = env.get(ENV_SERVICE_ACCOUNT, "").strip() or None
        if service_account and not _SERVICE_ACCOUNT.match(service_account):
            raise IapAuthError(
                f"{ENV_SERVICE_ACCOUNT}={service_account!r} is not a service account email "
                "(NAME@PROJECT.iam.gserviceaccount.com)"
            )
        audience = env.get(ENV_AUDIENCE, "").strip() or None
        hosts = tuple(h.strip().lower() for h in env.get(ENV_HOSTS, "").split(",") if h.strip())
        if bad := [h for h in hosts if "/" in h or "@" in h or origin(f"https://{h}") is None]:
            raise IapAuthError(f"{ENV_HOSTS}={bad[0]!r} is not a host name; write HOST or HOST:PORT, comma-separated")
        raw = env.get(ENV_TOKEN_LIFETIME, "").strip()
        lifetime = MAX_TOKEN_LIFETIME
        if raw:
            lifetime = int(raw) if raw.isdigit() else 0
            if not 1 <= lifetime <= MAX_TOKEN_LIFETIME:
                raise IapAuthError(f"{ENV_TOKEN_LIFETIME}={raw!r} must be whole seconds from 1 to {MAX_TOKEN_LIFETIME}")
        return cls(service_account, audience, hosts, lifetime)

    def sends_token(self, url: str, tracking_uri: str) -> bool:
        """Whether a request to `url` gets the token: https only, and only to the IAP application's
        origin (scheme, host, port): a host listed in MLFLOW_IAP_HOSTS (port 443 unless written), else
        the overridden audience's, else the tracking server's. Nothing else ever sees it."""
        target = origin(url)
        if target is None:
            return False
        if self.hosts:
            return target in {origin(f"https://{entry}") for entry in self.hosts}
        if self.audience:
            return target == origin(self.audience)
        return target == origin(tracking_uri)

    def audience_for(self, url: str) -> str:
        """The `aud` IAP expects for `url`: the override if set, else `https://HOST/*`."""
        if self.audience:
            return self.audience
        parts = urlsplit(url)
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise IapAuthError(f"IAP needs an https:// URL, got {url!r}")
        host = parts.hostname.lower()
        netloc = host if parts.port in (None, 443) else f"{host}:{parts.port}"
        return f"https://{netloc}/*"


class Signer(Protocol):
    email: str

    def sign(self, claims: Mapping[str, object]) -> str: ...


class GoogleAuthSigner:
    """Signs JWTs as one service account, with Application Default Credentials and google-auth.

    The service account is `service_account` when given (impersonation), else the one the
    credentials themselves belong to (attached to a VM, Cloud Run or GKE workload).
    """

    def __init__(self, service_account: str | None = None):
        self._credentials, self.email, self._sign_locally = _resolve(service_account)
        self._session: google.auth.transport.requests.AuthorizedSession | None = None

    def sign(self, claims: Mapping[str, object]) -> str:
        if self._sign_locally:
            # Credentials that already hold the service account's key sign without an API call.
            token: bytes = google.auth.jwt.encode(self._credentials.signer, dict(claims))
            return token.decode("ascii")
        return self._sign_with_iam(claims)

    def _sign_with_iam(self, claims: Mapping[str, object]) -> str:
        if self._session is None:
            self._session = google.auth.transport.requests.AuthorizedSession(self._credentials)
        universe = getattr(self._credentials, "universe_domain", None) or "googleapis.com"
        url = f"https://iamcredentials.{universe}/v1/projects/-/serviceAccounts/{quote(self.email, safe='@')}:signJwt"
        body = {"payload": json.dumps(dict(claims), separators=(",", ":"))}
        response = None
        for attempt in range(_SIGN_ATTEMPTS):
            try:
                response = self._session.post(url, json=body, timeout=_SIGN_TIMEOUT)
            except google.auth.exceptions.RefreshError as exc:
                raise IapAuthError(
                    f"could not refresh Application Default Credentials ({_reason(exc)}); run "
                    "`gcloud auth application-default login`, or check the attached service account"
                ) from exc
            except (google.auth.exceptions.TransportError, requests.RequestException) as exc:
                if attempt + 1 == _SIGN_ATTEMPTS:
                    raise IapAuthError(
                        f"could not reach the IAM Credentials API to sign a JWT as {self.email}: {_reason(exc)}"
                    ) from exc
            else:
                if response.status_code not in _RETRY_STATUSES or attempt + 1 == _SIGN_ATTEMPTS:
                    break
            time.sleep(0.5 * 2**attempt)
        assert response is not None
        if response.status_code == 200:
            try:
                signed: str = response.json()["signedJwt"]
                return signed
            except (ValueError, KeyError) as exc:
                raise IapAuthError(f"signJwt for {self.email} answered without a signedJwt") from exc
        said = _google_error(response)
        if response.status_code == 403:
            raise IapAuthError(
                f"permission denied signing a JWT as {self.email}: the caller needs "
                "iam.serviceAccounts.signJwt on it (roles/iam.serviceAccountTokenCreator) and "
                f"iamcredentials.googleapis.com must be enabled. Google said: {said}"
            )
        if response.status_code == 404:
            raise IapAuthError(f"service account {self.email} was not found. Google said: {said}")
        raise IapAuthError(f"signJwt for {self.email} failed with HTTP {response.status_code}: {said}")


def _resolve(service_account: str | None) -> tuple[Any, str, bool]:
    """(credentials, service account email, sign locally?) from Application Default Credentials."""
    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise IapAuthError(
            "no Google credentials found (Application Default Credentials): on a workstation run "
            f"`gcloud auth application-default login` and set {ENV_SERVICE_ACCOUNT}; on GCE, Cloud Run "
            "or GKE attach a service account to the workload"
        ) from exc
    if isinstance(credentials, google.oauth2.service_account.Credentials) and service_account in (
        None,
        credentials.service_account_email,
    ):
        return credentials, credentials.service_account_email, True
    if not service_account:
        service_account = _own_account(credentials)
    if service_account:
        return credentials, service_account, False
    email = getattr(credentials, "service_account_email", None)
    if email in (None, "default") and isinstance(credentials, google.auth.compute_engine.Credentials):
        try:  # the metadata server names the attached service account once asked for a token
            credentials.refresh(google.auth.transport.requests.Request())
        except (google.auth.exceptions.RefreshError, google.auth.exceptions.TransportError) as exc:
            raise IapAuthError(
                f"could not get the attached service account from the metadata server: {_reason(exc)}"
            ) from exc
        email = credentials.service_account_email
    if not email or not _SERVICE_ACCOUNT.match(email):
        raise IapAuthError(
            "Application Default Credentials are not a service account's (e.g. a user's gcloud login), and "
            f"IAP takes only service-account JWTs from programs: set {ENV_SERVICE_ACCOUNT} to a service "
            "account you may impersonate (roles/iam.serviceAccountTokenCreator on it), or use the web UI"
        )
    return credentials, email, False


def _own_account(credentials: object) -> str | None:
    """A person's own client account from MLFLOW_IAP_SERVICE_ACCOUNTS (see _own_account.py)."""
    try:
        return own_account_for(credentials)
    except OwnAccountError as exc:
        raise IapAuthError(str(exc)) from exc


def _reason(exc: BaseException) -> str:
    return one_line(exc.args[0] if len(exc.args) == 1 else exc, 300)


def _google_error(response: requests.Response) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return one_line(message or response.text or response.reason or "no details", 300)


def _refresh_margin(lifetime: int) -> int:
    return max(1, min(MAX_REFRESH_MARGIN, lifetime // 4))


class IapTokenSource:
    """Thread-safe cache of service-account JWTs for IAP, one per (audience, service account, lifetime)."""

    def __init__(
        self,
        signer_factory: Callable[[str | None], Signer] = GoogleAuthSigner,
        clock: Callable[[], float] = time.time,
    ):
        self._signer_factory = signer_factory
        self._clock = clock
        self._lock = threading.Lock()
        self._signers: dict[str | None, Signer] = {}
        self._tokens: dict[tuple[str, str | None, int], tuple[str, int]] = {}

    def token(self, audience: str, service_account: str | None = None, lifetime: int = MAX_TOKEN_LIFETIME) -> str:
        key = (audience, service_account, lifetime)
        margin = _refresh_margin(lifetime)
        cached = self._tokens.get(key)
        if cached and self._clock() < cached[1] - margin:
            return cached[0]
        with self._lock:
            now = self._clock()
            cached = self._tokens.get(key)
            if cached and now < cached[1] - margin:
                return cached[0]  # another thread signed while this one waited
            try:
                signer = self._signers.get(service_account)
                if signer is None:
                    signer = self._signers[service_account] = self._signer_factory(service_account)
                issued = int(now)
                expires = issued + lifetime
                token = signer.sign(
                    {"iss": signer.email, "sub": signer.email, "aud": audience, "iat": issued, "exp": expires}
                )
            except IapAuthError as exc:
                if cached and now < cached[1] - 1:
                    _LOGGER.warning("%s; using the current IAP token until it expires", exc)
                    return cached[0]
                raise
            self._tokens[key] = (token, expires)
            return token


_default_source = IapTokenSource()


def default_source() -> IapTokenSource:
    """The process-wide token source shared by the MLflow plugin and `get_token`."""
    return _default_source


def get_token(url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """An IAP token for `url` (default: MLFLOW_TRACKING_URI), configured from the environment."""
    env = os.environ if environ is None else environ
    target = url or env.get("MLFLOW_TRACKING_URI", "")
    if not target:
        raise IapAuthError("no URL given and MLFLOW_TRACKING_URI is not set")
    settings = Settings.from_env(env)
    audience = settings.audience_for(target)
    return _default_source.token(audience, settings.service_account, settings.token_lifetime)
