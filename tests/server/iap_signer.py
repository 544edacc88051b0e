"""A local stand-in for IAP: it signs assertions with its own EC P-256 keys and serves their public
halves over HTTP in IAP's format ({key id: PEM public key}, as https://www.gstatic.com/iap/verify/public_key).
The server under test is pointed at it with MLFLOW_IAP_TEST_KEYS_URL. Shared by the tests and
`bench/server.py`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google.auth.jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth.crypt import es256

ISSUER = "https://cloud.google.com/iap"
AUDIENCE = "/projects/123456789012/global/backendServices/4242424242424242424"


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class IapSigner:
    """Two published keys (IAP publishes several); `fetches` counts key-set downloads."""

    def __init__(self) -> None:
        self.keys = {f"local-iap-{n}": ec.generate_private_key(ec.SECP256R1()) for n in range(2)}
        self.fetches = 0
        signer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                signer.fetches += 1
                body = json.dumps(signer.public_keys()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def keys_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/iap/verify/public_key"

    def public_keys(self) -> dict[str, str]:
        return {
            kid: key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
            for kid, key in self.keys.items()
        }

    def __enter__(self) -> IapSigner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def assertion(
        self,
        email: str | None,
        *,
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        issued: float | None = None,
        lifetime: int = 600,
        kid: str = "local-iap-0",
        key: ec.EllipticCurvePrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """What IAP would put in x-goog-iap-jwt-assertion; `key` signs in place of kid's own key (a
        forgery); `email` None leaves the claim out."""
        iat = int(time.time() if issued is None else issued)
        payload = {"aud": audience, "iss": issuer, "iat": iat, "exp": iat + lifetime, **claims}
        if email is not None:
            payload |= {
                "email": email,
                "sub": f"accounts.google.com:{int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)}",
            }
        signer = es256.ES256Signer.from_string(_pem(key or self.keys[kid]), key_id=kid)
        return google.auth.jwt.encode(signer, payload).decode()

    def headers(self, email: str, **kwargs: Any) -> dict[str, str]:
        return {"x-goog-iap-jwt-assertion": self.assertion(email, **kwargs)}
