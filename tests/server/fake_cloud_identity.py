"""A local stand-in for the Cloud Identity Groups API, the part docker/iap_access.py calls: looking a
group up by e-mail (`groups:lookup`) and checking a transitive membership
(`memberships:checkTransitiveMembership`). It answers only a request bearing `token` (the fake
metadata server's), and counts what it was asked. Groups and members are changed by the test, and so
is how well it answers: slowly (`delay`, or `member_delay` for checks about one member), or not at
all (`outage`: an HTTP status for every request, or "drop": the connection closed unanswered).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_CHECK = re.compile(r"/v1/groups/([0-9a-f]+)/memberships:checkTransitiveMembership")
_QUERY = re.compile(r"member_key_id == '([^']+)'")


def group_id(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:16]


@dataclass
class FakeCloudIdentity:
    token: str
    groups: dict[str, set[str]] = field(default_factory=dict)
    """group e-mail -> member e-mails (already flattened: what a transitive check sees)."""
    unreadable: set[str] = field(default_factory=set)
    """groups whose memberships the caller may not read (403, as without the admin step)."""
    checks: int = 0
    asked: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(group, member) -> membership checks received about them, answered or not."""
    spans: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    """(group, member) -> (received, answered) of each membership check about them (monotonic times;
    answered is when the answer, or the dropped connection, left)."""
    delay: float = 0.0
    """Seconds every request waits before its answer."""
    member_delay: dict[str, float] = field(default_factory=dict)
    """member -> seconds a membership check about them waits before its answer."""
    outage: int | str | None = None
    """Every request (after the delays) answered with this HTTP status, or "drop": closed unanswered."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakeCloudIdentity:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._about: tuple[str, str] | None = None
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self._send(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                by_id = {group_id(g): g for g in fake.groups}
                check, member = _CHECK.fullmatch(url.path), _QUERY.fullmatch(query.get("query", [""])[0])
                if check and member:
                    self._about, self._received = (
                        (by_id.get(check.group(1), check.group(1)), member.group(1)),
                        time.monotonic(),
                    )
                    with fake._lock:
                        fake.asked[self._about] += 1
                time.sleep(fake.delay + (fake.member_delay.get(member.group(1), 0.0) if check and member else 0.0))
                if fake.outage == "drop":
                    self._answered()
                    self.close_connection = True
                    return None
                if fake.outage is not None:
                    status = int(fake.outage)
                    return self._send(status, {"error": {"code": status, "status": "UNAVAILABLE"}})
                if url.path == "/v1/groups:lookup":
                    group = query.get("groupKey.id", [""])[0]
                    if group in fake.unreadable:
                        return self._send(403, {"error": {"code": 403, "status": "PERMISSION_DENIED"}})
                    if group not in fake.groups:
                        return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
                    return self._send(200, {"name": f"groups/{group_id(group)}"})
                if check and member and check.group(1) in by_id:
                    fake.checks += 1
                    group = by_id[check.group(1)]
                    if group in fake.unreadable:
                        return self._send(403, {"error": {"code": 403, "status": "PERMISSION_DENIED"}})
                    return self._send(200, {"hasMembership": member.group(1) in fake.groups[group]})
                return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND"}})

            def _answered(self) -> None:
                """Noted before the answer leaves, so a caller that has it finds its span."""
                if self._about is not None:
                    with fake._lock:
                        fake.spans.setdefault(self._about, []).append((self._received, time.monotonic()))

            def _send(self, status: int, body: dict) -> None:
                self._answered()
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a caller that gave up waiting (its timeout) closed the connection

        self._http = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
