"""In-process tests of mlflow_iap_auth: settings, audience, token caching and refresh, signer choice.

No network: signing is a fake, or google-auth signing locally with a key made here in memory.
"""

from __future__ import annotations

import re
import threading
import time
import tomllib
from pathlib import Path

import google.auth
import google.auth.exceptions
import google.oauth2.credentials
import google.oauth2.service_account
import pytest
import requests
import requests.auth
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, strategies as st

from mlflow_iap_auth._auth import (
    MAX_TOKEN_LIFETIME,
    GoogleAuthSigner,
    IapAuthError,
    IapTokenSource,
    Settings,
    one_line,
)

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
SA = "mlflow-client@demo-project.iam.gserviceaccount.com"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSigner:
    """Records what it is asked to sign; `fail` makes the next signings raise like a 403 would."""

    def __init__(self, email: str = SA, delay: float = 0.0):
        self.email = email
        self.delay = delay
        self.signed: list[dict] = []
        self.fail = False

    def sign(self, claims) -> str:
        if self.fail:
            raise IapAuthError("permission denied signing a JWT")
        time.sleep(self.delay)
        self.signed.append(dict(claims))
        return f"jwt-{len(self.signed)}"


def source_with(signer: FakeSigner, clock: FakeClock) -> IapTokenSource:
    return IapTokenSource(signer_factory=lambda service_account: signer, clock=clock)


# --- settings --------------------------------------------------------------------------------------------


def test_defaults_need_no_configuration():
    settings = Settings.from_env({})
    assert settings == Settings(None, None, (), MAX_TOKEN_LIFETIME)
    assert settings.audience_for("https://mlflow.example.com") == "https://mlflow.example.com/*"


@pytest.mark.parametrize(
    ("uri", "audience"),
    [
        ("https://mlflow.example.com/", "https://mlflow.example.com/*"),
        ("https://MLflow.Example.com:443/some/prefix", "https://mlflow.example.com/*"),
        ("https://mlflow.example.com:8443", "https://mlflow.example.com:8443/*"),
        # IAP on the Cloud Run service (front_door.mode = "direct_iap"): the run.app URL is the app's URL.
        (
            "https://mlflow-server-123456789012.europe-west1.run.app",
            "https://mlflow-server-123456789012.europe-west1.run.app/*",
        ),
        ("https://user:pw@mlflow.example.com", "https://mlflow.example.com/*"),
    ],
)
def test_audience_is_the_host_with_a_wildcard_path(uri, audience):
    assert Settings().audience_for(uri) == audience


@given(st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){1,3}", fullmatch=True), st.text(max_size=30))
def test_audience_ignores_the_path(host, path):
    assert Settings().audience_for(f"https://{host}/{path}") == f"https://{host}/*"


def test_audience_override_wins():
    settings = Settings.from_env({"MLFLOW_IAP_AUDIENCE": "https://other.example.com/*"})
    assert settings.audience_for("https://mlflow.example.com") == "https://other.example.com/*"


TRACKING = "https://mlflow.example.com"


