"""A reverse proxy on 127.0.0.1 standing in for Cloud Run's front end, in the two ways Cloud Run can
talk to a container. Shared by `test_large_artifacts.py` and `bench/large_artifacts.py`.

Clients speak HTTP/1.1 to it, as MLflow's client (requests) does. It forwards each request to the
server (its `upstream`, e.g. a start.sh server) either

- `http1`: as HTTP/1.1, with Cloud Run's HTTP/1 limit: a request whose body is over 32 MiB
  ("Maximum HTTP/1 request size 32 MiB if using HTTP/1 server", Cloud Run quotas) gets 413 and
  never reaches the server: refused on its Content-Length, or, when chunked, once the body counted
  so far passes the limit (a chunked body is held back until it is complete or refused). What
  Cloud Run does with a container port named `http1`, the default.
- `h2c`: as HTTP/2 cleartext with prior knowledge (httpx with HTTP/2 only), request and response
  bodies streamed, no size limit. What Cloud Run does with a container port named `h2c`
  (end-to-end HTTP/2).

Hop-by-hop headers are dropped; Host goes through (as `:authority` over HTTP/2), so the server's
allowed-hosts check sees the client's. Every exchange is recorded, with the HTTP version the
server really answered in, so a test can tell that the h2c hop was HTTP/2.

`front_door` stands in for what sits before Cloud Run: headers it adds to every request, in place
of any the client sent under the same names (IAP's signed assertion for one user: the browser
test's IAP, `test_access_ui.py`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import h11
import httpx

CLOUD_RUN_HTTP1_LIMIT = 32 * 1024 * 1024
"""Cloud Run's largest HTTP/1 request body, in bytes."""

Mode = Literal["http1", "h2c"]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
READ_SIZE = 256 * 1024


@dataclass
class Exchange:
    method: str
    target: str
    status: int
    upstream_http_version: str | None
    """What the server answered in ("HTTP/2", "HTTP/1.1"); None: not forwarded (refused, or failed)."""
    request_body_bytes: int
    response_body_bytes: int
    client_headers: frozenset[str] = frozenset()
    """The names of the headers the client sent (lower case), before the front door's were added."""


class _Refused(Exception):
    """The request was answered by the proxy itself; the connection is to be closed."""


