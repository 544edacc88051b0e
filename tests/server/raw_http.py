"""Requests sent exactly as written (method and path unnormalised), as an attacker's client would:
HTTP/1.1 through http.client, HTTP/2 cleartext (prior knowledge, the protocol Cloud Run speaks to
the container) through the h2 library. Common clients upper-case methods and clean paths; these do not.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http1(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return Answer(response.status, response.read())
    finally:
        connection.close()


def h2c(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"", extra: list[tuple[str, str]] = ()
) -> Answer:
    """One request on its own HTTP/2 connection; `body` must fit the initial window (64 KiB);
    `extra`: header fields sent as they are, repeated names included."""
    config = h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False, normalize_outbound_headers=False
    )
    connection = h2.connection.H2Connection(config)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        pseudo = [(":method", method), (":path", path), (":scheme", "http"), (":authority", f"127.0.0.1:{port}")]
        fields = [*pseudo, *((k.lower(), v) for k, v in headers.items()), ("content-length", str(len(body))), *extra]
        connection.send_headers(stream, fields, end_stream=not body)
        if body:
            connection.send_data(stream, body, end_stream=True)
        sock.sendall(connection.data_to_send())
        status, chunks = 0, []
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"connection closed before the answer to {method} {path} ended")
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    chunks.append(event.data)
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset) and event.stream_id == stream:
                    return Answer(status, b"".join(chunks))
            sock.sendall(connection.data_to_send())


TRANSPORTS = {"http1": http1, "h2c": h2c}