@pytest.mark.parametrize(
    ("url", "tracking_uri", "hosts", "sends"),
    [
        ("https://mlflow.example.com/api/2.0/mlflow/runs/create", TRACKING, "", True),
        ("https://MLFLOW.example.com:443/get-artifact?path=x", TRACKING, "", True),
        ("https://mlflow.example.com./api", TRACKING, "", True),
        # Another origin than the tracking server's gets nothing: another host, another port, plain http.
        ("https://artifacts.example.com/mlflow-artifacts/artifacts/0/model.pkl", TRACKING, "", False),
        ("https://storage.googleapis.com/bucket/model.pkl?X-Goog-Signature=1", TRACKING, "", False),
        ("https://mlflow.example.com:8443/api", TRACKING, "", False),
        ("http://mlflow.example.com/api", TRACKING, "", False),
        ("https://mlflow.example.com.evil.test/api", TRACKING, "", False),
        ("https://evil.test/?u=https://mlflow.example.com", TRACKING, "", False),
        # Nothing at all when the tracking server is not an https one.
        ("http://127.0.0.1:5000/api", "http://127.0.0.1:5000", "", False),
        ("https://mlflow.example.com/api", "file:///tmp/mlruns", "", False),
        ("https://mlflow.example.com/api", "sqlite:///mlflow.db", "", False),
        ("https://mlflow.example.com/api", "databricks", "", False),
        # MLFLOW_IAP_HOSTS lists the IAP applications' hosts (port 443 unless written) instead.
        ("https://other.example.com/api", TRACKING, "mlflow.example.com, other.example.com", True),
        ("https://mlflow.example.com/api", TRACKING, "other.example.com", False),
        ("https://other.example.com:8443/api", TRACKING, "other.example.com", False),
        ("https://other.example.com:8443/api", TRACKING, "other.example.com:8443", True),
    ],
)
def test_the_token_goes_only_to_the_iap_applications_origin(url, tracking_uri, hosts, sends):
    assert Settings.from_env({"MLFLOW_IAP_HOSTS": hosts}).sends_token(url, tracking_uri) is sends


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"MLFLOW_IAP_TOKEN_LIFETIME": "3601"}, "MLFLOW_IAP_TOKEN_LIFETIME"),
        ({"MLFLOW_IAP_TOKEN_LIFETIME": "0"}, "MLFLOW_IAP_TOKEN_LIFETIME"),
        ({"MLFLOW_IAP_TOKEN_LIFETIME": "1h"}, "MLFLOW_IAP_TOKEN_LIFETIME"),
        ({"MLFLOW_IAP_SERVICE_ACCOUNT": "not-an-email"}, "MLFLOW_IAP_SERVICE_ACCOUNT"),
        ({"MLFLOW_IAP_HOSTS": "https://mlflow.example.com"}, "MLFLOW_IAP_HOSTS"),
        ({"MLFLOW_IAP_HOSTS": "mlflow.example.com/api"}, "MLFLOW_IAP_HOSTS"),
        ({"MLFLOW_IAP_HOSTS": "mlflow.example.com:http"}, "MLFLOW_IAP_HOSTS"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_variable(env, mentions):
    with pytest.raises(IapAuthError) as caught:
        Settings.from_env(env)
    assert mentions in str(caught.value) and "\n" not in str(caught.value)


@given(st.text())
def test_error_messages_are_always_one_line(text):
    message = str(IapAuthError(text))
    assert "\n" not in message and "\r" not in message and message.startswith("mlflow-iap-auth:")
    assert len(one_line(text * 50)) <= 600


# --- the token cache ------------------------------------------------------------------------------------


def test_token_claims_name_the_service_account_and_audience():
    signer, clock = FakeSigner(), FakeClock()
    assert source_with(signer, clock).token("https://mlflow.example.com/*", SA) == "jwt-1"
    issued = int(clock.now)
    assert signer.signed == [
        {"iss": SA, "sub": SA, "aud": "https://mlflow.example.com/*", "iat": issued, "exp": issued + 3600}
    ]


def test_token_is_cached_then_signed_again_five_minutes_before_expiry():
    signer, clock = FakeSigner(), FakeClock()
    source = source_with(signer, clock)
    audience = "https://mlflow.example.com/*"
    assert source.token(audience) == "jwt-1"
    clock.now += 3600 - 301
    assert source.token(audience) == "jwt-1"
    clock.now += 1
    assert source.token(audience) == "jwt-2"
    assert len(signer.signed) == 2
    assert signer.signed[1]["iat"] == int(clock.now)


def test_tokens_are_cached_per_audience():
    signer, clock = FakeSigner(), FakeClock()
    source = source_with(signer, clock)
    assert source.token("https://a.example.com/*") == "jwt-1"
    assert source.token("https://b.example.com/*") == "jwt-2"
    assert source.token("https://a.example.com/*") == "jwt-1"


def test_short_lifetimes_refresh_a_second_early():
    signer, clock = FakeSigner(), FakeClock(1_800_000_000.0)
    source = source_with(signer, clock)
    assert source.token("aud", lifetime=4) == "jwt-1"
    clock.now += 2.9
    assert source.token("aud", lifetime=4) == "jwt-1"
    clock.now += 0.1
    assert source.token("aud", lifetime=4) == "jwt-2"


def test_a_failed_refresh_keeps_the_unexpired_token_then_raises_once_it_expires(caplog):
    signer, clock = FakeSigner(), FakeClock()
    source = source_with(signer, clock)
    assert source.token("aud") == "jwt-1"
    signer.fail = True
    clock.now += 3600 - 100
    assert source.token("aud") == "jwt-1"
    assert "using the current IAP token" in caplog.text
    clock.now += 100
    with pytest.raises(IapAuthError):
        source.token("aud")


def test_concurrent_callers_sign_once():
    signer, clock = FakeSigner(delay=0.2), FakeClock()
    source = source_with(signer, clock)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(source.token("aud"))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["jwt-1"] * 16
    assert len(signer.signed) == 1


def test_a_signer_that_cannot_be_made_is_retried_next_time():
    attempts = []

    def factory(service_account):
        attempts.append(service_account)
        if len(attempts) == 1:
            raise IapAuthError("no Google credentials found")
        return FakeSigner()

    source = IapTokenSource(signer_factory=factory, clock=FakeClock())
    with pytest.raises(IapAuthError):
        source.token("aud", SA)
    assert source.token("aud", SA) == "jwt-1"
    assert attempts == [SA, SA]


# --- choosing how to sign, from Application Default Credentials -----------------------------------------


def _adc(monkeypatch, credentials=None, error=None):
    def fake_default(scopes=None, **_):
        if error:
            raise error
        return credentials, "demo-project"

    monkeypatch.setattr(google.auth, "default", fake_default)


def test_no_credentials_is_a_one_line_error_that_says_what_to_do(monkeypatch):
    _adc(monkeypatch, error=google.auth.exceptions.DefaultCredentialsError("Your default credentials\nwere not found"))
    with pytest.raises(IapAuthError) as caught:
        GoogleAuthSigner()
    message = str(caught.value)
    assert "\n" not in message
    assert "no Google credentials found" in message and "gcloud auth application-default login" in message


def test_user_credentials_alone_cannot_sign_and_the_error_names_the_setting(monkeypatch):
    _adc(monkeypatch, google.oauth2.credentials.Credentials(token="user-token"))
    with pytest.raises(IapAuthError, match="MLFLOW_IAP_SERVICE_ACCOUNT"):
        GoogleAuthSigner()


def test_user_credentials_sign_as_the_configured_service_account(monkeypatch):
    _adc(monkeypatch, google.oauth2.credentials.Credentials(token="user-token"))
    signer = GoogleAuthSigner(SA)
    assert signer.email == SA and not signer._sign_locally


def _service_account_credentials():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {
        "type": "service_account",
        "client_email": SA,
        "private_key": pem.decode(),
        "private_key_id": "key-1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return google.oauth2.service_account.Credentials.from_service_account_info(info), key


def test_credentials_holding_a_key_sign_locally_with_its_key_id(monkeypatch, rs256_verifier):
    credentials, key = _service_account_credentials()
    _adc(monkeypatch, credentials)
    source = IapTokenSource(clock=time.time)
    token = source.token("https://mlflow.example.com/*")
    header, claims = rs256_verifier(token, {"key-1": key.public_key()})
    assert header["kid"] == "key-1"
    assert claims["iss"] == claims["sub"] == SA and claims["aud"] == "https://mlflow.example.com/*"
    assert claims["exp"] - claims["iat"] == 3600


# --- the MLflow plugin ----------------------------------------------------------------------------------


@pytest.fixture
def plugin(monkeypatch):
    from mlflow_iap_auth import plugin as module

    for name in ("MLFLOW_IAP_SERVICE_ACCOUNT", "MLFLOW_IAP_AUDIENCE", "MLFLOW_IAP_HOSTS", "MLFLOW_IAP_TOKEN_LIFETIME"):
        monkeypatch.delenv(name, raising=False)
    signer = FakeSigner()
    source = source_with(signer, FakeClock())
    monkeypatch.setattr(module, "default_source", lambda: source)
    return module, signer


def prepared(url: str) -> requests.PreparedRequest:
    return requests.Request("GET", url).prepare()


def test_the_auth_plugin_adds_the_token_to_the_tracking_servers_requests_only(plugin, monkeypatch):
    plugin, signer = plugin
    monkeypatch.setattr(plugin, "_tracking_uri", lambda: "https://mlflow.example.com/")
    monkeypatch.setenv("MLFLOW_IAP_SERVICE_ACCOUNT", SA)
    auth = plugin.IapRequestAuthProvider().get_auth()
    tracking = auth(prepared("https://mlflow.example.com/api/2.0/mlflow/runs/create"))
    assert tracking.headers["Proxy-Authorization"] == "Bearer jwt-1"
    assert signer.signed[0]["aud"] == "https://mlflow.example.com/*"
    for elsewhere in (
        "https://artifacts.example.com/mlflow-artifacts/artifacts/m.pkl",
        "https://mlflow.example.com:8443/x",
    ):
        request = auth(prepared(elsewhere))
        assert "Proxy-Authorization" not in request.headers and "Authorization" not in request.headers
    assert len(signer.signed) == 1, "nothing is even signed for another host"


def test_the_auth_plugin_is_the_one_mlflow_finds_for_mlflow_tracking_auth_iap(plugin):
    plugin, _ = plugin
    assert plugin.IapRequestAuthProvider().get_name() == "iap"
    assert isinstance(plugin.IapRequestAuthProvider().get_auth(), requests.auth.AuthBase)


def test_the_header_plugin_adds_nothing_and_warns_once_without_mlflow_tracking_auth(plugin, monkeypatch, caplog):
    plugin, signer = plugin
    monkeypatch.setattr(plugin.IapRequestHeaderProvider, "_warned", False)
    monkeypatch.setattr(plugin, "_tracking_uri", lambda: "https://mlflow.example.com")
    monkeypatch.delenv("MLFLOW_TRACKING_AUTH", raising=False)
    provider = plugin.IapRequestHeaderProvider()
    assert [provider.in_context(), provider.in_context()] == [False, False]
    assert provider.request_headers() == {}
    [warning] = [r.getMessage() for r in caplog.records if "mlflow-iap-auth" in r.getMessage()]
    assert "set MLFLOW_TRACKING_AUTH=iap to send IAP tokens to https://mlflow.example.com" in warning
    assert signer.signed == []


@pytest.mark.parametrize(("uri", "auth"), [("https://mlflow.example.com", "iap"), ("http://127.0.0.1:5000", "")])
def test_the_header_plugin_is_silent_when_configured_or_not_an_iap_server(plugin, monkeypatch, caplog, uri, auth):
    plugin, _ = plugin
    monkeypatch.setattr(plugin.IapRequestHeaderProvider, "_warned", False)
    monkeypatch.setattr(plugin, "_tracking_uri", lambda: uri)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", auth)
    assert plugin.IapRequestHeaderProvider().in_context() is False
    assert not [r for r in caplog.records if "mlflow-iap-auth" in r.getMessage()]


def test_plugin_reads_mlflows_own_tracking_uri(plugin, monkeypatch):
    import mlflow

    plugin, _ = plugin
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://from-env.example.com")
    assert plugin._tracking_uri() == mlflow.get_tracking_uri() == "https://from-env.example.com"


def test_package_declares_the_entry_point_and_the_command():
    project = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())
    assert project["project"]["name"] == "mlflow-iap-auth"
    assert project["project"]["entry-points"]["mlflow.request_auth_provider"] == {
        "iap": "mlflow_iap_auth.plugin:IapRequestAuthProvider"
    }
    assert project["project"]["entry-points"]["mlflow.request_header_provider"] == {
        "iap": "mlflow_iap_auth.plugin:IapRequestHeaderProvider"
    }
    assert project["project"]["scripts"] == {"mlflow-iap-token": "mlflow_iap_auth.cli:main"}
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"


@pytest.mark.parametrize(
    "url, sends",
    [
        ("https://mlflow.example.com/api", True),
        ("https://other.example.com/api", False),
        ("https://MLFLOW.example.com:443/x", True),
        ("https://mlflow.example.com:8443/x", False),
    ],
)
def test_an_audience_override_keeps_its_token_to_the_audiences_own_origin(url, sends):
    settings = Settings.from_env({"MLFLOW_IAP_AUDIENCE": "https://mlflow.example.com/*"})
    assert settings.sends_token(url, "https://tracking-alias.example.com") is sends


def test_the_plugin_accepts_the_servers_mlflow_minor_and_no_other():
    """A newer client may call REST APIs the pinned server lacks: pip must not pull the next minor."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())
    (skinny,) = [Requirement(d) for d in project["project"]["dependencies"] if d.startswith("mlflow-skinny")]
    requirements = (CLIENT_DIR.parent / "docker" / "requirements.txt").read_text()
    server = Version(re.search(r"^mlflow==([\d.]+)", requirements, re.M).group(1))
    assert server in skinny.specifier
    assert Version(f"{server.major}.{server.minor}.99") in skinny.specifier
    assert Version(f"{server.major}.{server.minor + 1}.0") not in skinny.specifier
    assert Version(f"{server.major}.{server.minor - 1}.0") not in skinny.specifier
