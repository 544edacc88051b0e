"""Who is calling, as IAP proves it: every request's `x-goog-iap-jwt-assertion` is verified, and the
verified e-mail is what MLflow records as the user. mlflow_asgi.py wraps MLflow's app in `IapIdentity`.

IAP signs each request it lets through with an ES256 JWT whose audience is this deployment's backend
service (`/projects/NUMBER/global/backendServices/ID`) or, with IAP on Cloud Run directly, the
service (`/projects/NUMBER/locations/REGION/services/NAME`). A request without a valid one is
refused (401 without, 403 with a bad one), except /health, which Cloud Run's probes call directly.
Signed-in people and service accounts (the keyless client plugin) are both named by the token's
`email` claim; the unsigned `x-goog-authenticated-user-email` header is never read.

With the verified identity:
- runs/create records it as the run's user (`user_id` and tag `mlflow.user`); what the client
  claimed (its `mlflow.user` tag, else its `user_id`) is kept as tag `mlflow.user.client_claimed`;
- model-versions/create records it as the version's tag `mlflow.user` (MLflow's registry store
  takes no user from a request), the claim likewise;
- an alias set or deleted records it as the registered model's tag `mlflow.alias.ALIAS.changed_by`,
  a stage transition as the version's tag `mlflow.stage.changed_by`, written once MLflow has made
  the change and before the client gets the answer;
- those tags are the server's: a client may not set or delete them (403);
- users/current, which MLflow's UI asks to show who is signed in, answers with it.
On both /api/2.0 and /ajax-api/2.0 (the UI's); MLflow 3.17 serves these endpoints on 2.0 only.

Environment (start.sh sets the defaults; `settings_from_environ` is the one check, run by serve.py
before the server starts and again here):
  MLFLOW_IAP_VERIFICATION   on | off. off: nothing is verified or recorded (a local server).
  MLFLOW_IAP_AUDIENCE       required when on, refused when off.
  MLFLOW_IAP_TEST_KEYS_URL  tests only: a loopback http:// URL serving a key set in IAP's format.

IAP's keys come from KEYS_URL, the PEM form of the set also published as JWK (`public_key-jwk`):
google-auth 2.63 reads a JWK set only through PyJWT, which the image does not have, and reads this
one with `cryptography`, checking `iat`/`exp` as well. They are fetched off the event loop, kept for
their Cache-Control max-age, and fetched again early when a token names a key id the set lacks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google.auth.jwt

import iap_access

ISSUER = "https://cloud.google.com/iap"
KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"
ALGORITHM = "ES256"
ASSERTION_HEADER = b"x-goog-iap-jwt-assertion"
UNVERIFIED_PATHS = frozenset({"/health"})
"""Cloud Run's startup and liveness probes reach the container without IAP."""
CLOCK_SKEW_SECONDS = 30
NO_ASSERTION = "no IAP assertion (x-goog-iap-jwt-assertion): reach MLflow through its IAP-protected URL"
AUDIENCE_SHAPES = (
    re.compile(r"/projects/[0-9]+/global/backendServices/[0-9]+"),
    re.compile(r"/projects/[0-9]+/locations/[a-z][a-z0-9-]*/services/[a-z][a-z0-9-]*"),
)

USER_TAG = "mlflow.user"
CLAIMED_TAG = "mlflow.user.client_claimed"
STAGE_TAG = "mlflow.stage.changed_by"
ALIAS_TAG = "mlflow.alias.{alias}.changed_by"
_ALIAS_TAG_PATTERN = re.compile(r"mlflow\.alias\..+\.changed_by", re.S)
MAX_BODY_BYTES = 8 * 2**20
"""The largest body read here (only the JSON requests below are; MLflow's own batch limit is 1 MB)."""

_log = logging.getLogger("uvicorn.error")
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    audience: str
    keys_url: str = KEYS_URL


