"""Trusted networks (issue 12): browsers on a trusted network sign in with the primary factor alone; the session
says so and is stepped up when used from elsewhere; Basic clients there keep the primary password until they create
an app password; rules match on networks. The client address is the one the trusted-proxy chain gives.

Attacker's tests first: a spoofed X-Forwarded-For from an untrusted peer, a trusted-network session replayed from
outside (WSGI, ASGI and forward auth), the primary password on Basic from outside and after an app password.
Every test runs on a real SQLite file and a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
from base64 import b64encode
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.config import ConfigError, config_from_dict
from mfa_middleware.core.networks import NetworkSet, regulation_key
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.runtime import Runtime
from tests.support.mfa import ENCRYPTION_KEY, FAST_HASHER, SECRET_KEY, Browser, Clock, make_config, make_middleware

PASSWORD = "correct horse battery staple"
INSIDE = "10.1.2.3"
OUTSIDE = "198.51.100.7"
PROXY = "127.0.0.1"

NETWORKS = {"networks": {"intranet": ["10.0.0.0/8", "fd00::/8"], "office": ["intranet", "192.0.2.0/24"]},
            "trusted_networks": ["office"],
            "rules": [{"path": "/mail/*", "policy": "two_factor", "basic": True, "exempt": False},
                      {"path": "/*", "policy": "two_factor", "exempt": False}]}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def enforced_user(mw: MFAMiddleware, name: str = "alice") -> None:
    rt = mw.runtime
    rt.accounts.add(name, actor="test", password=PASSWORD, state="enforced")
    user = rt.store.get_user(name)
    assert user is not None
    rt.store.add_method(user.id, "totp", "phone", b"x" * 20, now=rt.clock(), confirmed=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def site(database_url: str, clock: Clock) -> Any:
    mw = make_middleware(database_url, clock, **NETWORKS)
    enforced_user(mw)
    yield mw
    mw.runtime.close()


# -- attacker's tests ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trusted_proxies, peer, forwarded", [
    pytest.param([], OUTSIDE, INSIDE, id="no-trusted-proxy-configured"),
    pytest.param([PROXY], OUTSIDE, INSIDE, id="peer-is-not-the-proxy"),
    pytest.param([PROXY], OUTSIDE, f"{INSIDE}, {PROXY}", id="chain-ending-in-the-proxy-from-an-untrusted-peer"),
    pytest.param([PROXY], PROXY, f"{INSIDE}, {OUTSIDE}", id="spoofed-hop-left-of-the-real-client"),
])
def test_spoofed_forwarded_for_never_makes_a_trusted_network(database_url: str, clock: Clock,
                                                             trusted_proxies: list[str], peer: str,
                                                             forwarded: str) -> None:
    mw = make_middleware(database_url, clock, trusted_proxies=trusted_proxies, **NETWORKS)
    try:
        enforced_user(mw)
        browser = Browser(mw)
        browser.remote_addr = peer
        page = browser.get("/_mfa/login?next=/", headers={"X-Forwarded-For": forwarded})
        from tests.support.mfa import csrf_of
        answer = browser.post("/_mfa/login", {"username": "alice", "password": PASSWORD, "next": "/",
                                              "csrf_token": csrf_of(page.text)},
                              headers={"X-Forwarded-For": forwarded})
        assert answer.status_code == 303
        assert answer.headers["Location"].endswith("/_mfa/verify"), "a spoofed header made a trusted network"
        response = Client(mw).get("/mail/inbox", headers={**basic("alice", PASSWORD), "X-Forwarded-For": forwarded},
                                  environ_base={"REMOTE_ADDR": peer})
        assert response.status_code == 401
    finally:
        mw.runtime.close()


def test_the_proxy_chain_gives_the_trusted_address(database_url: str, clock: Clock) -> None:
    mw = make_middleware(database_url, clock, trusted_proxies=[PROXY], **NETWORKS)
    try:
        enforced_user(mw)
        browser = Browser(mw)
        browser.remote_addr = PROXY
        from tests.support.mfa import csrf_of
        page = browser.get("/_mfa/login?next=/", headers={"X-Forwarded-For": INSIDE})
        answer = browser.post("/_mfa/login", {"username": "alice", "password": PASSWORD, "next": "/",
                                              "csrf_token": csrf_of(page.text)}, headers={"X-Forwarded-For": INSIDE})
        assert answer.status_code == 303 and answer.headers["Location"] == "/"
        assert browser.get("/", headers={"X-Forwarded-For": INSIDE}).text.endswith("level=1")
    finally:
        mw.runtime.close()


def sign_in_inside(mw: MFAMiddleware, address: str = INSIDE) -> Browser:
    browser = Browser(mw)
    browser.remote_addr = address
    answer = browser.login("alice", PASSWORD)
    assert answer.status_code == 303 and answer.headers["Location"] == "/", answer.text
    return browser


def test_sign_in_on_a_trusted_network_needs_only_the_password_and_is_audited(site: MFAMiddleware) -> None:
    browser = sign_in_inside(site)
    assert browser.get("/docs").text == "app path=/docs user=alice level=1"
    rows = site.runtime.store.list_audit(username="alice", event="primary", result="trusted_network", limit=5)
    assert len(list(rows)) == 1


def cookie_of(browser: Browser) -> str:
    value = browser.cookie("mfa_session")
    assert value is not None
    return f"mfa_session={value}"


def test_a_trusted_network_session_replayed_from_outside_steps_up_wsgi(site: MFAMiddleware) -> None:
    cookie = cookie_of(sign_in_inside(site))
    outside = Browser(site)
    outside.remote_addr = OUTSIDE
    response = outside.get_with_cookie_header("/docs", cookie)
    assert response.status_code == 302 and "/_mfa/step-up" in response.headers["Location"]
    api = outside.get_with_cookie_header("/docs", cookie, headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.json["error"] == "authentication_required"  # type: ignore[index]


def test_a_trusted_network_session_replayed_from_outside_steps_up_asgi(site: MFAMiddleware, clock: Clock) -> None:
    cookie = cookie_of(sign_in_inside(site))

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"app"})

    mw = ASGIMFAMiddleware(app, site.runtime.config, clock=clock, password_hasher=FAST_HASHER)

    async def get(address: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=mw, client=(address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.get("/docs", headers={"Cookie": cookie})

    try:
        assert asyncio.run(get(INSIDE)).status_code == 200
        outside = asyncio.run(get(OUTSIDE))
        assert outside.status_code == 302 and "/_mfa/step-up" in outside.headers["Location"]
    finally:
        mw.runtime.close()


def test_a_trusted_network_session_replayed_from_outside_steps_up_forward_auth(site: MFAMiddleware,
                                                                               clock: Clock) -> None:
    cookie = cookie_of(sign_in_inside(site))
    from dataclasses import replace
    rt = Runtime(replace(site.runtime.config, trusted_proxies=(PROXY,)), clock=clock, password_hasher=FAST_HASHER)
    app = ForwardAuthApp(rt)
    try:
        def ask(address: str) -> int:
            headers = {"Cookie": cookie, "X-Original-URI": "/docs", "X-Original-Method": "GET",
                       "X-Forwarded-Proto": "http", "X-Forwarded-For": address}
            return Client(app, use_cookies=False).get("/_mfa/auth/nginx", headers=headers,
                                                      environ_base={"REMOTE_ADDR": PROXY}).status_code
        assert ask(INSIDE) == 200
        assert ask(OUTSIDE) == 401  # nginx then sends the browser to sign in (step up)
    finally:
        rt.close()


@pytest.mark.parametrize("address, inside", [
    pytest.param("10.200.0.1", True, id="ipv4"),
    pytest.param("::ffff:10.200.0.1", True, id="ipv4-mapped"),
    pytest.param("fd00::1", True, id="ipv6"),
    pytest.param("192.0.2.9", True, id="through-an-alias-of-an-alias"),
    pytest.param("::ffff:198.51.100.7", False, id="ipv4-mapped-outside"),
    pytest.param("2001:db8::1", False, id="ipv6-outside"),
])
def test_addresses(site: MFAMiddleware, address: str, inside: bool) -> None:
    browser = Browser(site)
    browser.remote_addr = address
    answer = browser.login("alice", PASSWORD)
    assert (answer.headers["Location"] == "/") is inside


# -- Basic -----------------------------------------------------------------------------------------------------------
def test_basic_primary_password_on_and_off_the_network_before_and_after_an_app_password(site: MFAMiddleware,
                                                                                       clock: Clock) -> None:
    client = Client(site)

    def mail(address: str, password: str) -> int:
        return client.get("/mail/inbox", headers=basic("alice", password),
                          environ_base={"REMOTE_ADDR": address}).status_code

    assert mail(OUTSIDE, PASSWORD) == 401  # enforced: app passwords only, from outside
    assert mail(INSIDE, PASSWORD) == 200  # the trusted network: the primary password still works
    assert mail(OUTSIDE, PASSWORD) == 401  # the cached credential is no good from outside either
    user = site.runtime.store.get_user("alice")
    assert user is not None
    _record, app_password = site.runtime.app_passwords.create(user, "laptop", actor="alice")
    clock.advance(1)
    site.runtime.revocations.refresh(clock.now)
    assert mail(INSIDE, PASSWORD) == 401  # from now on only app passwords, also on the trusted network
    assert mail(INSIDE, app_password) == 200
    assert mail(OUTSIDE, app_password) == 200


# -- rules on networks and configuration ----------------------------------------------------------------------------
def test_rules_match_on_networks(database_url: str, clock: Clock) -> None:
    mw = make_middleware(database_url, clock, networks={"intranet": ["10.0.0.0/8"]}, rules=[
        {"path": "/admin/*", "policy": "bypass", "networks": ["intranet"]},
        {"path": "/admin/*", "policy": "deny"},
        {"path": "/public/*", "policy": "bypass", "not_networks": ["intranet"]},
        {"path": "/public/*", "policy": "deny"},
    ])
    try:
        client = Client(mw)

        def status(path: str, address: str) -> int:
            return client.get(path, environ_base={"REMOTE_ADDR": address}).status_code

        assert (status("/admin/x", INSIDE), status("/admin/x", OUTSIDE)) == (200, 403)
        assert (status("/public/x", INSIDE), status("/public/x", OUTSIDE)) == (403, 200)
        assert status("/admin/x", "::ffff:10.9.9.9") == 200
    finally:
        mw.runtime.close()


def test_a_rule_may_trust_no_network(database_url: str, clock: Clock) -> None:
    mw = make_middleware(database_url, clock, trusted_networks=["10.0.0.0/8"],
                         rules=[{"path": "/pay/*", "policy": "two_factor", "exempt": False, "trusted_networks": []},
                                {"path": "/*", "policy": "two_factor", "exempt": False}])
    try:
        enforced_user(mw)
        browser = sign_in_inside(mw)
        assert browser.get("/docs").status_code == 200
        assert browser.get("/pay/x").status_code == 302  # this rule trusts no network: step up
    finally:
        mw.runtime.close()


BASE = {"secret_keys": [SECRET_KEY], "encryption_key": ENCRYPTION_KEY, "database": "sqlite://"}


@pytest.mark.parametrize("extra, message", [
    pytest.param({"trusted_networks": ["nowhere"]}, "unknown network alias 'nowhere'", id="unknown-alias"),
    pytest.param({"trusted_networks": ["10.0.0.0/33"]}, "'10.0.0.0/33' is not a network", id="bad-cidr"),
    pytest.param({"networks": {"a": ["b"], "b": ["a"]}}, "cycle: a -> b -> a", id="cycle"),
    pytest.param({"networks": {"a": ["a"]}}, "cycle: a -> a", id="self-cycle"),
    pytest.param({"networks": {"a": []}}, "list at least one network", id="empty-alias"),
    pytest.param({"rules": [{"path": "/*", "policy": "bypass", "networks": ["x"]}]}, "rules[0].networks: unknown",
                 id="unknown-alias-in-rule"),
    pytest.param({"rules": [{"path": "/*", "policy": "bypass", "networks": []}]}, "would select no request",
                 id="empty-rule-networks"),
])
def test_configuration_errors_are_clear(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        config_from_dict({**BASE, **extra}, source="t.toml")


def test_aliases_resolve_once() -> None:
    config = config_from_dict({**BASE, **NETWORKS}, source="t.toml")
    assert config.networks["office"] == ("10.0.0.0/8", "fd00::/8", "192.0.2.0/24")
    assert config.trusted_networks == config.networks["office"]


@pytest.mark.parametrize("address, key", [
    pytest.param("::ffff:192.0.2.1", "192.0.2.1", id="ipv4-mapped"),
    pytest.param("2001:db8::1:2", "2001:db8::/64", id="ipv6-by-64"),
    pytest.param("192.0.2.1", "192.0.2.1", id="ipv4"),
])
def test_regulation_keys(address: str, key: str) -> None:
    assert regulation_key(address) == key


def test_network_sets() -> None:
    nets = NetworkSet(["10.0.0.0/8", "fd00::/8"])
    assert nets.contains("10.0.0.1") and nets.contains("::ffff:10.0.0.1") and nets.contains("fd00::5")
    assert not nets.contains("") and not nets.contains("unknown") and not nets.contains("11.0.0.1")
    assert make_config("sqlite://").trusted_networks == ()
