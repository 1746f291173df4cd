"""The sign-in attacks over real HTTP, through each adapter: the WSGI middleware and the forward-auth server on a
threaded werkzeug server, the ASGI middleware on uvicorn. The sign-in pages are shared, so each adapter must
refuse the same replayed pending cookie and end the same revoked sign-in."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
import pytest
import uvicorn

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.runtime import Runtime
from tests.support.mfa import FAST_HASHER, Clock, csrf_of, echo_app, make_config, secret_of
from tests.support.servers import free_port, serve_wsgi

PASSWORD = "correct horse battery"


async def asgi_echo(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    body = f"app path={scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Served:
    base: str
    runtime: Runtime
    clock: Clock


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(params=["wsgi", "asgi", "forward-auth"])
def served(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Served]:
    clock = Clock()
    config = make_config(sqlite_url, trusted_proxies=["127.0.0.1"])
    runtime: Runtime
    if request.param == "wsgi":
        mw = MFAMiddleware(echo_app, config, clock=clock, password_hasher=FAST_HASHER)
        runtime, server = mw.runtime, serve_wsgi(mw)
    elif request.param == "asgi":
        amw = ASGIMFAMiddleware(asgi_echo, config, clock=clock, password_hasher=FAST_HASHER)
        runtime, server = amw.runtime, uvicorn_server(amw)
    else:
        runtime = Runtime(config, clock=clock, password_hasher=FAST_HASHER)
        server = serve_wsgi(ForwardAuthApp(runtime))
    runtime.store.upgrade()
    runtime.accounts.add("bob", actor="test", password=PASSWORD)
    with server as base:
        yield Served(base, runtime, clock)
    runtime.close()


def login(client: httpx.Client) -> httpx.Response:
    page = client.get("/_mfa/login?next=/hello")
    return client.post("/_mfa/login", data={"username": "bob", "password": PASSWORD, "next": "/hello",
                                            "csrf_token": csrf_of(page.text)})


def enroll(client: httpx.Client, clock: Clock) -> str:
    start = client.get("/_mfa/enroll")
    client.post("/_mfa/enroll", data={"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
    page = client.get("/_mfa/enroll")
    secret = secret_of(page.text)
    done = client.post("/_mfa/enroll", data={"action": "confirm", "code": pyotp.TOTP(secret).at(clock.now),
                                              "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303, done.text
    return secret


def test_old_pending_cookie_cannot_enroll_a_second_method(served: Served) -> None:
    with httpx.Client(base_url=served.base) as attacker, httpx.Client(base_url=served.base) as owner:
        assert login(attacker).headers["location"] == "/_mfa/enroll"
        start = attacker.get("/_mfa/enroll")
        token = csrf_of(start.text)
        served.clock.advance(1)
        assert login(owner).status_code == 303
        enroll(owner, served.clock)

        started = attacker.post("/_mfa/enroll", data={"action": "start", "method": "totp", "csrf_token": token})
        assert started.status_code == 303 and started.headers["location"] == "/_mfa/verify"
        page = attacker.get("/_mfa/verify")
        assert page.status_code == 200 and "Verify your identity" in page.text
        assert not re.search(r'id="secret"', page.text)
        user = served.runtime.store.get_user("bob")
        assert user is not None
        assert len(served.runtime.store.list_methods(user.id, confirmed_only=False)) == 1
        assert "mfa_session" not in attacker.cookies


def test_revoked_sign_in_cannot_finish(served: Served) -> None:
    with httpx.Client(base_url=served.base) as owner, httpx.Client(base_url=served.base) as thief:
        login(owner)
        secret = enroll(owner, served.clock)
        served.clock.advance(31)
        assert login(thief).headers["location"] == "/_mfa/verify"
        page = thief.get("/_mfa/verify")
        served.clock.advance(1)
        served.runtime.accounts.set_password("bob", "a brand new passphrase", actor="helpdesk")
        response = thief.post("/_mfa/verify", data={"code": pyotp.TOTP(secret).at(served.clock.now),
                                                     "csrf_token": csrf_of(page.text)})
        assert response.status_code == 401
        assert "mfa_session" not in thief.cookies
