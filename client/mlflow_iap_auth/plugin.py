"""The MLflow request-header-provider plugin (entry point group `mlflow.request_header_provider`).

MLflow asks every registered provider, before each REST call, whether it is `in_context()` and, if
so, for `request_headers()`. A provider is not told the URL, so this one reads the tracking URI the
way MLflow does (`mlflow.set_tracking_uri()`, else MLFLOW_TRACKING_URI) and acts only for https://
URIs (and, when MLFLOW_IAP_HOSTS is set, only for the hosts listed there). The JWT's audience is
bound to that host, so it is worthless to any other IAP application. Artifact uploads and downloads
proxied by the tracking server (mlflow-artifacts:/) use the same host and get the same header.

MLflow logs an exception raised here as a warning and sends the request without the header; the
exception's message is the one line that says what to fix.
"""

from __future__ import annotations

from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from mlflow_iap_auth._auth import HEADER, Settings, default_source


def _tracking_uri() -> str:
    import mlflow.tracking  # imported late: MLflow loads this module while it is itself importing

    return mlflow.tracking.get_tracking_uri() or ""


class IapRequestHeaderProvider(RequestHeaderProvider):
    """Adds `Proxy-Authorization: Bearer <service-account JWT>` for an IAP-protected tracking server."""

    def in_context(self) -> bool:
        uri = _tracking_uri()
        if not uri.lower().startswith("https://"):
            return False
        return Settings.from_env().applies_to(uri)

    def request_headers(self) -> dict[str, str]:
        uri = _tracking_uri()
        settings = Settings.from_env()
        token = default_source().token(
            settings.audience_for(uri), settings.service_account, settings.token_lifetime
        )
        return {HEADER: f"Bearer {token}"}