def settings_from_environ(environ: Mapping[str, str] = os.environ) -> Settings | None:
    """None: verification is off. ValueError: a one-line description of what to set instead."""
    switch = environ.get("MLFLOW_IAP_VERIFICATION", "on")
    audience = environ.get("MLFLOW_IAP_AUDIENCE", "")
    keys_url = environ.get("MLFLOW_IAP_TEST_KEYS_URL", "")
    if switch == "off":
        if audience:
            raise ValueError("MLFLOW_IAP_AUDIENCE is set but MLFLOW_IAP_VERIFICATION is off; unset one of them")
        return None
    if switch != "on":
        raise ValueError(f"MLFLOW_IAP_VERIFICATION must be on or off, got {switch!r}")
    if not audience:
        raise ValueError(
            "MLFLOW_IAP_AUDIENCE is not set: give the audience of IAP's signed header "
            "(/projects/NUMBER/global/backendServices/ID, or /projects/NUMBER/locations/REGION/services/NAME "
            "with IAP on Cloud Run), or set MLFLOW_IAP_VERIFICATION=off for a server nobody reaches through IAP"
        )
    if not any(shape.fullmatch(audience) for shape in AUDIENCE_SHAPES):
        raise ValueError(
            f"MLFLOW_IAP_AUDIENCE must be /projects/NUMBER/global/backendServices/ID or "
            f"/projects/NUMBER/locations/REGION/services/NAME, got {audience!r}"
        )
    if keys_url:
        url = urllib.parse.urlsplit(keys_url)
        if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(
                f"MLFLOW_IAP_TEST_KEYS_URL is for tests only and must be http://127.0.0.1:PORT/..., got {keys_url!r}"
            )
        return Settings(audience, keys_url)
    return Settings(audience)


# --- verification ------------------------------------------------------------------------------


class Refused(Exception):
    """The assertion is not one IAP made for this server; the message says why, in a few words."""


class IapKeys:
    """IAP's key set, cached. One fetch at a time, in a thread, so the event loop never waits on it."""

    MIN_SECONDS, DEFAULT_SECONDS, MAX_SECONDS = 300, 3600, 86400
    REFETCH_UNKNOWN_KID_SECONDS = 60
    RETRY_SECONDS = 10

    def __init__(self, url: str) -> None:
        self.url = url
        self.certs: dict[str, str] | None = None
        self.fresh_until = 0.0
        self.fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    def _fetch(self) -> tuple[bytes, float]:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            body = response.read()
            max_age = re.search(r"max-age=(\d+)", response.headers.get("Cache-Control", ""))
        seconds = int(max_age.group(1)) if max_age else self.DEFAULT_SECONDS
        return body, min(max(seconds, self.MIN_SECONDS), self.MAX_SECONDS)

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self.fetched_at < self.RETRY_SECONDS:
                return  # another request has just fetched (or failed to)
            self.fetched_at = time.monotonic()
            try:
                body, seconds = await asyncio.to_thread(self._fetch)
                keys = json.loads(body)
                if not isinstance(keys, dict) or not keys:
                    raise ValueError("not a {key id: PEM key} object")
            except (OSError, ValueError) as e:
                _log.warning("iap_identity: cannot fetch IAP's keys from %s: %s", self.url, e)
                return
            self.certs = keys
            self.fresh_until = time.monotonic() + seconds

    async def for_key_id(self, kid: str) -> dict[str, str]:
        """The key set, parsed once per fetch (not per request), holding `kid`."""
        now = time.monotonic()
        stale = now >= self.fresh_until
        unknown = kid not in (self.certs or {}) and now - self.fetched_at >= self.REFETCH_UNKNOWN_KID_SECONDS
        if self.certs is None or stale or unknown:
            await self._refresh()
        if self.certs is None:
            raise Refused("IAP's public keys cannot be fetched; try again shortly")
        if kid not in self.certs:
            raise Refused("signed with a key that is not IAP's")
        return self.certs


class Verifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = IapKeys(settings.keys_url)

    async def identity(self, assertion: str) -> str:
        """The verified caller's e-mail; Refused if the assertion is not IAP's, for this server, now."""
        try:
            header = google.auth.jwt.decode_header(assertion)
        except (ValueError, TypeError) as e:
            raise Refused("not a JWT") from e
        if not isinstance(header, dict) or header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise Refused(f"not signed with {ALGORITHM} and a key id")
        certs = await self.keys.for_key_id(header["kid"])
        try:
            # What id_token.verify_token does with a PEM key set, minus parsing the set on every request.
            claims = google.auth.jwt.decode(
                assertion, certs=certs, audience=self.settings.audience, clock_skew_in_seconds=CLOCK_SKEW_SECONDS
            )
        except (ValueError, google.auth.exceptions.GoogleAuthError) as e:
            raise Refused(_reason(e)) from e
        if claims.get("iss") != ISSUER:
            raise Refused("not issued by IAP")
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise Refused("no e-mail claim")
        return email


