"""A local stand-in for the metadata server Cloud Run gives a container: the one Google endpoint the
image talks to. google-auth finds it through GCE_METADATA_HOST (metadata requests) and
GCE_METADATA_IP (its detection ping, a GET of `/`), as it would find 169.254.169.254 on Cloud Run.

It answers what google-auth 2.63's compute_engine asks, and only with `Metadata-Flavor: Google`:
the ping, the project id, the default service account's info (also under its e-mail) and its
access token. The token it
hands out, and for how long it says that token is valid, are set by the test (`issue`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PROJECT = "example-project"
SERVICE_ACCOUNT = f"mlflow-server@{PROJECT}.iam.gserviceaccount.com"
IAM_DATABASE_USER = SERVICE_ACCOUNT.removesuffix(".gserviceaccount.com")
ACCOUNTS = "/computeMetadata/v1/instance/service-accounts"


@dataclass
class TokenRequest:
    scopes: str
    token: str


@dataclass
class FakeMetadataServer:
    token: str = "ya29.first-token"
    expires_in: int = 3600
    token_requests: list[TokenRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, token: str, expires_in: int = 3600) -> None:
        """From now on, hand out `token`, said to expire `expires_in` seconds after it is fetched."""
        with self._lock:
            self.token, self.expires_in = token, expires_in

    def start(self) -> FakeMetadataServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self._send(403, "text/plain", "Missing Metadata-Flavor: Google")
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                path = url.path.rstrip("/")
                if path == "":
                    return self._send(200, "text/plain", "computeMetadata/")
                if path == "/computeMetadata/v1/project/project-id":
                    return self._send(200, "text/plain", PROJECT)
                if path == "/computeMetadata/v1/universe/universe-domain":
                    return self._send(200, "text/plain", "googleapis.com")
                # Once it knows the account's e-mail, google-auth asks for its info under that alias.
                if path in (f"{ACCOUNTS}/default", f"{ACCOUNTS}/{SERVICE_ACCOUNT}"):
                    info = {
                        "email": SERVICE_ACCOUNT,
                        "aliases": ["default"],
                        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    }
                    return self._send(200, "application/json", json.dumps(info))
                if path == f"{ACCOUNTS}/default/token":
                    with fake._lock:
                        token, expires_in = fake.token, fake.expires_in
                        fake.token_requests.append(TokenRequest(",".join(query.get("scopes", [])), token))
                    body = {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}
                    return self._send(200, "application/json", json.dumps(body))
                self._send(404, "text/plain", "not found")

            def _send(self, status: int, content_type: str, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def environment(self, empty_dir: Path) -> dict[str, str]:
        """What makes Application Default Credentials find this server and nothing else: a gcloud
        configuration directory without credentials (GOOGLE_APPLICATION_CREDENTIALS must be unset)."""
        return {
            "GCE_METADATA_HOST": self.address,
            "GCE_METADATA_IP": self.address,
            "CLOUDSDK_CONFIG": str(empty_dir),
        }
