"""Fakes for the mlflow-iap-auth tests: Google's OAuth token and IAM Credentials endpoints, IAP in front
of a real `mlflow server`, and a GCE metadata server. Nothing here reaches Google.

The client under test runs in a subprocess whose HTTPS_PROXY is `FakeGoogle`, an intercepting proxy on
127.0.0.1 that terminates TLS for the few host names it fakes (certificates from a throwaway CA that
REQUESTS_CA_BUNDLE trusts) and refuses every other host. So the plugin runs with Google's real
endpoint URLs and the real MLflow client, without a test-only branch.

The fake IAP checks what real IAP checks for a service-account JWT: an RS256 signature by a key of the
service account named in `iss`/`sub` (the keys only the fake signJwt endpoint holds), `aud` equal to
`https://HOST/*` for the host it was reached at (the load balancer's domain, or the run.app host of
IAP on the Cloud Run service), `exp` not passed, a lifetime of at most an hour, and that the service
account may use the app (roles/iap.httpsResourceAccessor). Then it forwards to the MLflow server.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import site
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.server.pg import free_port

REPO = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO / "client"
EXAMPLE = CLIENT_DIR / "examples" / "log_run.py"

# The package's modules, for the in-process unit tests (the end-to-end tests use an installed copy).
sys.path.insert(0, str(CLIENT_DIR))

MLFLOW_HOST = "mlflow.example.test"  # behind the load balancer (front_door.mode = "load_balancer")
# IAP on the Cloud Run service itself (front_door.mode = "direct_iap"): its deterministic run.app host.
RUN_APP_HOST = "mlflow-server-123456789012.europe-west1.run.app"
# Origins that are not the IAP application: an artifact store on another host, and the tracking
# server's own host on another port. They serve files and record what each request carried.
OTHER_HOST = "artifacts.example.test"
OTHER_PORT = "8443"
OAUTH_HOST = "oauth2.googleapis.com"
IAM_HOST = "iamcredentials.googleapis.com"
PROJECT = "demo-project"
CLIENT_SA = f"mlflow-client@{PROJECT}.iam.gserviceaccount.com"  # what humans' scripts impersonate
RUNNER_SA = f"trainer@{PROJECT}.iam.gserviceaccount.com"  # attached to the "VM" (fake metadata server)
OUTSIDER_SA = f"outsider@{PROJECT}.iam.gserviceaccount.com"  # exists, but may not use the app
ALICE = "alice@example.com"  # may impersonate CLIENT_SA
MALLORY = "mallory@example.com"  # may not
IAP_CLOCK_SKEW = 30
SERVER_START_TIMEOUT = 240


# --- JWTs, independent of google-auth (which the code under test uses) ---------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_rs256(claims: dict, key: rsa.RSAPrivateKey, kid: str) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def verify_rs256(token: str, public_keys: dict[str, rsa.RSAPublicKey]) -> tuple[dict, dict]:
    """(header, claims) of a JWT whose RS256 signature verifies with the key its `kid` names."""
    try:
        head, body, signature = token.split(".")
        header = json.loads(unb64url(head))
        claims = json.loads(unb64url(body))
        raw_signature = unb64url(signature)
    except ValueError as exc:
        raise ValueError(f"malformed JWT ({exc})") from exc
    if header.get("alg") != "RS256":
        raise ValueError(f"unexpected alg {header.get('alg')!r}")
    key = public_keys.get(header.get("kid", ""))
    if key is None:
        raise ValueError(f"unknown kid {header.get('kid')!r}")
    try:
        key.verify(raw_signature, f"{head}.{body}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except Exception as exc:  # cryptography's InvalidSignature
        raise ValueError("bad signature") from exc
    return header, claims


# --- TLS ---------------------------------------------------------------------------------------------


def make_tls(workdir: Path, hosts: list[str]) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (written to ca.pem) and a server context whose certificate covers `hosts`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlflow-iap-auth test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = workdir / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = workdir / "server-chain.pem"
    chain.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    key_path = workdir / "server-key.pem"
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key_path)
    return ca_path, context


# --- the fake Google + IAP ---------------------------------------------------------------------------


@dataclass
class ServiceAccount:
    email: str
    key: rsa.RSAPrivateKey
    kid: str


@dataclass
class ElsewhereRecord:
    """A request that reached an origin other than the IAP application, with its credential headers."""

    origin: str
    method: str
    path: str
    authorization: str | None
    proxy_authorization: str | None


@dataclass
class IapRecord:
    method: str
    path: str
    status: int
    identity: str | None = None
    reason: str | None = None
    token: str | None = None
    at: float = field(default_factory=time.time)


@dataclass
class SignRecord:
    principal: str
    target: str
    claims: dict | None
    status: int


def _google_error(code: int, status: str, message: str) -> tuple[int, dict, bytes]:
    body = {"error": {"code": code, "message": message, "status": status}}
    return code, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _json(body: dict, status: int = 200) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


class FakeGoogle:
    """State and behaviour of the fake oauth2, iamcredentials and IAP hosts (see the module docstring)."""

    CLIENT_SA = CLIENT_SA
    RUNNER_SA = RUNNER_SA
    OUTSIDER_SA = OUTSIDER_SA
    ALICE = ALICE
    MALLORY = MALLORY
    MLFLOW_URL = f"https://{MLFLOW_HOST}"
    AUDIENCE = f"https://{MLFLOW_HOST}/*"
    RUN_APP_URL = f"https://{RUN_APP_HOST}"
    RUN_APP_AUDIENCE = f"https://{RUN_APP_HOST}/*"
    OTHER_HOST_URL = f"https://{OTHER_HOST}"
    OTHER_PORT_URL = f"https://{MLFLOW_HOST}:{OTHER_PORT}"
    # The IAP applications in front of the one MLflow server, by host, with the `aud` each accepts.
    APPS: ClassVar[dict[str, str]] = {MLFLOW_HOST: AUDIENCE, RUN_APP_HOST: RUN_APP_AUDIENCE}

    def __init__(self, workdir: Path):
        self.ca_path, self.tls_context = make_tls(
            workdir, [MLFLOW_HOST, RUN_APP_HOST, OAUTH_HOST, IAM_HOST, OTHER_HOST]
        )
        self.hosts = {MLFLOW_HOST, RUN_APP_HOST, OAUTH_HOST, IAM_HOST, OTHER_HOST}
        # (host, port) pairs served as another origin than IAP's.
        self.elsewhere = {(OTHER_HOST, "443"), (MLFLOW_HOST, OTHER_PORT)}
        self.service_accounts = {
            email: ServiceAccount(
                email, rsa.generate_private_key(public_exponent=65537, key_size=2048), uuid.uuid4().hex
            )
            for email in (CLIENT_SA, RUNNER_SA, OUTSIDER_SA)
        }
        self.refresh_tokens = {f"refresh-{user}": f"user:{user}" for user in (ALICE, MALLORY)}
        # IAM policy: who holds roles/iam.serviceAccountTokenCreator on which service account.
        self.token_creators = {
            CLIENT_SA: {f"user:{ALICE}"},
            RUNNER_SA: {f"serviceAccount:{RUNNER_SA}"},
            OUTSIDER_SA: {f"user:{ALICE}"},
        }
        self.iap_accessors = {CLIENT_SA, RUNNER_SA}  # roles/iap.httpsResourceAccessor on the backend
        self.mlflow_backend: tuple[str, int] | None = None
        self.proxy_url = ""  # set once the servers run (the fake_google fixture)
        self.metadata_host = ""
        self._access_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.iap_log: list[IapRecord] = []
        self.elsewhere_log: list[ElsewhereRecord] = []
        self.sign_log: list[SignRecord] = []
        self.refused: list[str] = []

    @property
    def public_keys(self) -> dict[str, rsa.RSAPublicKey]:
        return {sa.kid: sa.key.public_key() for sa in self.service_accounts.values()}

    def issue_access_token(self, principal: str) -> str:
        token = f"ya29.fake-{uuid.uuid4().hex}"
        with self._lock:
            self._access_tokens[token] = principal
        return token

    def sign_as(self, email: str, claims: dict) -> str:
        """What signJwt would answer; for tests that need to forge or expire tokens."""
        sa = self.service_accounts[email]
        return sign_rs256(claims, sa.key, sa.kid)

    # Requests arriving through the proxy tunnel, by host.

    def route(
        self, host: str, method: str, path: str, headers, body: bytes, port: str = "443"
    ) -> tuple[int, dict, bytes]:
        if (host, port) in self.elsewhere:
            return self._elsewhere(f"https://{host}:{port}", method, path, headers)
        if host == OAUTH_HOST:
            return self._oauth_token(method, path, body)
        if host == IAM_HOST:
            return self._sign_jwt(method, path, headers, body)
        if host in self.APPS:
            return self._iap(self.APPS[host], method, path, headers, body)
        self.refused.append(f"{method} https://{host}{path}")
        return 404, {}, b"not faked"

    def _elsewhere(self, origin: str, method: str, path: str, headers) -> tuple[int, dict, bytes]:
        """An https file server that is not behind IAP: MLflow's http artifact listing (no files: the
        path is a file) and the file itself."""
        self.elsewhere_log.append(
            ElsewhereRecord(origin, method, path, headers.get("Authorization"), headers.get("Proxy-Authorization"))
        )
        if "?" in path:
            return _json({"files": []})
        return 200, {"Content-Type": "application/octet-stream"}, b"weights from another host\n"

    def _oauth_token(self, method: str, path: str, body: bytes) -> tuple[int, dict, bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if method != "POST" or path != "/token" or form.get("grant_type") != "refresh_token":
            self.refused.append(f"{method} https://{OAUTH_HOST}{path} {form.get('grant_type')}")
            return _json({"error": "unsupported_grant_type"}, 400)
        principal = self.refresh_tokens.get(form.get("refresh_token", ""))
        if principal is None:
            return _json({"error": "invalid_grant", "error_description": "Bad Request"}, 400)
        return _json({"access_token": self.issue_access_token(principal), "expires_in": 3599, "token_type": "Bearer"})

    def _principal(self, headers) -> str | None:
        auth = headers.get("Authorization", "")
        return self._access_tokens.get(auth[len("Bearer ") :]) if auth.startswith("Bearer ") else None

    def _sign_jwt(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        match = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^/:]+):signJwt", path)
        if method != "POST" or not match:
            self.refused.append(f"{method} https://{IAM_HOST}{path}")
            return _google_error(404, "NOT_FOUND", "not faked")
        target = unquote(match.group(1))
        principal = self._principal(headers)
        if principal is None:
            self.sign_log.append(SignRecord("?", target, None, 401))
            return _google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if principal not in self.token_creators.get(target, set()):
            self.sign_log.append(SignRecord(principal, target, None, 403))
            return _google_error(
                403,
                "PERMISSION_DENIED",
                "Permission 'iam.serviceAccounts.signJwt' denied on resource (or it may not exist).",
            )
        claims = json.loads(json.loads(body)["payload"])
        if not isinstance(claims.get("exp"), int) or claims["exp"] > time.time() + 12 * 3600:
            return _google_error(400, "INVALID_ARGUMENT", "exp must be an integer no more than 12 hours away")
        self.sign_log.append(SignRecord(principal, target, claims, 200))
        sa = self.service_accounts[target]
        return _json({"keyId": sa.kid, "signedJwt": sign_rs256(claims, sa.key, sa.kid)})

    def _iap(self, audience: str, method: str, path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        auth = headers.get("Proxy-Authorization") or headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

        def deny(status: int, reason: str, identity: str | None = None):
            self.iap_log.append(IapRecord(method, path, status, identity, reason, token))
            return status, {"Content-Type": "text/html"}, f"Invalid IAP credentials: {reason}".encode()

        if not token:
            return deny(401, "empty token")
        try:
            header, claims = verify_rs256(token, self.public_keys)
        except ValueError as exc:
            return deny(401, str(exc))
        sa = self.service_accounts.get(claims.get("iss", ""))
        now = time.time()
        if sa is None or claims.get("sub") != sa.email or header.get("kid") != sa.kid:
            return deny(401, "JWT iss/sub is not the service account whose key signed it")
        if claims.get("aud") != audience:
            return deny(401, f"JWT audience {claims.get('aud')!r} does not match {audience!r}")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int):
            return deny(401, "JWT needs integer iat and exp")
        if now > exp:
            return deny(401, "JWT expired", sa.email)
        if iat > now + IAP_CLOCK_SKEW or exp - iat > 3600:
            return deny(401, "JWT iat in the future or lifetime over an hour", sa.email)
        if sa.email not in self.iap_accessors:
            self.iap_log.append(IapRecord(method, path, 403, sa.email, "not an accessor", token))
            return 403, {"Content-Type": "text/html"}, b"You don't have access"
        status, reply_headers, reply = self._forward(method, path, headers, body, sa.email)
        self.iap_log.append(IapRecord(method, path, status, sa.email, None, token))
        return status, reply_headers, reply

    def _forward(self, method, path, headers, body, identity) -> tuple[int, dict, bytes]:
        assert self.mlflow_backend, "the MLflow server is not attached"
        host, port = self.mlflow_backend
        forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        forwarded["Host"] = f"{host}:{port}"
        forwarded["X-Goog-Authenticated-User-Email"] = f"accounts.google.com:{identity}"
        connection = http.client.HTTPConnection(host, port, timeout=120)
        try:
            connection.request(method, path, body=body or None, headers=forwarded)
            response = connection.getresponse()
            reply = response.read()
            reply_headers = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            return response.status, reply_headers, reply
        finally:
            connection.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    """An HTTP proxy that answers CONNECT for the faked hosts by terminating TLS itself."""

    protocol_version = "HTTP/1.1"
    tunnel_host: str | None = None
    tunnel_port: str = "443"
    _tls: ssl.SSLSocket | None = None

    def log_message(self, format, *args):
        pass

    @property
    def fake(self) -> FakeGoogle:
        return self.server.fake  # type: ignore[attr-defined]

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        if host not in self.fake.hosts or (port != "443" and (host, port) not in self.fake.elsewhere):
            self.fake.refused.append(f"CONNECT {self.path}")
            self.send_error(403, "host not faked")
            self.close_connection = True
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        try:
            tls = self.fake.tls_context.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        self._tls = tls
        self.rfile = tls.makefile("rb")
        self.wfile = tls.makefile("wb")
        self.tunnel_host = host
        self.tunnel_port = port
        self.close_connection = False

    def _dispatch(self):
        if self.tunnel_host is None:
            self.fake.refused.append(f"{self.command} {self.path} (not tunnelled)")
            self.send_error(400, "only CONNECT is proxied")
            return
        body = self._read_body()
        status, headers, payload = self.fake.route(
            self.tunnel_host, self.command, self.path, self.headers, body, self.tunnel_port
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch  # noqa: N815 (http.server's names)

    def finish(self):
        try:
            super().finish()
        finally:
            if self._tls is not None:
                self._tls.close()


class _MetadataHandler(BaseHTTPRequestHandler):
    """The GCE/Cloud Run/GKE metadata server of a workload running as RUNNER_SA."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        fake: FakeGoogle = self.server.fake  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        base = "/computeMetadata/v1/"
        status, body, kind = 200, b"", "application/text"
        if path == "/":
            pass
        elif not path.startswith(base) or self.headers.get("Metadata-Flavor") != "Google":
            status, body = 403, b"Missing Metadata-Flavor:Google header."
        else:
            rest = path[len(base) :]
            if rest == "project/project-id":
                body = PROJECT.encode()
            elif rest == "universe/universe-domain":
                body = b"googleapis.com"
            elif rest in ("instance/service-accounts/default/", f"instance/service-accounts/{RUNNER_SA}/"):
                kind = "application/json"
                body = json.dumps(
                    {
                        "email": RUNNER_SA,
                        "aliases": ["default"],
                        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    }
                ).encode()
            elif rest in ("instance/service-accounts/default/token", f"instance/service-accounts/{RUNNER_SA}/token"):
                kind = "application/json"
                token = fake.issue_access_token(f"serviceAccount:{RUNNER_SA}")
                body = json.dumps({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}).encode()
            else:
                fake.refused.append(f"GET metadata {self.path}")
                status, body = 404, b"not found"
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(handler, fake: FakeGoogle) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.fake = fake  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- a real MLflow server ------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    process: subprocess.Popen
    port: int
    root: Path
    log: Path
    _ready: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not self._ready:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self._ready = requests.get(f"{self.url}/health", timeout=2).status_code == 200
            except requests.RequestException:
                pass
            if not self._ready:
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server not up after {SERVER_START_TIMEOUT}s:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.25)

    def api(self, endpoint: str, **params) -> dict:
        """GET /api/2.0/mlflow/<endpoint> directly, behind IAP's back."""
        response = requests.get(f"{self.url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # our own process group: server and workers
                self.process.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> MlflowServer:
    """Started first and waited for last, so it boots while the plugin is being installed."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GOOGLE_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    log = root / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                (root / "artifacts").as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MlflowServer(process, port, root, log)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory) -> Path:
    """A venv with `pip install ./client` in it, seeing this interpreter's packages (mlflow, google-auth).

    `venv --system-site-packages` would expose the *base* interpreter's site-packages, not those of the
    venv pytest runs in, so a .pth file adds the running interpreter's site-packages instead.
    """
    work = tmp_path_factory.mktemp("plugin")
    source = work / "client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "_parent_site_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--no-input",
            str(source),
        ],
        capture_output=True,
        text=True,
        cwd=work,
    )
    assert install.returncode == 0, f"pip install ./client failed:\n{install.stdout}\n{install.stderr}"
    return venv


@pytest.fixture(scope="session")
def fake_google(tmp_path_factory, mlflow_server, plugin_venv):
    fake = FakeGoogle(tmp_path_factory.mktemp("fake-google"))
    proxy = _serve(_ProxyHandler, fake)
    metadata = _serve(_MetadataHandler, fake)
    fake.proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    fake.metadata_host = f"127.0.0.1:{metadata.server_address[1]}"
    mlflow_server.wait_ready()
    fake.mlflow_backend = ("127.0.0.1", mlflow_server.port)
    yield fake
    for server in (proxy, metadata):
        server.shutdown()
        server.server_close()


@dataclass
class ClientWorld:
    """One test's view: the fakes, the MLflow server, the installed plugin, and a clean HOME."""

    fake: FakeGoogle
    mlflow: MlflowServer
    venv: Path
    home: Path
    adc: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def login_as(self, user: str) -> None:
        """What `gcloud auth application-default login` leaves behind: a refresh token, not a key."""
        self.adc = self.home / "adc.json"
        self.adc.write_text(
            json.dumps(
                {
                    "type": "authorized_user",
                    "client_id": "fake-adc-client.apps.googleusercontent.com",
                    "client_secret": "fake-adc-secret",
                    "refresh_token": f"refresh-{user}",
                }
            )
        )

    def on_gce(self) -> None:
        """Run as the workload's attached service account, found through the metadata server."""
        self.extra_env.update(
            GCE_METADATA_HOST=self.fake.metadata_host, GCE_METADATA_IP=self.fake.metadata_host, NO_GCE_CHECK=None
        )

    def env(self, **overrides: str | None) -> dict[str, str]:
        env = {
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "CLOUDSDK_CONFIG": str(self.home / "gcloud"),
            "LANG": "C.UTF-8",
            "HTTPS_PROXY": self.fake.proxy_url,
            "https_proxy": self.fake.proxy_url,
            "NO_PROXY": "",
            "no_proxy": "",
            "REQUESTS_CA_BUNDLE": str(self.fake.ca_path),
            "NO_GCE_CHECK": "true",  # a workstation: no metadata server
            "MLFLOW_TRACKING_URI": self.fake.MLFLOW_URL,
            "MLFLOW_TRACKING_AUTH": "iap",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
        if self.adc:
            env["GOOGLE_APPLICATION_CREDENTIALS"] = str(self.adc)
        for source in (self.extra_env, overrides):
            for name, value in source.items():
                if value is None:
                    env.pop(name, None)
                else:
                    env[name] = value
        return env

    def run(self, *args: str, timeout: float = 300, **env: str | None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args], env=self.env(**env), cwd=self.home, capture_output=True, text=True, timeout=timeout
        )

    def python(self, *args: str, **env: str | None) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "python"), *args, **env)

    def token_cli(self, *args: str, **env: str | None) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "mlflow-iap-token"), *args, **env)

    def https(self, method: str, path: str, base: str | None = None, **kwargs) -> requests.Response:
        """A request to a faked host (default: the load balancer's) from the test process (curl's role),
        through the fake proxy."""
        return requests.request(
            method,
            f"{base or self.fake.MLFLOW_URL}{path}",
            proxies={"https": self.fake.proxy_url},
            verify=str(self.fake.ca_path),
            timeout=60,
            **kwargs,
        )


@pytest.fixture
def world(fake_google, mlflow_server, plugin_venv, tmp_path) -> ClientWorld:
    fake_google.reset()
    home = tmp_path / "home"
    home.mkdir()
    return ClientWorld(fake_google, mlflow_server, plugin_venv, home)


@pytest.fixture
def rs256_verifier():
    return verify_rs256
