"""Keyless MLflow client access to a tracking server behind Google Cloud Identity-Aware Proxy.

Install the package and set MLFLOW_TRACKING_AUTH=iap: MLflow then finds `IapRequestAuthProvider`
through the `mlflow.request_auth_provider` entry point, and each request it sends to the https://
tracking server (that origin only) carries a service-account-signed JWT; requests to any other host
carry none. `get_token()` gives the same token to other HTTP clients; `check()` asks the server once,
failing in seconds with one line, before a script starts logging.
"""

from mlflow_iap_auth._auth import (
    HEADER,
    IapAuthError,
    IapTokenSource,
    Settings,
    default_source,
    get_token,
)
from mlflow_iap_auth.preflight import check

__all__ = ["HEADER", "IapAuthError", "IapTokenSource", "Settings", "check", "default_source", "get_token"]
__version__ = "0.1.0"
