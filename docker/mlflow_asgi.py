"""The ASGI application the server runs: MLflow's own (`mlflow.server.fastapi_app:app`, or with teams
its auth app around it: iap_access.py) behind IAP verification (iap_identity.py: who is calling; route_rules.py: what each route records), with two
defects of uvicorn's HTTP/2 support and one of Starlette's WSGI bridge mended first. serve.py has uvicorn load it in MLflow's place.
Both are in uvicorn 0.54.0's HTTP/2 protocol (`--http zttp --http2`: zttp_h2_impl), with zttp 0.0.35;
its HTTP/1.1 protocol (zttp_impl), which Cloud Run's probes and local clients use, has neither.

1. Requests without a body never end. zttp marks a request whose HEADERS frame ended its stream
   (every GET) with `Request.end_stream`, and since zttp 0.0.22 no `EndOfMessage` follows it;
   uvicorn never reads the mark, so it keeps waiting for body, and an application that reads the
   body hangs until the client gives up. MLflow's Flask routes (the REST API, the UI) all read it,
   through Starlette's WSGI bridge. Mended the way uvicorn's HTTP/1.1 protocol does it: the request
   is complete when uvicorn sets it up, before its task first runs.

2. Responses are not held back by HTTP/2 flow control. zttp parks the body bytes the peer's
   flow-control window has no room for, and uvicorn's `send` returns at once, so a reader slower
   than the disk (a slow download through Cloud Run's front end, which grants window as its own
   client reads) gets the whole artifact buffered in the server's memory: 200 MiB for a 200 MiB
   model. Mended: `send` waits while more than PENDING_LIMIT bytes of its stream are parked, until
   the peer's WINDOW_UPDATEs have let them out (or the stream or connection is gone).

tests/server/test_image.py tells when uvicorn no longer needs these.
"""

from __future__ import annotations

import asyncio
import functools

import zttp
from uvicorn.protocols.http.zttp_h2_impl import RequestResponseCycle, ZttpH2Protocol

PENDING_LIMIT = 1024 * 1024
"""Most response bytes a stream may have parked in zttp before `send` waits (plus one chunk)."""

_MENDED = "_mlflow_asgi_mended"


def _mend(cls: type, name: str):
    """Replaces `cls.name` with the decorated function, called with the original first."""

    def decorate(replacement):
        original = getattr(cls, name)
        if getattr(original, _MENDED, False):  # imported twice
            return replacement
        if asyncio.iscoroutinefunction(original):

            async def method(*args, **kwargs):
                return await replacement(original, *args, **kwargs)

        else:

            def method(*args, **kwargs):
                return replacement(original, *args, **kwargs)

        functools.update_wrapper(method, original)
        setattr(method, _MENDED, True)
        setattr(cls, name, method)
        return replacement

    return decorate


# --- 1. bodyless requests ----------------------------------------------------------------------


@_mend(ZttpH2Protocol, "handle_request")
def _handle_request(original, self: ZttpH2Protocol, event: zttp.Request) -> None:
    original(self, event)
    if event.end_stream:
        cycle = self.cycles.get(event.stream_id)
        if cycle is not None:
            cycle.more_body = False
            cycle.message_event.set()


# --- 2. flow control ---------------------------------------------------------------------------


def _parked(cycle: RequestResponseCycle) -> int:
    try:
        return cycle.stream.pending_bytes or 0
    except zttp.ProtocolError:  # the stream is gone
        return 0


def _credit_waiters(protocol: ZttpH2Protocol) -> dict[RequestResponseCycle, asyncio.Event]:
    return protocol.__dict__.setdefault("_mlflow_asgi_credit_waiters", {})


@_mend(RequestResponseCycle, "send")
async def _send(original, self: RequestResponseCycle, message) -> None:
    await original(self, message)
    if self.disconnected or self.response_complete or _parked(self) <= PENDING_LIMIT:
        return
    # Woken by the connection's protocol whenever frames come in (a WINDOW_UPDATE lets parked bytes
    # out, an RST_STREAM ends the stream) or the connection is lost.
    protocol = self.transport.get_protocol()
    waiters = _credit_waiters(protocol)
    credit = waiters.setdefault(self, asyncio.Event())
    try:
        while not (self.disconnected or self.transport.is_closing()) and _parked(self) > PENDING_LIMIT:
            credit.clear()
            await credit.wait()
    finally:
        waiters.pop(self, None)


def _wake_credit_waiters(protocol: ZttpH2Protocol) -> None:
    for credit in _credit_waiters(protocol).values():
        credit.set()


@_mend(ZttpH2Protocol, "data_received")
def _data_received(original, self: ZttpH2Protocol, data: bytes) -> None:
    # Whatever came in (WINDOW_UPDATE, RST_STREAM, GOAWAY) may let a waiting `send` go on.
    original(self, data)
    _wake_credit_waiters(self)


@_mend(ZttpH2Protocol, "connection_lost")
def _connection_lost(original, self: ZttpH2Protocol, exc: Exception | None) -> None:
    original(self, exc)
    _wake_credit_waiters(self)


import cloudsql_iam  # noqa: E402  (IAM database login, in every worker, before MLflow's engines exist)

cloudsql_iam.install()

# --- 3. the Flask bridge's downloads -------------------------------------------------------------
#
# MLflow's Flask routes (/get-artifact, model-versions/get-artifact, the UI's artifact and trace
# routes) answer through Starlette's WSGI bridge, whose thread hands each chunk to the event loop
# through a memory stream of unbounded size: a reader that stops reading gets the whole file
# buffered in the server. Bounded here, so the WSGI thread waits for the reader (as the FastAPI
# artifact route's own streaming does).

import anyio  # noqa: E402
from mlflow.server.fastapi_app import _EfficientWSGIResponder  # noqa: E402

WSGI_BUFFERED_MESSAGES = 8
"""Response messages (Flask's send_file: 8 KiB each) the WSGI thread may be ahead of the reader."""


@_mend(_EfficientWSGIResponder, "__init__")
def _bounded_responder(original, self: _EfficientWSGIResponder, app, scope) -> None:
    original(self, app, scope)
    self.stream_send, self.stream_receive = anyio.create_memory_object_stream(WSGI_BUFFERED_MESSAGES)


import iap_access  # noqa: E402
import iap_identity  # noqa: E402
from mlflow.server import app as mlflow_flask_app  # noqa: E402

# [access] on: MLflow's auth app (its validators, workspaces) around MLflow's app (iap_access.py);
# either way its Flask routes are MLflow's one Flask app, which the auth app extends in place.
app = iap_identity.wrap(iap_access.mlflow_app(), mlflow_flask_app)

__all__ = ["app"]
