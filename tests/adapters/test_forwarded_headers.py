"""Forwarding headers reach the app only from a trusted proxy: from any other peer they are the client's own
words, and an app that reads them (instead of ``mfa.client_ip``) must not be fooled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from tests.support.mfa import FAST_HASHER, Clock, make_config

SPOOFED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
           "Forwarded": "for=203.0.113.9;proto=https"}
SEEN_KEYS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_FORWARDED")


def wsgi_seen(sqlite_url: str, peer: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update({k: environ.get(k) for k in SEEN_KEYS}, client=environ.get("mfa.client_ip"),
                    scheme=environ.get("wsgi.url_scheme"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    mw = MFAMiddleware(app, make_config(sqlite_url, trusted_proxies=["10.0.0.1"]), clock=Clock(),
                       password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    try:
        response = Client(mw).get("/public/x", headers=SPOOFED, environ_base={"REMOTE_ADDR": peer})
        assert response.status_code == 200
    finally:
        mw.runtime.close()
    return seen


def asgi_seen(sqlite_url: str, peer: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        seen.update({key: headers.get(key[5:].lower().replace("_", "-")) for key in SEEN_KEYS},
                    client=scope.get("mfa.client_ip"), scheme=scope.get("scheme"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = ASGIMFAMiddleware(app, make_config(sqlite_url, trusted_proxies=["10.0.0.1"]), clock=Clock(),
                           password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    scope = {"type": "http", "method": "GET", "path": "/public/x", "raw_path": b"/public/x", "query_string": b"",
             "scheme": "http", "client": (peer, 5000), "server": ("testserver", 80), "http_version": "1.1",
             "headers": [(b"host", b"testserver"), *[(k.lower().encode(), v.encode()) for k, v in SPOOFED.items()]]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    try:
        asyncio.run(mw(scope, receive, send))
    finally:
        mw.runtime.close()
    return seen


@pytest.mark.parametrize("seen_by", [pytest.param(wsgi_seen, id="wsgi"), pytest.param(asgi_seen, id="asgi")])
def test_untrusted_peer_forwarding_headers_never_reach_the_app(sqlite_url: str, seen_by: Any) -> None:
    seen = seen_by(sqlite_url, "192.0.2.50")
    assert all(seen[k] is None for k in SEEN_KEYS), seen
    assert seen["client"] == "192.0.2.50" and seen["scheme"] == "http"


@pytest.mark.parametrize("seen_by", [pytest.param(wsgi_seen, id="wsgi"), pytest.param(asgi_seen, id="asgi")])
def test_trusted_proxy_forwarding_headers_reach_the_app(sqlite_url: str, seen_by: Any) -> None:
    seen = seen_by(sqlite_url, "10.0.0.1")
    assert seen["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"
    assert seen["client"] == "203.0.113.9" and seen["scheme"] == "https"
