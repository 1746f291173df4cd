"""The ASGI adapter: ``ASGIMFAMiddleware(app, config)``, pure ASGI (no BaseHTTPMiddleware).

- ``http`` and ``websocket`` scopes go through the same gate as WSGI requests; every other scope type
  (``lifespan``, extensions) passes through untouched.
- The hot path (a valid session cookie, or a cached Basic credential) runs on the event loop without awaiting
  anything; when a decision needs I/O (the revocation view is due for its refresh, or a Basic credential must
  be checked with argon2 and the store) it runs in a worker thread. The sign-in pages are the WSGI pages app,
  run in a worker thread with the request body read first (at most 64 KiB).
- A WebSocket on a protected route that is not authenticated is closed before it is accepted (the server
  answers the handshake with 403).
- The app gets the normalised path (``path`` as text, and ``raw_path`` re-encoded when normalising changed it;
  a path whose bytes are not UTF-8 gets 400, see :func:`scope_path`), ``scope["mfa.identity"]``, and
  ``scope["user"]``/``scope["auth"]`` in the shape Starlette's ``request.user``/``request.auth`` expect
  (``is_authenticated``, ``display_name``, ``identity``; ``scopes``). ``Remote-User`` request headers are removed,
  and so are ``X-Forwarded-*``/``Forwarded`` headers from a peer that is not a trusted proxy.
- A response that refreshes the session cookie gets ``Set-Cookie``, ``Cache-Control: private, no-store`` and
  ``Vary: Cookie`` added to the app's ``http.response.start``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from ..core.decision import Identity
from ..core.paths import wsgi_form
from .gate import Gate, GateResult, Reply, SignInPages, refreshed_headers

if TYPE_CHECKING:
    from ..health import OpsEndpoints
    from ..runtime import Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
MAX_PAGE_BODY = 64 * 1024
_STRIP = (b"remote-user", b"x-remote-user", b"remote_user", b"x_remote_user")
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded")


@dataclass(frozen=True, slots=True)
class MFAUser:
    """``request.user`` for Starlette and FastAPI: the signed-in user (or anonymous on a bypass route)."""

    identity: Identity | None

    @property
    def is_authenticated(self) -> bool:
        return self.identity is not None

    @property
    def display_name(self) -> str:
        if self.identity is None:
            return ""
        return self.identity.name or self.identity.username

    @property
    def username(self) -> str:
        return self.identity.username if self.identity else ""


@dataclass(frozen=True, slots=True)
class MFAAuth:
    """``request.auth``: ``scopes`` lists "authenticated", "mfa" (second factor done) and "group:<name>"."""

    scopes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, identity: Identity | None) -> MFAAuth:
        if identity is None:
            return cls([])
        scopes = ["authenticated"] + (["mfa"] if identity.level >= 2 else [])
        return cls(scopes + [f"group:{g}" for g in identity.groups])


class ScopeHeaders:
    """Header lookup over an ASGI scope's header list (built once per request). Names and values stay bytes
    until one is asked for: the gate reads three or four headers of the dozen a browser sends."""

    __slots__ = ("_map",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        headers: dict[bytes, bytes] = {}
        for key, value in raw:
            name = key.lower()
            # Repeated headers join with a comma, as WSGI servers do (cookies with "; ").
            if name in headers:
                headers[name] = headers[name] + (b"; " if name == b"cookie" else b", ") + value
            else:
                headers[name] = value
        self._map = headers

    def get(self, name: str) -> str | None:
        """The value of header ``name`` (lower case ASCII), latin-1 decoded, or None."""
        value = self._map.get(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")


class ASGIAdapter:
    """The ASGI adapter: the gate in front of ``app``, the sign-in pages (a WSGI app, run in a thread) under the
    prefix. Built by :class:`mfa_middleware.ASGIMFAMiddleware` (``app = ASGIMFAMiddleware(app, "mfa.toml")``)."""

    #: health, readiness and metrics (set by the composition root): answered on the event loop, not in the
    #: thread pool the sign-in pages share (:mod:`mfa_middleware.health`)
    ops: OpsEndpoints | None = None

    def __init__(self, app: ASGIApp, runtime: Runtime, gate: Gate, pages: SignInPages) -> None:
        self.app = app
        self.runtime, self.gate, self.pages = runtime, gate, pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        raw_headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in _STRIP]
        client = scope.get("client")
        if any(k.lower() in _FORWARDED for k, _ in raw_headers) and not self.gate.trusts(client[0] if client else ""):
            # Forwarding headers from a client that is not a trusted proxy never reach the app.
            raw_headers = [(k, v) for k, v in raw_headers if k.lower() not in _FORWARDED]
        headers = ScopeHeaders(raw_headers)
        scheme = scope.get("scheme", "http")
        path = scope.get("path") or ""
        check = functools.partial(
            self.gate.check, method=str(scope.get("method", "GET")).upper(),
            raw_path=path if path.isascii() else scope_path(scope),
            query=bytes(scope.get("query_string", b"")).decode("latin-1"),
            scheme="https" if scheme in ("https", "wss") else "http", peer=client[0] if client else "",
            headers=headers, remote_user=None)
        result = check(may_block=False)
        if result.blocking:
            result = await asyncio.get_running_loop().run_in_executor(
                None, contextvars.copy_context().run, functools.partial(check, may_block=True))
        if kind == "websocket":
            await self._websocket(scope, receive, send, result, raw_headers)
            return
        if result.reply is not None:
            await self._send_reply(send, result.reply)
            return
        if result.to_pages:
            ops = self.ops
            if ops is not None and ops.wants(result.path):
                assert result.path is not None
                await self._send_reply(send, await ops.reply_async(str(scope.get("method", "GET")).upper(),
                                                                   result.path, result.client_ip))
                return
            await self._pages(scope, receive, send, result, raw_headers)
            return
        inner = self._inner_scope(scope, result, raw_headers)
        cookie = result.refresh_cookie
        if cookie is None:
            await self.app(inner, receive, send)
            return

        async def refreshing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
                message = {**message, "headers": encode_headers(refreshed_headers(pairs, cookie))}
            await send(message)

        await self.app(inner, receive, refreshing_send)

    def _inner_scope(self, scope: Scope, result: GateResult, raw_headers: list[tuple[bytes, bytes]]) -> Scope:
        inner = dict(scope)
        path = result.path  # the text form: what ASGI servers put in "path"
        assert path is not None
        if path != scope.get("path"):
            inner["path"] = path
            inner["raw_path"] = quote(path, safe="/:@!$&'()*+,;=-._~").encode("ascii")
        inner["headers"] = raw_headers
        if result.https and scope.get("scheme") in ("http", "ws"):
            inner["scheme"] = "https" if scope["type"] == "http" else "wss"
        inner["mfa.identity"] = result.identity
        inner["mfa.client_ip"] = result.client_ip
        inner["user"] = MFAUser(result.identity)
        inner["auth"] = MFAAuth.of(result.identity)
        return inner

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, result: GateResult,
                         raw_headers: list[tuple[bytes, bytes]]) -> None:
        if result.forward and not result.to_pages:
            cookie = result.refresh_cookie
            if cookie is None:
                await self.app(self._inner_scope(scope, result, raw_headers), receive, send)
                return

            async def refreshing_send(message: Message) -> None:
                if message["type"] == "websocket.accept":  # the handshake response carries the new cookie
                    message = {**message, "headers": [*message.get("headers", ()),
                                                      *encode_headers([("Set-Cookie", cookie)])]}
                await send(message)

            await self.app(self._inner_scope(scope, result, raw_headers), receive, refreshing_send)
            return
        # Not authenticated (or not allowed): refuse the handshake before accepting it.
        message = await receive()
        if message.get("type") == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})

    @staticmethod
    async def _send_reply(send: Send, reply: Reply) -> None:
        await send({"type": "http.response.start", "status": reply.status, "headers": encode_headers(reply.headers)})
        await send({"type": "http.response.body", "body": reply.body})

    async def _pages(self, scope: Scope, receive: Receive, send: Send, result: GateResult,
                     raw_headers: list[tuple[bytes, bytes]]) -> None:
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > MAX_PAGE_BODY:
                await self._send_reply(send, Reply(413, [("Content-Type", "text/plain"), ("Content-Length", "24")],
                                                   b"Request body too large.\n"))
                return
        environ = self._environ(scope, result, raw_headers, bytes(body))
        status, headers, chunks = await asyncio.get_running_loop().run_in_executor(
            None, contextvars.copy_context().run, functools.partial(run_wsgi, self.pages, environ))
        await send({"type": "http.response.start", "status": status, "headers": encode_headers(headers)})
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    @staticmethod
    def _environ(scope: Scope, result: GateResult, raw_headers: list[tuple[bytes, bytes]],
                 body: bytes) -> dict[str, Any]:
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": str(scope.get("method", "GET")).upper(),
            "SCRIPT_NAME": "",
            "PATH_INFO": wsgi_form(result.path or "/"),
            "QUERY_STRING": bytes(scope.get("query_string", b"")).decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1] if server[1] is not None else 80),
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "REMOTE_ADDR": client[0] if client else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if result.https else "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
            "mfa.client_ip": result.client_ip,
        }
        for key, value in raw_headers:
            name = key.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = text
            elif name == "CONTENT_LENGTH":
                continue
            else:
                wsgi_key = "HTTP_" + name
                if wsgi_key in environ:
                    text = environ[wsgi_key] + ("; " if name == "COOKIE" else ", ") + text
                environ[wsgi_key] = text
        return environ


def scope_path(scope: Scope) -> str:
    """The WSGI form of the request path (bytes decoded once, as latin-1 text) that the gate normalises.

    ASGI servers decode ``raw_path`` into ``path`` with the invalid UTF-8 replaced by U+FFFD, which hides a
    path that is not UTF-8 (``/%FF``, the overlong ``/%C0%AF``). So when ``raw_path`` is there and decodes to the
    same ``path``, its bytes are used, and invalid UTF-8 gets 400; otherwise (no ``raw_path``, or one that does
    not belong to ``path``, as under a router that rewrote ``path``) ``path`` is taken as it is. An ASCII
    ``path`` never needs this (the caller's fast path): invalid UTF-8 always leaves a U+FFFD in it.
    """
    path = str(scope.get("path") or "")
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        decoded = unquote_to_bytes(raw)
        if decoded.decode("utf-8", "replace") == path:
            return decoded.decode("latin-1")
    return path.encode("utf-8", "surrogateescape").decode("latin-1")


def encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs: lower-case names, latin-1 bytes."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def run_wsgi(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]],
                                                                                     list[bytes]]:
    """Call a WSGI app and collect its whole response (the pages are small)."""
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = headers
        return lambda data: None

    iterable = app(environ, start_response)
    try:
        chunks = list(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    return captured["status"], captured["headers"], chunks


__all__ = ["ASGIAdapter", "MFAAuth", "MFAUser"]
