"""One request, three ways in: the WSGI adapter, the ASGI adapter and forward auth, all on one store.

:class:`Trio` wraps a recording app in :class:`~mfa_middleware.MFAMiddleware` and
:class:`~mfa_middleware.ASGIMFAMiddleware` and builds a forward-auth app beside them (trusting 127.0.0.1 as its
proxy, as nginx on the same host). :meth:`Trio.send` sends a raw request target (bytes, as a client writes it on
the request line) the way a server hands it over to each, and returns an :class:`Outcome` saying whether the
request reached the app (forward auth: was answered 200) and as whom. Tables of attacks run each row through
:data:`VIAS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote_from_bytes, unquote, unquote_to_bytes

from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.runtime import Runtime
from tests.support.mfa import FAST_HASHER, Clock, make_config

Via = Literal["wsgi", "asgi", "forward"]
VIAS: tuple[Via, ...] = ("wsgi", "asgi", "forward")
#: where the client connects from in process (not a trusted proxy); forward auth's proxy is 127.0.0.1
CLIENT_ADDR = "198.51.100.7"
_VISIBLE = bytes(range(0x21, 0x7F)).decode("ascii")


@dataclass(frozen=True)
class Outcome:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    reached: bool  # the app ran (forward auth: the original request may pass)
    user: str | None  # who the app was told is signed in (REMOTE_USER / Remote-User)
    path: str | None  # the path the app got (text form); None for forward auth

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Recorder:
    """The protected app: records the path and user it was handed, answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"].encode("latin-1").decode("utf-8")
        self.calls.append((path, environ.get("REMOTE_USER")))
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"app"]

    async def asgi(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        identity = scope.get("mfa.identity")
        self.calls.append((scope["path"], identity.username if identity is not None else None))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"app"})


class Trio:
    """The three adapters over one store (``database``), built from one configuration (``make_config``'s
    ``overrides``); the forward-auth app also trusts 127.0.0.1 as its proxy."""

    def __init__(self, database: str, clock: Clock | None = None, **overrides: Any) -> None:
        self.clock = clock or Clock()
        self.recorder = _Recorder()
        config = make_config(database, **overrides)
        self.wsgi = MFAMiddleware(self.recorder.wsgi, config, clock=self.clock, password_hasher=FAST_HASHER)
        self.wsgi.runtime.store.upgrade()
        self.asgi = ASGIMFAMiddleware(self.recorder.asgi, config, clock=self.clock, password_hasher=FAST_HASHER)
        proxies = sorted({*overrides.get("trusted_proxies", []), "127.0.0.1"})
        self.forward_runtime = Runtime(make_config(database, **{**overrides, "trusted_proxies": proxies}),
                                       clock=self.clock, password_hasher=FAST_HASHER)
        self.forward = ForwardAuthApp(self.forward_runtime)

    @property
    def runtime(self) -> Runtime:
        return self.wsgi.runtime

    def close(self) -> None:
        for runtime in (self.wsgi.runtime, self.asgi.runtime, self.forward_runtime):
            runtime.close()

    def send(self, via: Via, target: bytes, *, method: str = "GET", headers: dict[str, str] | None = None,
             body: bytes = b"", environ: dict[str, Any] | None = None) -> Outcome:
        """``method target`` with ``headers`` (values as latin-1 text) and ``body``. ``environ`` adds WSGI environ
        keys a server sets itself (such as ``REMOTE_USER``): in process only."""
        self.recorder.calls.clear()
        headers = dict(headers or {})
        path = target.partition(b"?")[0]
        if via == "forward" and not (path == b"/_mfa" or path.startswith(b"/_mfa/")):
            return self._ask(target, method, headers)
        if via == "asgi":
            return self._asgi(target, method, headers, body)
        if via == "wsgi":
            return self._wsgi(self.wsgi, target, method, headers, body, environ or {}, CLIENT_ADDR)
        # The sign-in pages behind nginx: the proxy appends the client's address to X-Forwarded-For.
        xff = headers.pop("X-Forwarded-For", None)
        headers["X-Forwarded-For"] = f"{xff}, {CLIENT_ADDR}" if xff else CLIENT_ADDR
        return self._wsgi(self.forward, target, method, headers, body, {}, "127.0.0.1")

    def _reached(self, status: int, out_headers: dict[str, str], data: bytes) -> Outcome:
        calls = self.recorder.calls
        if calls:
            path, user = calls[-1]
            return Outcome(status, out_headers, data, True, user, path)
        return Outcome(status, out_headers, data, False, None, None)

    def _wsgi(self, app: Any, target: bytes, method: str, headers: dict[str, str], body: bytes,
              extra: dict[str, Any], peer: str) -> Outcome:
        raw_path, _, query = target.partition(b"?")
        overrides = {"PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
                     "QUERY_STRING": query.decode("latin-1"), "REQUEST_URI": target.decode("latin-1"),
                     "REMOTE_ADDR": peer, **extra}
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            overrides[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
        response = Client(app, use_cookies=False).open("/", method=method, data=body, environ_overrides=overrides)
        out = {k.lower(): v for k, v in response.headers.items()}
        return self._reached(response.status_code, out, response.get_data())

    def _asgi(self, target: bytes, method: str, headers: dict[str, str], body: bytes) -> Outcome:
        ascii_target = quote_from_bytes(target, safe=_VISIBLE).encode("ascii")
        raw_path, _, query = ascii_target.partition(b"?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": unquote(raw_path.decode("ascii")), "raw_path": raw_path,
                 "query_string": query, "root_path": "", "client": (CLIENT_ADDR, 5000), "server": ("localhost", 80),
                 "headers": [(b"host", b"localhost"),
                             *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())]}
        sent: list[dict[str, Any]] = []
        inbox = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return inbox.pop(0) if inbox else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        asyncio.run(self.asgi(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        out: dict[str, str] = {}
        for k, v in start["headers"]:
            name, value = k.decode("latin-1").lower(), v.decode("latin-1")
            out[name] = f"{out[name]}, {value}" if name in out and name != "set-cookie" else value
        return self._reached(start["status"], out, data)

    def _ask(self, target: bytes, method: str, headers: dict[str, str]) -> Outcome:
        """nginx ``auth_request``: the original request's headers, plus what the sample nginx.conf sets (the
        original method and URI, and the client address appended to ``X-Forwarded-For``)."""
        forwarded = {**headers, "X-Original-URI": target.decode("latin-1"), "X-Original-Method": method}
        xff = headers.get("X-Forwarded-For")
        forwarded["X-Forwarded-For"] = f"{xff}, {CLIENT_ADDR}" if xff else CLIENT_ADDR
        overrides = {"REMOTE_ADDR": "127.0.0.1"}
        for name, value in forwarded.items():
            overrides["HTTP_" + name.upper().replace("-", "_")] = value
        response = Client(self.forward, use_cookies=False).get("/_mfa/auth/nginx", environ_overrides=overrides)
        out = {k.lower(): v for k, v in response.headers.items()}
        user = out.get("remote-user") or None
        return Outcome(response.status_code, out, response.get_data(), response.status_code == 200, user, None)
