"""One scenario table, three adapters: WSGI, ASGI and forward-auth give the same outcome for the same request."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.config import Config
from mfa_middleware.core.tokens import Session
from mfa_middleware.runtime import Runtime
from tests.support.mfa import DEFAULT_RULES, FAST_HASHER, Clock, echo_app, make_config

RULES = [{"path": "/dav/*", "policy": "two_factor", "basic": True}, *DEFAULT_RULES]
Outcome = tuple[str, ...]


@dataclass(frozen=True)
class Scenario:
    path: str
    cookie: str | None = None  # which session: full | primary | expired | revoked
    accept: str = "text/html"
    basic: bool = False
    expect: Outcome = ()


SCENARIOS = [
    pytest.param(Scenario("/hello", expect=("redirect", "/_mfa/login?next=/hello")), id="anonymous"),
    pytest.param(Scenario("/hello", cookie="primary", expect=("redirect", "/_mfa/step-up?next=/hello")),
                 id="primary-only"),
    pytest.param(Scenario("/hello", cookie="full", expect=("pass", "alice")), id="full-session"),
    pytest.param(Scenario("/hello", cookie="expired", expect=("redirect", "/_mfa/login?next=/hello&reason=expired")),
                 id="expired"),
    pytest.param(Scenario("/hello", cookie="revoked",
                          expect=("redirect", "/_mfa/login?next=/hello&reason=signed_out")),
                 id="revoked"),
    pytest.param(Scenario("/public/page", expect=("pass", "-")), id="bypass-route"),
    pytest.param(Scenario("/blocked/x", cookie="full", expect=("403",)), id="deny-route"),
    pytest.param(Scenario("/hello", accept="application/json", expect=("401",)), id="json-client"),
    pytest.param(Scenario("/dav/inbox", accept="*/*", basic=True, expect=("pass", "alice")),
                 id="basic-app-password"),
    pytest.param(Scenario("/dav/inbox", accept="*/*", expect=("401-basic",)), id="basic-missing"),
    pytest.param(Scenario("/admin/x", cookie="full", expect=("pass", "alice")), id="group-admitted"),
]


@dataclass
class World:
    clock: Clock
    config: Config
    cookies: dict[str, str]
    app_password: str
    runtimes: list[Runtime]


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    clock = Clock()
    config = make_config(sqlite_url, rules=RULES, trusted_proxies=["127.0.0.1"])
    setup = Runtime(config, clock=clock, password_hasher=FAST_HASHER)
    setup.store.upgrade()
    user = setup.accounts.add("alice", actor="test", password="main password", groups=["admins"],
                              state="enforced")
    _record, app_password = setup.app_passwords.create(user, "laptop", actor="test")
    now = clock.now
    full = Session("sid-full", "alice", ("admins",), 2, ("forms", "totp"), now, now, now, now, False)
    sessions = {
        "full": full,
        "primary": replace(full, sid="sid-primary", level=1, methods=("forms",), mfa_at=None),
        "expired": replace(full, sid="sid-expired", issued_at=now - 13 * 3600, last_seen=now - 60),
        "revoked": replace(full, sid="sid-revoked"),
    }
    setup.store.add_revocation("alice", now=now, session_id="sid-revoked")
    cookies = {name: setup.codec.dump_session(s) for name, s in sessions.items()}
    w = World(clock, config, cookies, app_password, [setup])
    yield w
    for rt in w.runtimes:
        rt.close()


def headers_for(world: World, s: Scenario) -> dict[str, str]:
    headers = {"Accept": s.accept}
    if s.cookie:
        headers["Cookie"] = f"mfa_session={world.cookies[s.cookie]}"
    if s.basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"alice:{world.app_password}".encode()).decode()
    return headers


def classify(status: int, headers: Any, body: str, user_header: str | None = None) -> Outcome:
    if status == 200:
        if user_header is not None:
            return ("pass", user_header or "-")
        user = body.split("user=", 1)[1].split(" ", 1)[0] if "user=" in body else "?"
        return ("pass", user)
    if status in (302, 303):
        return ("redirect", headers["Location"])
    if status == 401:
        if "WWW-Authenticate" in headers and headers["WWW-Authenticate"].startswith("Basic"):
            return ("401-basic",)
        if headers.get("Location"):
            return ("redirect", headers["Location"])
        return ("401",)
    return (str(status),)


def via_wsgi(world: World, s: Scenario) -> Outcome:
    mw = MFAMiddleware(echo_app, world.config, clock=world.clock, password_hasher=FAST_HASHER)
    world.runtimes.append(mw.runtime)
    response = Client(mw, use_cookies=False).get(s.path, headers=headers_for(world, s), base_url="http://localhost",
                                                 environ_base={"REMOTE_ADDR": "127.0.0.1"})
    return classify(response.status_code, response.headers, response.text)


async def echo_asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    identity = scope.get("mfa.identity")
    body = f"app path={scope['path']} user={identity.username if identity else '-'}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def via_asgi(world: World, s: Scenario) -> Outcome:
    mw = ASGIMFAMiddleware(echo_asgi, world.config, clock=world.clock, password_hasher=FAST_HASHER)
    world.runtimes.append(mw.runtime)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=mw, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.get(s.path, headers=headers_for(world, s))

    response = asyncio.run(go())
    return classify(response.status_code, response.headers, response.text)


def via_forward_auth(world: World, s: Scenario) -> Outcome:
    rt = Runtime(world.config, clock=world.clock, password_hasher=FAST_HASHER)
    world.runtimes.append(rt)
    app = ForwardAuthApp(rt)
    headers = {**headers_for(world, s), "X-Original-URI": s.path, "X-Original-Method": "GET",
               "X-Forwarded-Proto": "http", "X-Forwarded-For": "192.0.2.10"}
    response = Client(app, use_cookies=False).get("/_mfa/auth/nginx", headers=headers,
                                                  environ_base={"REMOTE_ADDR": "127.0.0.1"})
    user = response.headers.get("Remote-User", "") if response.status_code == 200 else None
    return classify(response.status_code, response.headers, response.text, user_header=user)


ADAPTERS = [pytest.param(via_wsgi, id="wsgi"), pytest.param(via_asgi, id="asgi"),
            pytest.param(via_forward_auth, id="forward-auth")]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_same_outcome_everywhere(world: World, adapter: Callable[[World, Scenario], Outcome],
                                 scenario: Scenario) -> None:
    assert adapter(world, scenario) == scenario.expect


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_client_remote_user_header_is_never_the_identity(world: World,
                                                         adapter: Callable[[World, Scenario], Outcome]) -> None:
    spoof = Scenario("/hello", expect=())
    original = headers_for

    def spoofing(w: World, s: Scenario) -> dict[str, str]:
        return {**original(w, s), "Remote-User": "alice", "Remote_User": "alice", "X-Remote-User": "alice"}

    globals()["headers_for"] = spoofing
    try:
        assert adapter(world, spoof) == ("redirect", "/_mfa/login?next=/hello")
    finally:
        globals()["headers_for"] = original
