"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that checks the fraud notification's signature.

It verifies what an operator's receiver would: ``X-MFA-Signature: v1=<hex HMAC-SHA256(secret, ts + "." + body)>``
recomputed here from the raw body (independently of the product's own signing code), compared in constant time,
and ``X-MFA-Timestamp`` within five minutes of the receiver's clock. It answers 204 to a good request and 401 to
a bad one, and records both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_SKEW = 300.0


@dataclass(frozen=True)
class WebhookRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    valid: bool
    reason: str  # why it was refused ("" when valid)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    url: str
    secret: str
    clock: Callable[[], float]
    requests: list[WebhookRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, headers: dict[str, str], body: bytes) -> str:
        timestamp = headers.get("x-mfa-timestamp", "")
        signature = headers.get("x-mfa-signature", "")
        if not timestamp.isdigit():
            return "no timestamp"
        if abs(int(timestamp) - self.clock()) > MAX_SKEW:
            return "stale timestamp"
        expected = "v1=" + hmac.new(self.secret.encode(), timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return "bad signature"
        if headers.get("content-type") != "application/json":
            return "not JSON"
        return ""

    def valid_requests(self) -> list[WebhookRequest]:
        with self.lock:
            return [r for r in self.requests if r.valid]


@contextmanager
def webhook_receiver(secret: str, clock: Callable[[], float]) -> Iterator[WebhookReceiver]:
    """Serve on a free port of 127.0.0.1 until the block ends; ``clock`` is the receiver's "now"."""
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            reason = receiver.check(headers, body)
            with receiver.lock:
                receiver.requests.append(WebhookRequest(self.path, headers, body, not reason, reason))
            self.send_response(401 if reason else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/mfa", secret, clock)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
