"""Who is calling, as IAP proves it: every request's `x-goog-iap-jwt-assertion` is verified, and the
verified e-mail is what MLflow records as the user. mlflow_asgi.py wraps MLflow's app in `IapIdentity`.

IAP signs each request it lets through with an ES256 JWT whose audience is this deployment's backend
service (`/projects/NUMBER/global/backendServices/ID`) or, with IAP on Cloud Run directly, the
service (`/projects/NUMBER/locations/REGION/services/NAME`). A request without a valid one is
refused (401 without, 403 with a bad one), except /health, which Cloud Run's probes call directly.
Signed-in people and service accounts (the keyless client plugin) are both named by the token's
`email` claim; the unsigned `x-goog-authenticated-user-email` header is never read.

Exactly one assertion: two or more are refused like a bad one (IAP sends one).

What the verified identity is recorded as, and which tags are the server's, is route_rules.py's
table, keyed by the endpoint the framework will run. It is applied where that endpoint is known:
- MLflow's Flask routes (`FlaskRules`, around Flask's `wsgi_app`): matched with Flask's own URL
  adapter on the environ Flask is about to route (Werkzeug upper-cases the method and merges
  slashes; so does this match), the body rewritten or the request refused before the view runs;
  a before_request hook refuses any request whose view is not the one decided on;
- MLflow's FastAPI routes (`_GuardedBody`): when the application first asks for the body, Starlette
  has routed the request and `scope["endpoint"]` is what runs. An unreviewed FastAPI route is
  refused there, and the server does not start while one exists (`wrap`).
Every body but an artifact upload is read at most MAX_BODY_BYTES into memory (413 past it).
A request whose method or path is not in its one canonical spelling is refused 400 up front: a
second line, the rules hold without it (tests/server/test_identity_attacks.py turns it off).
users/current, which MLflow's UI asks to show who is signed in, answers with the identity.
With [access] (iap_access.py) MLflow's auth app decides instead: the verified e-mail reaches it in
iap_access.VERIFIED_USER_HEADER, set here after verification (a client's copy, in any spelling, is
removed first), on the Flask and FastAPI paths alike; users/current is then MLflow's own answer.

Environment (start.sh sets the defaults; `settings_from_environ` is the one check, run by serve.py
before the server starts and again here):
  MLFLOW_IAP_VERIFICATION   on | off. off: nothing is verified or recorded (a local server).
  MLFLOW_IAP_AUDIENCE       required when on, refused when off.
  MLFLOW_IAP_TEST_KEYS_URL  tests only: a loopback http:// URL serving a key set in IAP's format.
  MLFLOW_IAP_TEST_NON_CANONICAL  tests only (with the above): `accept` lets non-canonical spellings
                            reach the route rules, so that the attack suite tests the rules themselves.

IAP's keys come from KEYS_URL, the PEM form of the set also published as JWK (`public_key-jwk`):
google-auth 2.63 reads a JWK set only through PyJWT, which the image does not have, and reads this
one with `cryptography`, checking `iat`/`exp` as well. They are fetched off the event loop, kept for
their Cache-Control max-age, and fetched again early when a token names a key id the set lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gzip
import io
import json
import logging
import os
import re
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google.auth.jwt
import iap_access
import route_rules

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

MAX_BODY_BYTES = 16 * 2**20
"""The largest request body read into memory (every route but artifact uploads, which stream to storage;
MLflow's own batch limit is 1 MB); Cloud Run's h2c port has no limit of its own."""

LARGE_BODY_BYTES = 2**20
LARGE_BODIES_AT_ONCE = 2
"""Bodies past LARGE_BODY_BYTES are read and handled this many at a time (the others wait, up to
LARGE_BODY_WAIT_SECONDS, then 503): each may hold MAX_BODY_BYTES and what its handler parses from it,
and 8 uploads of 16 MiB at once held 127 MiB before any was parsed (60 would pass the 1 GiB)."""
LARGE_BODY_WAIT_SECONDS = 60

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
    canonical_only: bool = True
    """False only in the attack tests, which must reach the route rules with every spelling."""


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
        accept = environ.get("MLFLOW_IAP_TEST_NON_CANONICAL", "refuse")
        if accept not in ("refuse", "accept"):
            raise ValueError(f"MLFLOW_IAP_TEST_NON_CANONICAL must be refuse or accept, got {accept!r}")
        return Settings(audience, keys_url, canonical_only=accept == "refuse")
    if "MLFLOW_IAP_TEST_NON_CANONICAL" in environ:
        raise ValueError("MLFLOW_IAP_TEST_NON_CANONICAL is for tests only (with MLFLOW_IAP_TEST_KEYS_URL); unset it")
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


# --- the ASGI layer: who calls, canonical requests, bounded bodies -------------------------------


IDENTITY: contextvars.ContextVar[str | None] = contextvars.ContextVar("iap_identity", default=None)
"""The verified caller of the request being served; the Flask layer (in the WSGI thread, which
anyio starts with a copy of this context) reads it."""
CANONICAL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NON_CANONICAL_PATH = re.compile(r"//|/\.\.?(?:/|$)")


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error_code": code, "message": message}).encode()


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def non_canonical(scope: Scope) -> str | None:
    """Why a request is not in the one spelling the server takes, or None. A second line of defence:
    the rules themselves are decided on the route the framework picks, whatever the spelling."""
    if scope["type"] == "http" and scope["method"] not in CANONICAL_METHODS:
        return f"method {scope['method'][:20]!r} is not one of {', '.join(sorted(CANONICAL_METHODS))} (upper case)"
    path = scope["path"]
    if not path.startswith("/") or _NON_CANONICAL_PATH.search(path):
        return "path has an empty, '.' or '..' segment; send the canonical path"
    return None


def _assertions(scope: Scope) -> list[bytes]:
    return [v for k, v in scope["headers"] if k.lower() == ASSERTION_HEADER]


class _Answered(Exception):
    """Raised from `receive` to stop the application; the middleware answers with `refusal` (and
    drops what the application's error handlers send meanwhile)."""

    def __init__(self, refusal: route_rules.Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def _too_large() -> route_rules.Refusal:
    return route_rules.Refusal(
        413,
        "RESOURCE_LIMIT_EXCEEDED",
        f"request body over {MAX_BODY_BYTES} bytes (artifacts go to mlflow-artifacts/artifacts)",
    )


class _GuardedBody:
    """The application's `receive`. Its first call comes after Starlette has routed the request
    (scope["endpoint"] is what will run): that route's treatment decides whether the body streams
    (artifact uploads) or is read whole, at most MAX_BODY_BYTES, and handed over in one piece."""

    def __init__(self, scope: Scope, receive: Receive, identity: str, large: asyncio.Semaphore | None = None) -> None:
        self.scope, self.receive, self.identity = scope, receive, identity
        self.large = large or asyncio.Semaphore(LARGE_BODIES_AT_ONCE)
        self.holds_large = False
        """Whether this request holds one of the LARGE_BODIES_AT_ONCE places (released when it is answered)."""
        self.decided = False
        self.refused: list[route_rules.Refusal] = []
        """Filled, before the application hears of it, when the body is refused."""

    async def __call__(self) -> Message:
        if self.decided:
            return await self.receive()
        self.decided = True
        try:
            return await self._first()
        except _Answered as e:
            self.refused.append(e.refusal)
            raise

    async def hold_large(self) -> None:
        if self.holds_large:
            return
        try:
            await asyncio.wait_for(self.large.acquire(), LARGE_BODY_WAIT_SECONDS)
        except TimeoutError:
            raise _Answered(
                route_rules.Refusal(503, "TEMPORARILY_UNAVAILABLE", "too many large requests at once; retry shortly")
            ) from None
        self.holds_large = True

    def release(self) -> None:
        if self.holds_large:
            self.holds_large = False
            self.large.release()

    async def _first(self) -> Message:
        name = route_rules.endpoint_name(self.scope.get("endpoint"))
        treatment = route_rules.FASTAPI.get(name, route_rules.PASS)
        if name != route_rules.FLASK_MOUNT and route_rules.fastapi_treatment(name) is route_rules.STRICT:
            raise _Answered(route_rules.forbidden(f"route {name} is not reviewed for identity rules"))
        if treatment.streams_body:
            return await self.receive()
        declared = next((v for k, v in self.scope["headers"] if k.lower() == b"content-length"), b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            raise _Answered(
                _too_large() if declared.isdigit() else route_rules.Refusal(400, "BAD_REQUEST", "bad content-length")
            )
        if int(declared) > LARGE_BODY_BYTES:
            await self.hold_large()
        body = await _read_body(self.receive, self)
        if body is None:
            return {"type": "http.disconnect"}
        values = json_values(body)
        BODY_SHAPE.set((len(body), values))  # the Flask layer (in the WSGI thread) decides on its endpoint
        if name == "mlflow.server.otel_api:export_traces":
            if _otlp_format(self.scope)[0] == "application/json":
                _check_json_values(values)
            body = _stamp_otlp(self.scope, body, self.identity)
        elif name != route_rules.FLASK_MOUNT:
            _check_json_values(values)
        return {"type": "http.request", "body": body, "more_body": False}


BODY_SHAPE: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("iap_identity_body_shape", default=(0, 0))
"""(bytes, JSON values) of the body read for this request."""


def json_values(body: bytes) -> int:
    """An upper bound on the JSON values in `body` (strings' own brackets and commas count too)."""
    return body.count(b"{") + body.count(b"[") + body.count(b",")


def _check_json_values(values: int) -> None:
    if values > route_rules.MAX_JSON_VALUES:
        raise _Answered(_too_dense(values))


def _too_dense(values: int) -> route_rules.Refusal:
    return route_rules.Refusal(
        413,
        "RESOURCE_LIMIT_EXCEEDED",
        f"request body holds up to {values} JSON values, over {route_rules.MAX_JSON_VALUES}; send fewer per request",
    )


async def _read_body(receive: Receive, guard: _GuardedBody) -> bytes | None:
    """The whole request body, refused past MAX_BODY_BYTES; None if the client went away. Past
    LARGE_BODY_BYTES (a body sent without Content-Length) it waits for a place to go on."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Answered(_too_large())
        if size > LARGE_BODY_BYTES:
            await guard.hold_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


OTLP_INFLATED_LIMIT = 4 * MAX_BODY_BYTES
"""Most an OTLP body may inflate to (gzip/deflate): MLflow inflates it without a limit."""


OTLP_FORMAT_HEADERS = (b"content-type", b"content-encoding")
"""Headers that decide how MLflow reads an OTLP body: each must come at most once (MLflow reads the first)."""


def _otlp_format(scope: Scope) -> tuple[str, str]:
    """(content type, content encoding) exactly as MLflow's export_traces reads them; a request that
    names either twice, in any letter case, is refused (what the stamp reads must be what MLflow reads)."""
    found: dict[bytes, list[str]] = {name: [] for name in OTLP_FORMAT_HEADERS}
    for key, value in scope["headers"]:
        if key.lower() in found:
            found[key.lower()].append(value.decode("latin-1"))
    for name, values in found.items():
        if len(values) > 1:
            raise _Answered(
                route_rules.Refusal(400, "INVALID_PARAMETER_VALUE", f"{len(values)} {name.decode()} headers; send one")
            )
    content_type, encoding = (values[0] if values else "" for values in found.values())
    return content_type.split(";")[0].strip(), encoding.lower()


def _stamp_otlp(scope: Scope, body: bytes, identity: str) -> bytes:
    """OTLP spans: every `user.id` attribute (MLflow makes it the trace's mlflow.trace.user) becomes
    the caller, and no span may carry a server tag as `mlflow.traceTag.KEY` (MLflow writes those to
    the trace, an existing one too); the body keeps its format and encoding, since MLflow has read
    those headers already."""
    content_type, encoding = _otlp_format(scope)
    data = _inflate(body, encoding) if encoding else body
    if content_type == "application/json":
        stamped = _stamp_otlp_json(data, identity)  # parsed always: JSON may spell the key with escapes
    else:
        stamped = _stamp_otlp_protobuf(data, identity)
    if encoding == "gzip":
        return gzip.compress(stamped)
    return zlib.compress(stamped) if encoding == "deflate" else stamped


def _inflate(body: bytes, encoding: str) -> bytes:
    bad = route_rules.Refusal(400, "INVALID_PARAMETER_VALUE", f"cannot decode a {encoding!r} OTLP body")
    attempts = {"gzip": [31], "deflate": [15, -15]}.get(encoding)
    if attempts is None:
        raise _Answered(bad)
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(body, OTLP_INFLATED_LIMIT + 1)
        except zlib.error:
            continue
        if len(data) > OTLP_INFLATED_LIMIT or inflater.unconsumed_tail:
            raise _Answered(
                route_rules.Refusal(
                    413, "RESOURCE_LIMIT_EXCEEDED", f"OTLP body inflates past {OTLP_INFLATED_LIMIT} bytes"
                )
            )
        return data
    raise _Answered(bad)


def _refuse_otlp_server_tag(key: object) -> None:
    prefix = route_rules.OTLP_TRACE_TAG_PREFIX
    if isinstance(key, str) and key.startswith(prefix) and route_rules.is_server_tag(key[len(prefix) :]):
        raise _Answered(
            route_rules.forbidden(
                f"span attribute {key} would set tag {key[len(prefix) :]}, which the server records from IAP's verified identity"
            )
        )


def _stamp_otlp_protobuf(data: bytes, identity: str) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except Exception as e:
        raise _Answered(route_rules.Refusal(400, "INVALID_PARAMETER_VALUE", "Invalid OpenTelemetry format")) from e
    values = _OtlpValues()
    for resource_spans in request.resource_spans:
        values.add(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            values.add(scope_spans.scope.attributes)
            for span in scope_spans.spans:
                values.add(span.attributes, span.links)
                values.add(*(link.attributes for link in span.links), *(event.attributes for event in span.events))
                for attribute in span.attributes:
                    _refuse_otlp_server_tag(attribute.key)
                    if attribute.key == route_rules.OTLP_USER_ATTRIBUTE:
                        attribute.value.Clear()
                        attribute.value.string_value = identity
    return bytes(request.SerializeToString())


class _OtlpValues:
    """Counts the values MLflow turns into Python objects (attributes, nested array and kvlist values,
    links, events), as a JSON body's are counted: 15 MiB of one-byte attributes grew the server 413 MiB."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, *groups: Any) -> None:
        for group in groups:
            self.count += 1 + len(group)
            if self.count > route_rules.MAX_JSON_VALUES:
                raise _Answered(_too_dense(self.count))
            for item in group:
                value = getattr(item, "value", None)
                if value is not None and value.WhichOneof("value") in ("array_value", "kvlist_value"):
                    self.add(value.array_value.values, value.kvlist_value.values)


def _stamp_otlp_json(data: bytes, identity: str) -> bytes:
    """OTLP/JSON (camelCase, or the proto names protobuf's parser also takes)."""
    try:
        request = json.loads(data)
    except ValueError as e:
        raise _Answered(route_rules.Refusal(400, "INVALID_PARAMETER_VALUE", "Invalid OpenTelemetry format")) from e

    def each(value: Any, *names: str) -> list[Any]:
        found: list[Any] = next(
            (value[n] for n in names if isinstance(value, dict) and isinstance(value.get(n), list)), []
        )
        return [item for item in found if isinstance(item, dict)]

    for resource_spans in each(request, "resourceSpans", "resource_spans"):
        for scope_spans in each(resource_spans, "scopeSpans", "scope_spans"):
            for span in each(scope_spans, "spans"):
                for attribute in each(span, "attributes"):
                    _refuse_otlp_server_tag(attribute.get("key"))
                    if attribute.get("key") == route_rules.OTLP_USER_ATTRIBUTE:
                        attribute["value"] = {"stringValue": identity}
    return json.dumps(request).encode()


class IapIdentity:
    def __init__(self, app: App, settings: Settings) -> None:
        self.app = app
        self.verifier = Verifier(settings)
        self.canonical_only = settings.canonical_only
        self.large: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        # Before anything reads a header: the only VERIFIED_USER_HEADER MLflow's auth app (iap_access.py)
        # sees is the one set below from the verified assertion, whatever a client sent.
        scope = {**scope, "headers": iap_access.with_verified_user(scope["headers"], None)}
        if self.canonical_only and (reason := non_canonical(scope)):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _answer(send, *_error(400, "BAD_REQUEST", reason))
        if scope["path"] in UNVERIFIED_PATHS and scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        identity, refusal = await self._identity(scope)
        if refusal is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _answer(send, *refusal)
        IDENTITY.set(identity)
        scope["headers"] = iap_access.with_verified_user(scope["headers"], identity)
        # What MLflow's auth app would leave for its FastAPI routes (MCP servers record it as created_by).
        scope.setdefault("state", {})["username"] = identity
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        # With [access], MLflow's auth app answers users/current itself (its user, its admin flag).
        users_current = _ENDPOINT.fullmatch(scope["path"]) and scope["path"].endswith("/users/current")
        if scope["method"] == "GET" and users_current and not os.environ.get(iap_access.ACCESS_ENV):
            user = {"user": {"username": identity, "is_admin": False}, "is_basic_auth": False}
            return await _answer(send, 200, json.dumps(user).encode())
        if self.large is None:
            self.large = asyncio.Semaphore(LARGE_BODIES_AT_ONCE)  # in the server's event loop
        guarded = _GuardedBody(scope, receive, identity, self.large)
        try:
            await self._serve(scope, guarded, send)
        finally:
            guarded.release()

    async def _identity(self, scope: Scope) -> tuple[str, tuple[int, bytes] | None]:
        assertions = _assertions(scope)
        if not assertions:
            return "", _error(401, "UNAUTHENTICATED", NO_ASSERTION)
        if len(assertions) > 1:
            return "", _error(
                403, "PERMISSION_DENIED", f"IAP assertion refused: {len(assertions)} assertions, IAP sends one"
            )
        try:
            return await self.verifier.identity(assertions[0].decode("latin-1")), None
        except Refused as e:
            return "", _error(403, "PERMISSION_DENIED", f"IAP assertion refused: {e}")

    async def _serve(self, scope: Scope, receive: _GuardedBody, send: Send) -> None:
        """Runs the application; a refusal raised while it reads the body replaces its answer."""
        refused: list[route_rules.Refusal] = []
        receive.refused = refused
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not refused:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except BaseException as e:  # also when Starlette wraps it in an exception group
            if not refused or _refusal_in(e) is None:
                raise
        if refused and not started:
            refusal = refused[0]
            await _answer(send, *_error(refusal.status, refusal.code, refusal.message))


def _refusal_in(error: BaseException) -> route_rules.Refusal | None:
    if isinstance(error, _Answered):
        return error.refusal
    for inner in getattr(error, "exceptions", ()):
        if found := _refusal_in(inner):
            return found
    cause = error.__cause__ or error.__context__
    return _refusal_in(cause) if cause is not None and cause is not error else None


_ENDPOINT = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/.+")


# --- the Flask layer: the route Werkzeug picked, its treatment ------------------------------------


DECIDED: contextvars.ContextVar[str | None] = contextvars.ContextVar("iap_identity_route", default=None)
WORKSPACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("iap_identity_workspace", default=None)
"""The MLflow workspace the request ran in ([access]: workspaces on), seen while it ran: what a
treatment's `after` records runs once MLflow has answered and cleared its own request workspace."""


class FlaskRules:
    """Around MLflow's Flask `wsgi_app`: the route is matched with Flask's own URL adapter on the very
    environ Flask is about to route (its method upper-cased, its slashes merged as Werkzeug does), and
    the endpoint's treatment from route_rules applies. A before_request hook then checks that the
    view Flask dispatches to is the one decided on; anything else is refused."""

    def __init__(self, flask_app: Any) -> None:
        self.flask_app, self.inner = flask_app, flask_app.wsgi_app
        flask_app.wsgi_app = self
        flask_app.before_request(self._check_dispatch)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        DECIDED.set(None)
        WORKSPACE.set(None)
        identity = IDENTITY.get()
        try:
            rule, view_args = self.flask_app.create_url_adapter(self.flask_app.request_class(environ)).match(
                return_rule=True
            )
        except Exception:  # 404, 405, a redirect: Flask answers it without running a view
            return self.inner(environ, start_response)
        DECIDED.set(rule.endpoint)
        treatment = route_rules.flask_treatment(rule.endpoint)
        if identity is None and rule.endpoint != "health":
            return _wsgi_refusal(start_response, route_rules.forbidden("no verified identity for this request"))
        if identity is not None and (refusal := _memory_refusal(treatment, environ)):
            return _wsgi_refusal(start_response, refusal)
        if identity is None or not treatment.writes_identity:
            return self.inner(environ, start_response)
        call = route_rules.Call(identity, rule.endpoint, view_args)
        try:
            message, notes = _apply(treatment, call, environ)
        except route_rules.Refusal as refusal:
            return _wsgi_refusal(start_response, refusal)
        if treatment.after is None:
            return self.inner(environ, start_response)
        status: list[str] = []

        def remember(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(status_line)
            return start_response(status_line, headers, exc_info)

        answer = self.inner(environ, remember)
        if status and status[0].startswith("200"):
            try:
                with _in_workspace(WORKSPACE.get()):
                    treatment.after(message, call, notes)
            except Exception as e:  # the change is made; say plainly that its author was not recorded
                _log.error(
                    "iap_identity: %s by %s is done but its author could not be recorded: %s",
                    rule.endpoint,
                    identity,
                    e,
                )
        return answer

    def _check_dispatch(self) -> Any:
        from flask import g, request

        decided = DECIDED.get()
        if request.url_rule is None:
            return None  # Flask answers its routing error; no view runs
        if request.url_rule.endpoint != decided:
            return _flask_refusal(
                route_rules.forbidden(f"route {request.endpoint} is not the one decided on ({decided})")
            )
        if identity := IDENTITY.get():
            g.mlflow_authenticated_user = identity  # what MLflow's auth app sets; review queues read it
        from mlflow.utils import workspace_context

        if workspace_context.is_request_workspace_resolved():
            WORKSPACE.set(workspace_context.get_request_workspace())
        return None


def _in_workspace(workspace: str | None) -> contextlib.AbstractContextManager[Any]:
    """MLflow's request workspace for what runs after MLflow has answered (none: as it is)."""
    if workspace is None:
        return contextlib.nullcontext()
    from mlflow.utils.workspace_context import ServerWorkspaceContext

    return ServerWorkspaceContext(workspace)


def _memory_refusal(treatment: route_rules.Treatment, environ: dict[str, Any]) -> route_rules.Refusal | None:
    """What the endpoint's handler would parse, bounded: its body size and the JSON values it holds."""
    size, values = BODY_SHAPE.get()
    if treatment.max_body is not None and size > treatment.max_body:
        return route_rules.Refusal(
            413, "RESOURCE_LIMIT_EXCEEDED", f"request body over {treatment.max_body} bytes for this route"
        )
    if not treatment.binary_body and values > route_rules.MAX_JSON_VALUES:
        return _too_dense(values)
    return None


def _apply(
    treatment: route_rules.Treatment, call: route_rules.Call, environ: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Refuses, or rewrites the body in `environ` so that MLflow's handler reads the verified author."""
    if treatment.refuse:
        raise route_rules.forbidden(f"route {call.endpoint}: {treatment.reason}")
    stream = environ["wsgi.input"]
    request = _request_json(stream.read())
    notes: dict[str, Any] = {}
    message = route_rules.request_message(call.endpoint)
    if treatment.rewrite_json is not None:
        treatment.rewrite_json(request, call)
        body = json.dumps(request).encode()
    elif message is not None:
        from mlflow.utils.proto_json_utils import message_to_json, parse_dict

        try:
            parse_dict(request, message)
        except Exception as e:
            raise route_rules.Refusal(
                400, "INVALID_PARAMETER_VALUE", f"request is not a valid {type(message).__name__}"
            ) from e
        if treatment.rewrite is not None:
            treatment.rewrite(message, call)
        if treatment.before is not None:
            notes = treatment.before(message, call)
        body = message_to_json(message).encode()
    else:
        raise route_rules.forbidden(f"route {call.endpoint} has a treatment but no request message")
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return message, notes


def _request_json(body: bytes) -> dict[str, Any]:
    """The request as MLflow reads it (Flask's silent get_json, then once more if it was a string)."""
    try:
        value = json.loads(body) if body else None
        if isinstance(value, str):
            value = json.loads(value)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


_REASONS = {400: "BAD REQUEST", 403: "FORBIDDEN", 413: "REQUEST ENTITY TOO LARGE", 503: "SERVICE UNAVAILABLE"}


def _wsgi_refusal(start_response: Callable[..., Any], refusal: route_rules.Refusal) -> list[bytes]:
    status, body = _error(refusal.status, refusal.code, refusal.message)
    start_response(
        f"{status} {_REASONS.get(status, 'REFUSED')}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _flask_refusal(refusal: route_rules.Refusal) -> Any:
    from flask import Response

    return Response(
        _error(refusal.status, refusal.code, refusal.message)[1], refusal.status, mimetype="application/json"
    )


def wrap(app: App, flask_app: Any = None, environ: Mapping[str, str] = os.environ) -> App:
    """`app` behind IAP verification and the route rules, or `app` itself when MLFLOW_IAP_VERIFICATION
    is off. Refuses (ValueError) when MLflow serves a route route_rules.py has not reviewed."""
    settings = settings_from_environ(environ)
    if settings is None:
        return app
    if flask_app is not None:
        if missing := route_rules.unreviewed(app, flask_app):
            raise ValueError(
                f"MLflow serves routes nobody has reviewed for identity rules (docker/route_rules.py): {missing}"
            )
        FlaskRules(flask_app)
    return IapIdentity(app, settings)
