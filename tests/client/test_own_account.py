"""A person's script signs as that person's own client account, picked from the deployment's map.

The token endpoint is faked on loopback (the refresh that tells whose credentials these are); nothing
here reaches Google.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import google.auth
import google.oauth2.credentials
import pytest

from mlflow_iap_auth._auth import GoogleAuthSigner, IapAuthError
from mlflow_iap_auth._own_account import (
    ENV_SERVICE_ACCOUNTS,
    IDENTITY_SCOPES,
    OwnAccountError,
    accounts_from_env,
    caller_email,
    own_account,
)

ADA = "mlflow-c-1111111111@demo-project.iam.gserviceaccount.com"
BOB = "mlflow-c-2222222222@demo-project.iam.gserviceaccount.com"
TEAM = "mlflow-c-3333333333@demo-project.iam.gserviceaccount.com"
ACCOUNTS = {"user:ada@example.com": ADA, "user:Bob@Example.com": BOB, "group:ml-team@example.com": TEAM}


def unsigned_jwt(claims: dict) -> str:
    part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{part('sig')}"


@pytest.fixture
def token_endpoint():
    """Google's token endpoint for a refresh-token grant: an ID token naming `who` when openid is asked."""
    seen: list[dict] = []
    state = {"who": "ada@example.com"}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            seen.append(form)
            body = {"access_token": "at", "expires_in": 3600, "token_type": "Bearer"}
            if "openid" in form.get("scope", [""])[0].split():
                body["id_token"] = unsigned_jwt({"email": state["who"], "iss": "https://accounts.google.com"})
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token", seen, state
    server.shutdown()


def user_credentials(token_uri: str) -> google.oauth2.credentials.Credentials:
    return google.oauth2.credentials.Credentials(
        token="user-token", refresh_token="rt", token_uri=token_uri, client_id="cid", client_secret="cs"
    )


def test_the_caller_gets_their_own_account_whatever_the_case_of_the_email():
    assert own_account(ACCOUNTS, "ada@example.com") == ADA
    assert own_account(ACCOUNTS, "bob@example.com") == BOB


def test_a_caller_without_an_account_is_told_what_to_do_on_one_line():
    with pytest.raises(OwnAccountError) as caught:
        own_account(ACCOUNTS, "mallory@example.com")
    message = str(caught.value)
    assert (
        "no account for user:mallory@example.com" in message
        and "client_impersonators" in message
        and "\n" not in message
    )


@pytest.mark.parametrize(
    "raw", ["not json", "[]", "{}", '{"user:a@example.com": 3}', '{"user:a@example.com": "no-email"}']
)
def test_a_map_that_is_not_the_outputs_is_refused_naming_the_variable(raw):
    with pytest.raises(OwnAccountError, match=ENV_SERVICE_ACCOUNTS):
        accounts_from_env({ENV_SERVICE_ACCOUNTS: raw})


def test_without_the_map_nothing_is_picked():
    assert accounts_from_env({}) is None


def test_the_callers_email_comes_from_an_id_token_of_their_own_refresh_token(token_endpoint):
    uri, seen, _ = token_endpoint
    assert caller_email(user_credentials(uri)) == "ada@example.com"
    assert seen[-1]["refresh_token"] == ["rt"] and seen[-1]["scope"] == [" ".join(IDENTITY_SCOPES)]


def test_a_person_signs_as_their_own_account_from_the_map(token_endpoint, monkeypatch):
    uri, _, state = token_endpoint
    monkeypatch.setattr(google.auth, "default", lambda scopes=None, **_: (user_credentials(uri), "demo-project"))
    monkeypatch.delenv("MLFLOW_IAP_SERVICE_ACCOUNT", raising=False)
    monkeypatch.setenv(ENV_SERVICE_ACCOUNTS, json.dumps(ACCOUNTS))
    assert GoogleAuthSigner().email == ADA
    state["who"] = "bob@example.com"
    assert GoogleAuthSigner().email == BOB
    state["who"] = "mallory@example.com"
    with pytest.raises(IapAuthError, match="no account for user:mallory@example.com"):
        GoogleAuthSigner()


def test_an_explicit_account_still_wins_over_the_map(token_endpoint, monkeypatch):
    uri, seen, _ = token_endpoint
    monkeypatch.setattr(google.auth, "default", lambda scopes=None, **_: (user_credentials(uri), "demo-project"))
    monkeypatch.setenv(ENV_SERVICE_ACCOUNTS, json.dumps(ACCOUNTS))
    assert GoogleAuthSigner(TEAM).email == TEAM
    assert not seen