def _reason(error: Exception) -> str:
    text = str(error)
    for marker, reason in [
        ("expired", "expired"),
        ("too early", "issued in the future"),
        ("audience", "made for another audience"),
        ("signature", "bad signature"),
        ("required claim", "missing iat or exp"),
    ]:
        if marker in text.lower():
            return reason
    return "invalid"


# --- the middleware ----------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error_code": code, "message": message}).encode()


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _request_json(body: bytes) -> dict[str, Any]:
    """The request as MLflow reads it (Flask's silent get_json, then once more if it was a string)."""
    try:
        value = json.loads(body) if body else None
        if isinstance(value, str):
            value = json.loads(value)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


def _tags(request: dict[str, Any]) -> list[dict[str, Any]]:
    tags = request.get("tags")
    return [t for t in tags if isinstance(t, dict)] if isinstance(tags, list) else []


def _with_identity(
    request: dict[str, Any], identity: str, *, user_field: bool, servers_tag: Callable[[str], bool]
) -> dict[str, Any]:
    """A creation request whose user is `identity`, with the client's claim kept under CLAIMED_TAG
    and none of the server's other tags."""
    tags = _tags(request)
    claims = [t.get("value") for t in tags if t.get("key") == USER_TAG]
    if user_field:
        claims += [request.get("user_id"), request.get("userId")]
    claimed = next((c for c in claims if isinstance(c, str) and c), None)
    kept = [t for t in tags if not (isinstance(t.get("key"), str) and servers_tag(t["key"]))]
    kept.append({"key": USER_TAG, "value": identity})
    if claimed is not None:
        kept.append({"key": CLAIMED_TAG, "value": claimed})
    rewritten = {k: v for k, v in request.items() if k not in ("user_id", "userId", "tags")}
    if user_field:
        rewritten["user_id"] = identity
    return {**rewritten, "tags": kept}


def _run_tag(key: str) -> bool:
    return key in (USER_TAG, CLAIMED_TAG)


def _model_version_tag(key: str) -> bool:
    return key in (USER_TAG, CLAIMED_TAG, STAGE_TAG)


def _registered_model_tag(key: str) -> bool:
    return bool(_ALIAS_TAG_PATTERN.fullmatch(key))


# (method, endpoint below /mlflow/) -> which of the server's tags the request could touch, and where.
_GUARDED: dict[tuple[str, str], tuple[Callable[[str], bool], bool]] = {
    # tags=True: the request's `tags` list; False: its `key`.
    ("POST", "runs/set-tag"): (_run_tag, False),
    ("POST", "runs/delete-tag"): (_run_tag, False),
    ("POST", "runs/log-batch"): (_run_tag, True),
    ("POST", "model-versions/set-tag"): (_model_version_tag, False),
    ("DELETE", "model-versions/delete-tag"): (_model_version_tag, False),
    ("POST", "registered-models/create"): (_registered_model_tag, True),
    ("POST", "registered-models/set-tag"): (_registered_model_tag, False),
    ("DELETE", "registered-models/delete-tag"): (_registered_model_tag, False),
}
_CREATES = {("POST", "runs/create"): (True, _run_tag), ("POST", "model-versions/create"): (False, _model_version_tag)}
"""Creation endpoints -> (whether the request has a `user_id` field, the server's tags)."""
_RECORDED_AFTER = {
    ("POST", "registered-models/alias"),
    ("DELETE", "registered-models/alias"),
    ("POST", "model-versions/transition-stage"),
}
_ENDPOINT = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/(.+)")


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None if the client went away."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _with_body(scope: Scope, body: bytes) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length", b"transfer-encoding")]
    return {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}


