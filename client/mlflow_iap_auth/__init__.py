"""Keyless MLflow client access to a tracking server behind Google Cloud Identity-Aware Proxy.

Installing the package is the whole setup: MLflow discovers `IapRequestHeaderProvider` through the
`mlflow.request_header_provider` entry point and adds a service-account-signed JWT to every request
to an https:// tracking URI. `get_token()` gives the same token to other HTTP clients; `check()` asks
the server once, failing in seconds with one line, before a script starts logging.
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

__all__ = ["HEADER", "check", "IapAuthError", "IapTokenSource", "Settings", "default_source", "get_token"]
__version__ = "0.1.0"
