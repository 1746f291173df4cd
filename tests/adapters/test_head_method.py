"""HEAD meets the rule of GET through every adapter (WSGI, ASGI, forward auth).

Frameworks answer HEAD with the GET handler, so a rule written for ``methods = ["GET"]`` must decide a HEAD
request exactly as it decides the GET: an attacker who sends HEAD must not fall through to a later, weaker rule
(here a catch-all ``bypass``) and learn the status and headers of a page the GET may not see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.runtime import Runtime
from tests.support.mfa import FAST_HASHER, Clock, echo_app, make_config

RULES: list[dict[str, Any]] = [
    {"path": "/reports/*", "policy": "two_factor", "methods": ["GET"]},
    {"path": "/secret/*", "policy": "deny", "methods": ["GET"]},
    {"path": "/feed/*", "policy": "bypass", "methods": ["GET"]},
    {"path": "/feed/*", "policy": "deny"},
    {"path": "/*", "policy": "bypass"},
]
CASES = [
    pytest.param("/reports/q1", 302, id="two-factor-get-rule-sends-head-to-sign-in"),
    pytest.param("/secret/x", 403, id="deny-get-rule-refuses-head"),
    pytest.param("/feed/x", 200, id="bypass-get-rule-allows-head"),
]
Send = Callable[[str, str], int]


async def _asgi_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else b"page"})


@pytest.fixture(params=[pytest.param("wsgi", id="wsgi"), pytest.param("asgi", id="asgi"),
                        pytest.param("forward-auth", id="forward-auth")])
def send(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Send]:
    """``send(method, path)`` -> the status the adapter answers an anonymous browser with."""
    config = make_config(sqlite_url, rules=RULES, trusted_proxies=["127.0.0.1"])
    html = {"Accept": "text/html"}
    if request.param == "wsgi":
        mw = MFAMiddleware(echo_app, config, clock=Clock(), password_hasher=FAST_HASHER)
        mw.runtime.store.upgrade()
        client = Client(mw, use_cookies=False)
        yield lambda method, path: client.open(path, method=method, headers=html).status_code
        mw.runtime.close()
    elif request.param == "asgi":
        amw = ASGIMFAMiddleware(_asgi_app, config, clock=Clock(), password_hasher=FAST_HASHER)
        amw.runtime.store.upgrade()

        def via_asgi(method: str, path: str) -> int:
            async def go() -> int:
                transport = httpx.ASGITransport(app=amw)
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                    return (await client.request(method, path, headers=html)).status_code
            return asyncio.run(go())

        yield via_asgi
        amw.runtime.close()
    else:
        rt = Runtime(config, clock=Clock(), password_hasher=FAST_HASHER)
        rt.store.upgrade()
        fa = Client(ForwardAuthApp(rt), use_cookies=False)

        def via_forward_auth(method: str, path: str) -> int:
            # Traefik asks with GET and names the original method and URI in headers; a browser redirect is 302.
            return fa.get("/_mfa/auth/forward", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                          headers={**html, "X-Forwarded-Method": method, "X-Forwarded-Uri": path}).status_code

        yield via_forward_auth
        rt.close()


@pytest.mark.parametrize(("path", "status"), CASES)
def test_head_is_decided_exactly_as_get(send: Send, path: str, status: int) -> None:
    assert send("GET", path) == status
    assert send("HEAD", path) == status


def test_other_methods_still_fall_through_to_the_next_rule(send: Send) -> None:
    assert send("POST", "/secret/x") == 200  # the GET rule does not cover POST: the catch-all bypass decides
    assert send("POST", "/feed/x") == 403  # ... and the deny after the GET-only bypass