class CloudRunProxy:
    """Runs in a thread of its own (its own event loop), so blocking clients can use it."""

    def __init__(self, upstream: str, mode: Mode, front_door: Callable[[], dict[str, str]] | None = None) -> None:
        if mode not in ("http1", "h2c"):
            raise ValueError(f"mode must be http1 or h2c, not {mode!r}")
        self.upstream = upstream.rstrip("/")
        self.mode = mode
        self.front_door = front_door
        self.exchanges: list[Exchange] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"cloud-run-proxy-{mode}", daemon=True)
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> CloudRunProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> CloudRunProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        h2c = self.mode == "h2c"
        # HTTP/2 only, to an http:// URL: httpx opens the connection with the HTTP/2 preface (prior
        # knowledge), no Upgrade: exactly what Cloud Run sends to an h2c port.
        self._client = httpx.AsyncClient(
            http1=not h2c, http2=h2c, timeout=httpx.Timeout(300, connect=10), follow_redirects=False, trust_env=False
        )
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None and self._client is not None
        self._server.close()
        # Connections the clients keep alive are closed, so that their handlers end on their own
        # (cancelling them trips Python 3.11.7's asyncio.streams).
        for writer in self._connections.values():
            writer.close()
        if self._connections:
            _, left = await asyncio.wait(list(self._connections), timeout=10)
            for task in left:
                task.cancel()
        await self._server.wait_closed()
        await self._client.aclose()

    # --- one client connection, HTTP/1.1 ---------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        task.add_done_callback(lambda done: self._connections.pop(done, None))
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                try:
                    await self._exchange(conn, event, reader, writer)
                except _Refused:
                    break
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, httpx.HTTPError):
            pass  # the client sees the connection close
        finally:
            writer.close()

    @staticmethod
    async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(READ_SIZE))

    async def _body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            event = await self._next_event(conn, reader)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a request body")

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: object) -> None:
        data = conn.send(event)
        if data:
            writer.write(data)
            await writer.drain()

    async def _exchange(
        self, conn: h11.Connection, request: h11.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        method, target = request.method.decode(), request.target.decode()
        headers = {name.lower(): value for name, value in request.headers}
        sent_by_client = {name.decode() for name in headers}
        declared = int(headers[b"content-length"]) if b"content-length" in headers else None
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        received = 0

        async def counted(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            nonlocal received
            async for chunk in chunks:
                received += len(chunk)
                yield chunk

        body: bytes | AsyncIterator[bytes] | None
        if self.mode == "http1" and declared is not None and declared > CLOUD_RUN_HTTP1_LIMIT:
            await self._refuse(conn, reader, writer, method, target, declared)
        if self.mode == "http1" and chunked:
            # Cloud Run cannot know a chunked body's size in advance: hold it back until it has
            # ended within the limit, or refuse it as soon as it passes the limit.
            held = bytearray()
            async for chunk in self._body(conn, reader):
                held += chunk
                if len(held) > CLOUD_RUN_HTTP1_LIMIT:
                    await self._refuse(conn, reader, writer, method, target, len(held))
            body, received = bytes(held), len(held)
        elif declared or chunked:
            body = counted(self._body(conn, reader))
        else:
            body = None
            await self._next_event(conn, reader)  # the request's EndOfMessage

        added = {k.lower().encode(): v.encode() for k, v in (self.front_door() if self.front_door else {}).items()}
        forwarded = [(name, value) for name, value in request.headers if name.lower() not in HOP_BY_HOP | added.keys()]
        forwarded += added.items()
        peer = writer.get_extra_info("peername")
        forwarded += [(b"x-forwarded-for", peer[0].encode()), (b"x-forwarded-proto", b"https")]
        assert self._client is not None
        upstream_request = self._client.build_request(method, self.upstream + target, headers=forwarded, content=body)
        try:
            response = await self._client.send(upstream_request, stream=True)
        except httpx.HTTPError as e:
            await self._answer(conn, writer, method, target, 502, f"upstream: {type(e).__name__}: {e}", received)
            raise _Refused from e
        version = response.http_version
        if version != ("HTTP/2" if self.mode == "h2c" else "HTTP/1.1"):
            await response.aclose()
            await self._answer(conn, writer, method, target, 502, f"upstream answered in {version}", received, version)
            raise _Refused
        sent = 0
        try:
            response_headers = [(name, value) for name, value in response.headers.raw if name.lower() not in HOP_BY_HOP]
            await self._send(conn, writer, h11.Response(status_code=response.status_code, headers=response_headers))
            async for chunk in response.aiter_raw():
                sent += len(chunk)
                await self._send(conn, writer, h11.Data(data=chunk))
            await self._send(conn, writer, h11.EndOfMessage())
        finally:
            await response.aclose()
            self.exchanges.append(
                Exchange(method, target, response.status_code, version, received, sent, frozenset(sent_by_client))
            )

    async def _answer(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        status: int,
        text: str,
        received: int,
        version: str | None = None,
    ) -> None:
        """Answers the request itself (the server never sees it), and closes the connection."""
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        self.exchanges.append(Exchange(method, target, status, version, received, len(body)))
        if conn.our_state is h11.SEND_RESPONSE:
            await self._send(conn, writer, h11.Response(status_code=status, headers=headers))
            await self._send(conn, writer, h11.Data(data=body))
            await self._send(conn, writer, h11.EndOfMessage())

    async def _refuse(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        size: int,
    ) -> None:
        """413 before anything reaches the server. The rest of the body is then read and thrown
        away (for up to 60 s), so the client, still sending, gets the answer rather than a reset."""
        await self._answer(conn, writer, method, target, 413, f"request body of {size} bytes is over 32 MiB", 0)
        try:
            async with asyncio.timeout(60):
                while conn.their_state is h11.SEND_BODY:
                    if isinstance(await self._next_event(conn, reader), h11.ConnectionClosed):
                        break
        except (TimeoutError, h11.ProtocolError, ConnectionError):
            pass
        raise _Refused
