"""A local receiver for the phone webhook gateway: checks our signature with its own code, answers back.

The signature is checked here independently of ``mfa_middleware.gateways.phone.webhook`` (HMAC-SHA256 over
``"{timestamp}." + body``, ``X-MFA-Signature: v1=<hex>``, timestamp within 300 s). A bad one gets 401 and is
recorded with ``valid=False``; a good one gets ``{"id": "WH..."}``. ``mode`` makes it answer 500, 400 or hang
(released at teardown, at most 30 s). :meth:`WebhookReceiver.post_back` posts a signed answer to a callback URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import httpx

HANG_LIMIT = 30.0
SignatureKind = Literal["good", "bad", "none", "stale", "future"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: Any
    valid: bool


def reference_sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return "v1=" + hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookReceiver:
    def __init__(self, secret: bytes, signed: bool = True) -> None:
        self.secret = secret
        self.signed = signed  # False: accept unsigned posts (the push method's ntfy-style wake-ups)
        self.mode: Literal["ok", "500", "400", "hang"] = "ok"
        self.received: list[Received] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.url = ""

    def check(self, headers: dict[str, str], body: bytes) -> bool:
        if not self.signed:
            return True
        stamp = headers.get("x-mfa-timestamp", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return False
        return hmac.compare_digest(headers.get("x-mfa-signature", ""), reference_sign(self.secret, int(stamp), body))

    def post_back(self, url: str, payload: dict[str, Any], signature: SignatureKind = "good") -> httpx.Response:
        body = json.dumps(payload).encode()
        now = int(time.time())
        stamp = {"stale": now - 3600, "future": now + 3600}.get(signature, now)
        headers = {"Content-Type": "application/json", "X-MFA-Timestamp": str(stamp)}
        if signature != "none":
            key = b"x" * 32 if signature == "bad" else self.secret
            headers["X-MFA-Signature"] = reference_sign(key, stamp, body)
        return httpx.post(url, content=body, headers=headers, timeout=10.0)


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            valid = receiver.check(headers, body)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            with receiver.lock:
                receiver.received.append(Received(headers, body, payload, valid))
            if receiver.mode == "hang":
                receiver.release.wait(HANG_LIMIT)
                return
            if not valid:
                self._send(401, {"error": "bad signature"})
            elif receiver.mode == "500":
                self._send(500, {"error": "down"})
            elif receiver.mode == "400":
                self._send(400, {"error": "unknown number", "code": "no_route"})
            else:
                self._send(200, {"id": "WH" + secrets.token_hex(8)})

    return Handler


@contextmanager
def webhook_receiver(secret: bytes = b"s" * 40, signed: bool = True) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret, signed)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_port}/send"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