class IapIdentity:
    def __init__(self, app: App, settings: Settings) -> None:
        self.app = app
        self.verifier = Verifier(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # iap_access hook: the only VERIFIED_USER_HEADER MLflow's auth app sees is the one set below.
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "headers": iap_access.with_verified_user(scope["headers"], None)}
        if scope["type"] not in ("http", "websocket") or scope["path"] in UNVERIFIED_PATHS:
            return await self.app(scope, receive, send)
        assertion = next((v for k, v in scope["headers"] if k.lower() == ASSERTION_HEADER), b"").decode("latin-1")
        refusal: tuple[int, bytes] | None = None
        if not assertion:
            refusal = _error(401, "UNAUTHENTICATED", NO_ASSERTION)
        else:
            try:
                identity = await self.verifier.identity(assertion)
            except Refused as e:
                refusal = _error(403, "PERMISSION_DENIED", f"IAP assertion refused: {e}")
        if refusal is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _answer(send, *refusal)
        scope = {**scope, "headers": iap_access.with_verified_user(scope["headers"], identity)}  # iap_access hook
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)

        match = _ENDPOINT.fullmatch(scope["path"])
        route = (scope["method"], match.group(1)) if match else None
        # With [access], MLflow's auth app answers users/current itself (its user, its admin flag).
        if route == ("GET", "users/current") and not os.environ.get(iap_access.ACCESS_ENV):
            user = {"user": {"username": identity, "is_admin": False}, "is_basic_auth": False}
            return await _answer(send, 200, json.dumps(user).encode())
        if route not in _GUARDED and route not in _CREATES and route not in _RECORDED_AFTER:
            return await self.app(scope, receive, send)

        try:
            body = await _read_body(receive)
        except _BodyTooLarge:
            return await _answer(send, *_error(413, "INVALID_PARAMETER_VALUE", f"request body over {MAX_BODY_BYTES} bytes"))
        if body is None:
            return
        request = _request_json(body)
        if route in _GUARDED:
            servers_tag, in_list = _GUARDED[route]
            keys = [t.get("key") for t in _tags(request)] if in_list else [request.get("key")]
            if taken := [k for k in keys if isinstance(k, str) and servers_tag(k)]:
                message = f"tag {taken[0]} is recorded by the server from IAP's verified identity; clients cannot set or delete it"
                return await _answer(send, *_error(403, "PERMISSION_DENIED", message))
            return await self.app(scope, _replaying(body, receive), send)
        if route in _CREATES:
            user_field, servers_tag = _CREATES[route]
            body = json.dumps(_with_identity(request, identity, user_field=user_field, servers_tag=servers_tag)).encode()
            return await self.app(_with_body(scope, body), _replaying(body, receive), send)
        return await self._record_after(scope, route, request, identity, body, receive, send)

    async def _record_after(
        self,
        scope: Scope,
        route: tuple[str, str],
        request: dict[str, Any],
        identity: str,
        body: bytes,
        receive: Receive,
        send: Send,
    ) -> None:
        """Runs the change; once MLflow has answered 200, records who made it, then answers."""
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, _replaying(body, receive), hold)
        if held and held[0]["type"] == "http.response.start" and held[0]["status"] == 200:
            if route[1] == "registered-models/alias":
                tag = {"name": request.get("name"), "key": ALIAS_TAG.format(alias=request.get("alias")), "value": identity}
                await self._set_tag(scope, "registered-models/set-tag", tag)
            else:
                tag = {"name": request.get("name"), "version": request.get("version"), "key": STAGE_TAG, "value": identity}
                await self._set_tag(scope, "model-versions/set-tag", tag)
        for message in held:
            await send(message)

    async def _set_tag(self, scope: Scope, endpoint: str, tag: dict[str, Any]) -> None:
        """Through MLflow's own endpoint (its validation, its store), as the request that caused it."""
        body = json.dumps(tag).encode()
        path = f"/api/2.0/mlflow/{endpoint}"
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        sub = {**scope, "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers}
        sub = _with_body(sub, body)
        sub["headers"].append((b"content-type", b"application/json"))
        answer: list[Message] = []

        async def collect(message: Message) -> None:
            answer.append(message)

        async def no_more() -> Message:
            return {"type": "http.disconnect"}

        await self.app(sub, _replaying(body, no_more), collect)
        status = answer[0].get("status") if answer else None
        if status != 200:
            text = b"".join(m.get("body", b"") for m in answer[1:])[:300].decode(errors="replace")
            _log.error(
                "iap_identity: could not record %s=%s on %s: %s %s", tag["key"], tag["value"], tag.get("name"), status, text
            )


def wrap(app: App, environ: Mapping[str, str] = os.environ) -> App:
    """`app` behind IAP verification, or `app` itself when MLFLOW_IAP_VERIFICATION is off."""
    settings = settings_from_environ(environ)
    return app if settings is None else IapIdentity(app, settings)
