"""Which client service account a person's script signs as: their own.

The deployment gives every member of `client_impersonators` an account of its own, so that the
server, which records the verified identity, tells people apart. The project stack's
`client_service_accounts` output maps each member to its account; everyone exports the same map as
MLFLOW_IAP_SERVICE_ACCOUNTS, and the plugin picks the entry of the person whose Application Default
Credentials these are (`gcloud auth application-default login`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import google.auth.exceptions
import google.auth.jwt
import google.auth.transport.requests
import google.oauth2.credentials

ENV_SERVICE_ACCOUNTS = "MLFLOW_IAP_SERVICE_ACCOUNTS"
# Enough to learn who the refresh token belongs to (an ID token carries the e-mail), and no more.
IDENTITY_SCOPES = ("openid", "https://www.googleapis.com/auth/userinfo.email")


class OwnAccountError(Exception):
    """A one-line reason why the caller's own account could not be picked."""


def accounts_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The member -> account map of MLFLOW_IAP_SERVICE_ACCOUNTS, or None when it is not set."""
    raw = (os.environ if environ is None else environ).get(ENV_SERVICE_ACCOUNTS, "").strip()
    if not raw:
        return None
    try:
        accounts = json.loads(raw)
    except ValueError:
        accounts = None
    if (
        not isinstance(accounts, dict)
        or not accounts
        or not all(isinstance(k, str) and isinstance(v, str) and "@" in v for k, v in accounts.items())
    ):
        raise OwnAccountError(
            f"{ENV_SERVICE_ACCOUNTS} must be the JSON object the `client_service_accounts` output prints "
            '({"user:you@example.com": "ACCOUNT@PROJECT.iam.gserviceaccount.com", ...})'
        )
    return accounts


def own_account(accounts: Mapping[str, str], caller_email: str) -> str:
    """The account of `user:<caller_email>` (IAM compares e-mails without case)."""
    wanted = f"user:{caller_email}".lower()
    for member, account in accounts.items():
        if member.lower() == wanted:
            return account
    raise OwnAccountError(
        f"{ENV_SERVICE_ACCOUNTS} has no account for user:{caller_email} (it lists {', '.join(sorted(accounts))}); "
        "ask for yourself to be added to client_impersonators, or set MLFLOW_IAP_SERVICE_ACCOUNT to a group's account"
    )


def caller_email(credentials: google.oauth2.credentials.Credentials) -> str:
    """Whose user credentials these are: the `email` of an ID token minted with their refresh token.

    The token comes straight from the credentials' own token endpoint over TLS, so its claims are
    read without verifying the signature (as google-auth does for the ID token of a refresh).
    """
    account: str | None = getattr(credentials, "account", None)
    if account:
        return account
    identity = google.oauth2.credentials.Credentials(
        token=None,
        refresh_token=credentials.refresh_token,
        token_uri=credentials.token_uri,
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        scopes=list(IDENTITY_SCOPES),
    )
    try:
        identity.refresh(google.auth.transport.requests.Request())
    except (google.auth.exceptions.RefreshError, google.auth.exceptions.TransportError) as exc:
        raise OwnAccountError(f"could not learn who is signed in to pick their account: {exc}") from exc
    claims = google.auth.jwt.decode(identity.id_token, verify=False) if identity.id_token else {}
    if not claims.get("email"):
        raise OwnAccountError(
            "the signed-in user's e-mail is unknown (no ID token); run `gcloud auth application-default login` "
            "again, or set MLFLOW_IAP_SERVICE_ACCOUNT"
        )
    email: str = claims["email"]
    return email


def own_account_for(credentials: object, environ: Mapping[str, str] | None = None) -> str | None:
    """The caller's own account when MLFLOW_IAP_SERVICE_ACCOUNTS is set and these are a person's
    credentials; None otherwise (a workload signs as its attached account)."""
    accounts = accounts_from_env(environ)
    if accounts is None or not isinstance(credentials, google.oauth2.credentials.Credentials):
        return None
    return own_account(accounts, caller_email(credentials))
