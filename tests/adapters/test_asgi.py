"""The ASGI adapter: scope types, WebSocket refusal before accept, no blocking on the hot path."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest

from mfa_middleware import ASGIMFAMiddleware
from mfa_middleware.core.tokens import Session
from tests.support.mfa import DEFAULT_RULES, FAST_HASHER, Clock, make_config

Message = dict[str, Any]


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": scope["mfa.identity"].username})
            await send({"type": "websocket.close", "code": 1000})
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"cache-control", b"public, max-age=60")]})
            await send({"type": "http.response.body", "body": scope["user"].username.encode()})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def parts(sqlite_url: str, clock: Clock) -> Iterator[tuple[ASGIMFAMiddleware, Recorder, str]]:
    app = Recorder()
    rules = [{"path": "/dav/*", "policy": "two_factor", "basic": True}, *DEFAULT_RULES]
    mw = ASGIMFAMiddleware(app, make_config(sqlite_url, rules=rules), clock=clock, password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    mw.runtime.accounts.add("alice", actor="t", password="pw", groups=["admins"])
    now = clock.now
    token = mw.runtime.codec.dump_session(
        Session("sid", "alice", ("admins",), 2, ("forms", "totp"), now, now, now, now, False))
    yield mw, app, token
    mw.runtime.close()


def run(mw: ASGIMFAMiddleware, scope: dict[str, Any], inbox: list[Message]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(mw(scope, receive, send))
    return sent


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"localhost"), *headers], "client": ("127.0.0.1", 5000),
            "server": ("localhost", 80)}


def ws_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    scope = http_scope(path, headers)
    scope.update(type="websocket", scheme="ws", subprotocols=[])
    del scope["method"]
    return scope


def test_lifespan_and_unknown_scopes_pass_through(parts: tuple[ASGIMFAMiddleware, Recorder, str]) -> None:
    mw, app, _ = parts
    sent = run(mw, {"type": "lifespan", "asgi": {"version": "3.0"}}, [{"type": "lifespan.startup"}])
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert app.scopes[-1]["type"] == "lifespan" and "mfa.identity" not in app.scopes[-1]


def test_websocket_refused_before_accept_when_anonymous(parts: tuple[ASGIMFAMiddleware, Recorder, str]) -> None:
    mw, app, _ = parts
    sent = run(mw, ws_scope("/chat", []), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert app.scopes == []  # the app never saw it


def test_websocket_with_session_reaches_the_app(parts: tuple[ASGIMFAMiddleware, Recorder, str]) -> None:
    mw, _, token = parts
    sent = run(mw, ws_scope("/chat", [(b"cookie", f"mfa_session={token}".encode())]),
               [{"type": "websocket.connect"}])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "alice"


def test_hot_path_runs_nothing_in_a_thread(parts: tuple[ASGIMFAMiddleware, Recorder, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    mw, app, token = parts
    scope = http_scope("/hello", [(b"cookie", f"mfa_session={token}".encode())])
    run(mw, dict(scope), [])  # the first request fills the revocation view (in a thread)

    def forbidden(*_: object) -> None:
        raise AssertionError("the hot path must not use a worker thread")

    monkeypatch.setattr(asyncio.BaseEventLoop, "run_in_executor", forbidden)
    sent = run(mw, dict(scope), [])
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"alice"
    inner = app.scopes[-1]
    assert inner["user"].is_authenticated and inner["auth"].scopes == ["authenticated", "mfa", "group:admins"]


def test_basic_cache_miss_goes_to_a_thread_then_hits_on_the_loop(
        parts: tuple[ASGIMFAMiddleware, Recorder, str], monkeypatch: pytest.MonkeyPatch) -> None:
    mw, _, _ = parts
    user = mw.runtime.accounts.get("alice")
    _record, password = mw.runtime.app_passwords.create(user, "phone", actor="t")
    auth = b"Basic " + base64.b64encode(f"alice:{password}".encode())
    scope = http_scope("/dav/x", [(b"authorization", auth)])
    calls: list[object] = []
    real = asyncio.BaseEventLoop.run_in_executor

    def counting(self: asyncio.BaseEventLoop, executor: Any, fn: Any, *args: Any) -> Any:
        calls.append(fn)
        return real(self, executor, fn, *args)

    monkeypatch.setattr(asyncio.BaseEventLoop, "run_in_executor", counting)
    assert run(mw, dict(scope), [])[0]["status"] == 200
    assert len(calls) == 1  # argon2 and the store ran in a worker thread
    assert run(mw, dict(scope), [])[0]["status"] == 200
    assert len(calls) == 1  # the cached credential was checked on the loop


def test_refreshed_cookie_added_to_response_start(parts: tuple[ASGIMFAMiddleware, Recorder, str],
                                                  clock: Clock) -> None:
    mw, _, token = parts
    clock.advance(120)
    sent = run(mw, http_scope("/hello", [(b"cookie", f"mfa_session={token}".encode())]), [])
    headers = dict(sent[0]["headers"])
    assert headers[b"set-cookie"].startswith(b"mfa_session=")
    assert headers[b"cache-control"] == b"private, no-store" and headers[b"vary"] == b"Cookie"


def test_pages_run_through_the_adapter(parts: tuple[ASGIMFAMiddleware, Recorder, str]) -> None:
    mw, _, _ = parts
    sent = run(mw, http_scope("/_mfa/login", []), [{"type": "http.request", "body": b"", "more_body": False}])
    assert sent[0]["status"] == 200 and b"Username" in sent[1]["body"]
    big = [{"type": "http.request", "body": b"x" * 70_000, "more_body": False}]
    scope = http_scope("/_mfa/login", [])
    scope["method"] = "POST"
    assert run(mw, scope, big)[0]["status"] == 413


def test_websocket_accept_carries_a_refreshed_cookie(parts: tuple[ASGIMFAMiddleware, Recorder, str],
                                                     clock: Clock) -> None:
    mw, _, token = parts
    clock.advance(120)
    sent = run(mw, ws_scope("/chat", [(b"cookie", f"mfa_session={token}".encode())]),
               [{"type": "websocket.connect"}])
    accept = sent[0]
    assert accept["type"] == "websocket.accept"
    assert any(k == b"set-cookie" and v.startswith(b"mfa_session=") for k, v in accept["headers"])


def test_underscore_remote_user_headers_are_removed(parts: tuple[ASGIMFAMiddleware, Recorder, str]) -> None:
    mw, app, token = parts
    scope = http_scope("/hello", [(b"cookie", f"mfa_session={token}".encode()), (b"remote_user", b"mallory"),
                                  (b"x-remote-user", b"mallory")])
    run(mw, scope, [])
    assert all(k not in (b"remote_user", b"x-remote-user") for k, _ in app.scopes[-1]["headers"])
