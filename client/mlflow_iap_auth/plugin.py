"""The MLflow plugins: a request auth provider (entry point group `mlflow.request_auth_provider`,
turned on with MLFLOW_TRACKING_AUTH=iap) and a header provider that only says when it is not on.

MLflow hands the auth provider's object to `requests` for every REST call it makes with its default
credentials: to the tracking server, and also to artifact stores and other https hosts (an
`https://` artifact URI, a registry elsewhere). `requests` calls it with each prepared request, so it
sees the URL actually requested and adds the token only when that URL's origin (scheme, host, port)
is the IAP application's: the tracking URI's (MLflow's `set_tracking_uri()`, else
MLFLOW_TRACKING_URI), or a host in MLFLOW_IAP_HOSTS, or the overridden audience's. Every other host
gets no credential. (A redirect never carries it either: `requests` drops Proxy-Authorization when
it follows one.)

A header provider is never told the URL, so it cannot make that decision; it is registered only to
say once, in a warning, that MLFLOW_TRACKING_AUTH=iap is missing for an https tracking URI.
An exception from the auth object fails the MLflow call with its one-line message.
"""

from __future__ import annotations

import logging
import os
import threading

import requests.auth
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from mlflow_iap_auth._auth import ENV_TRACKING_AUTH, HEADER, TRACKING_AUTH_NAME, Settings, default_source, origin

NAME = TRACKING_AUTH_NAME
"""What MLFLOW_TRACKING_AUTH must say."""
AUTH_ENV = ENV_TRACKING_AUTH
_LOGGER = logging.getLogger(__name__)


def _tracking_uri() -> str:
    import mlflow.tracking  # imported late: MLflow loads this module while it is itself importing

    return mlflow.tracking.get_tracking_uri() or ""


class IapAuth(requests.auth.AuthBase):
    """Adds `Proxy-Authorization: Bearer <service-account JWT>` to requests for the IAP application only."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        settings = Settings.from_env()
        if settings.sends_token(request.url or "", _tracking_uri()):
            token = default_source().token(
                settings.audience_for(request.url or ""), settings.service_account, settings.token_lifetime
            )
            request.headers[HEADER] = f"Bearer {token}"
        return request


class IapRequestAuthProvider(RequestAuthProvider):
    def get_name(self) -> str:
        return NAME

    def get_auth(self) -> IapAuth:
        return IapAuth()


class IapRequestHeaderProvider(RequestHeaderProvider):
    """Adds nothing. Warns once per process when the tracking server is an https IAP application but
    MLFLOW_TRACKING_AUTH is not `iap` (an install from before the auth provider: its requests now
    reach IAP without a token and get 401)."""

    _warned = False
    _lock = threading.Lock()

    def in_context(self) -> bool:
        if os.environ.get(AUTH_ENV, "").strip() == NAME:
            return False
        uri = _tracking_uri()
        if origin(uri) is None or not Settings.from_env().sends_token(uri, uri):
            return False
        with self._lock:
            if not IapRequestHeaderProvider._warned:
                IapRequestHeaderProvider._warned = True
                _LOGGER.warning(
                    "mlflow-iap-auth: set %s=%s to send IAP tokens to %s; without it MLflow's requests carry "
                    "none and IAP answers 401",
                    AUTH_ENV,
                    NAME,
                    uri,
                )
        return False

    def request_headers(self) -> dict[str, str]:
        return {}
