"""A local RFC 8030 push service for tests: it checks what a real one checks and decrypts what it receives.

The test makes each subscription's keys itself (:meth:`PushService.subscribe`: a P-256 key pair and a 16-byte auth
secret, as a browser does), so the service can decrypt the message (RFC 8291, ``aes128gcm``, with ``http_ece``).
A POST to a subscription's endpoint is accepted (201) only when:

- ``Authorization: vapid t=<JWT>, k=<key>`` (RFC 8292) carries an ES256 JWT whose signature verifies with ``k``
  (a 65-byte uncompressed P-256 point), whose ``aud`` is the endpoint's origin, whose ``exp`` is in the future and
  at most 24 hours away, and which has a ``sub`` (``mailto:`` or ``https:``);
- ``Content-Encoding: aes128gcm`` and a ``TTL`` header are present;
- the body decrypts with the subscription's private key and auth secret.

Anything else is answered 400/401 and recorded in :attr:`PushService.errors` (a test asserts it stays empty).
``mode`` makes it answer 410 ("gone"), 500, a 307 redirect, or hang until :meth:`PushService.release` (at most
:data:`HANG_LIMIT` seconds; then it answers 500). Messages are recorded as :class:`Message`.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import http_ece  # type: ignore[import-untyped,unused-ignore]
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

HANG_LIMIT = 30.0
Mode = Literal["ok", "gone", "500", "redirect", "hang"]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscription:
    """What a browser's ``PushSubscription`` holds, with the private key the browser keeps."""

    token: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @property
    def p256dh(self) -> str:
        return b64u(self.private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                                serialization.PublicFormat.UncompressedPoint))

    def channel(self) -> dict[str, Any]:
        """The device protocol's channel object (the JSON of a ``PushSubscription``)."""
        return {"type": "webpush", "endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": self.p256dh, "auth": b64u(self.auth)}}


@dataclass
class Message:
    token: str
    headers: dict[str, str]
    payload: bytes
    claims: dict[str, Any]
    vapid_key: str


@dataclass
class PushService:
    base: str = ""
    mode: Mode = "ok"
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: every POST seen (also refused ones), in order: (token, mode at arrival)
    arrivals: list[tuple[str, str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def subscribe(self) -> Subscription:
        token = secrets.token_urlsafe(24)
        sub = Subscription(token, f"{self.base}/push/{token}", ec.generate_private_key(ec.SECP256R1()),
                           secrets.token_bytes(16))
        self.subscriptions[token] = sub
        return sub

    def release(self) -> None:
        self.released.set()

    def wait_for_arrivals(self, count: int, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.arrivals) >= count, timeout=timeout)

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.messages) >= count, timeout=timeout)

    # -- the checks ----------------------------------------------------------------------------------------------
    def check_vapid(self, header: str) -> tuple[dict[str, Any], str]:
        """The JWT's claims and the key, or ValueError naming what is wrong."""
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"Authorization scheme {scheme!r} is not vapid")
        params = {}
        for item in rest.split(","):
            name, _, value = item.strip().partition("=")
            params[name] = value
        token, key = params.get("t", ""), params.get("k", "")
        point = unb64u(key)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        head_b64, claims_b64, sig_b64 = token.split(".")
        head = json.loads(unb64u(head_b64))
        if head.get("alg") != "ES256":
            raise ValueError(f"JWT alg {head.get('alg')!r}")
        signature = unb64u(sig_b64)
        if len(signature) != 64:
            raise ValueError("JWT signature is not 64 bytes")
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ValueError("JWT signature does not verify with k") from None
        claims: dict[str, Any] = json.loads(unb64u(claims_b64))
        if claims.get("aud") != self.base:
            raise ValueError(f"aud {claims.get('aud')!r} is not the endpoint's origin {self.base!r}")
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int) or not now < exp <= now + 24 * 3600:
            raise ValueError(f"exp {exp!r} is not within the next 24 hours")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise ValueError(f"sub {sub!r} is not a mailto: or https: contact")
        return claims, key


def _handler(service: PushService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _refuse(self, status: int, why: str) -> None:
            with service.changed:
                service.errors.append(why)
                service.changed.notify_all()
            self._send(status)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            token = self.path.removeprefix("/push/")
            mode = service.mode
            with service.changed:
                service.arrivals.append((token, mode))
                service.changed.notify_all()
            if mode == "hang":
                service.released.wait(HANG_LIMIT)
                self._send(500)
                return
            if mode == "redirect":
                self._send(307, {"Location": f"{service.base}/push/elsewhere"})
                return
            sub = service.subscriptions.get(token)
            if sub is None:
                self._send(404)
                return
            if mode == "gone":
                self._send(410)
                return
            if mode == "500":
                self._send(500)
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                claims, key = service.check_vapid(headers.get("authorization", ""))
            except (ValueError, KeyError) as exc:
                self._refuse(401, f"VAPID: {exc}")
                return
            if headers.get("content-encoding") != "aes128gcm":
                self._refuse(400, f"Content-Encoding {headers.get('content-encoding')!r}")
                return
            if not headers.get("ttl", "").isdigit():
                self._refuse(400, "no TTL header")
                return
            try:
                payload = http_ece.decrypt(body, private_key=sub.private_key, auth_secret=sub.auth,
                                           version="aes128gcm")
            except Exception as exc:  # any decryption failure is the sender's fault
                self._refuse(400, f"cannot decrypt: {type(exc).__name__}: {exc}")
                return
            with service.changed:
                service.messages.append(Message(token, headers, bytes(payload), claims, key))
                service.changed.notify_all()
            self._send(201, {"Location": f"{service.base}/message/{secrets.token_urlsafe(8)}"})

    return Handler


@contextmanager
def push_service() -> Iterator[PushService]:
    """A push service on 127.0.0.1 (an OS-chosen port); endpoints are ``http://127.0.0.1:PORT/push/<token>``."""
    service = PushService()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(service))
    server.daemon_threads = True
    service.base = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.release()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
