"""The forward-auth endpoints: trust, the two redirect styles, and the Remote-* headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from werkzeug.test import Client

from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.core.tokens import Session
from mfa_middleware.runtime import Runtime
from tests.support.mfa import FAST_HASHER, Clock, make_config

PROXY = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.fixture
def app(sqlite_url: str) -> Iterator[ForwardAuthApp]:
    rt = Runtime(make_config(sqlite_url, trusted_proxies=["127.0.0.1"]), clock=Clock(), password_hasher=FAST_HASHER)
    rt.store.upgrade()
    yield ForwardAuthApp(rt)
    rt.close()


def get(app: ForwardAuthApp, path: str, headers: dict[str, str], peer: dict[str, str] = PROXY) -> object:
    return Client(app, use_cookies=False).get(path, headers=headers, environ_base=peer)


def test_untrusted_peer_is_refused_whatever_it_sends(app: ForwardAuthApp) -> None:
    response = get(app, "/_mfa/auth/forward", {"X-Forwarded-Uri": "/public/x"}, {"REMOTE_ADDR": "10.0.0.9"})
    assert response.status_code == 403  # type: ignore[attr-defined]


def test_missing_uri_is_a_misconfiguration_not_a_pass(app: ForwardAuthApp) -> None:
    response = get(app, "/_mfa/auth/nginx", {})
    assert response.status_code == 403 and b"X-Original-URI" in response.data  # type: ignore[attr-defined]


def test_traefik_gets_an_absolute_redirect_on_the_original_host(app: ForwardAuthApp) -> None:
    response = get(app, "/_mfa/auth/forward", {"X-Forwarded-Uri": "/hello", "X-Forwarded-Host": "intranet.example",
                                               "X-Forwarded-Proto": "https", "Accept": "text/html"})
    assert response.status_code == 302  # type: ignore[attr-defined]
    assert response.headers["Location"] == "https://intranet.example/_mfa/login?next=/hello"  # type: ignore[attr-defined]
    bad_host = get(app, "/_mfa/auth/forward", {"X-Forwarded-Uri": "/hello", "X-Forwarded-Host": "evil.com/x?",
                                               "Accept": "text/html"})
    assert bad_host.headers["Location"] == "/_mfa/login?next=/hello"  # type: ignore[attr-defined]


def test_nginx_gets_401_with_location_for_browsers_and_plain_401_for_api(app: ForwardAuthApp) -> None:
    browser = get(app, "/_mfa/auth/nginx", {"X-Original-URI": "/hello", "Accept": "text/html"})
    assert browser.status_code == 401  # type: ignore[attr-defined]
    assert browser.headers["Location"] == "/_mfa/login?next=/hello"  # type: ignore[attr-defined]
    api = get(app, "/_mfa/auth/nginx", {"X-Original-URI": "/hello", "Accept": "application/json"})
    assert api.status_code == 401 and "Location" not in api.headers  # type: ignore[attr-defined]


def test_remote_headers_always_present(app: ForwardAuthApp) -> None:
    anonymous = get(app, "/_mfa/auth/nginx", {"X-Original-URI": "/public/a", "Remote-User": "mallory"})
    assert anonymous.status_code == 200  # type: ignore[attr-defined]
    assert {k: anonymous.headers[k] for k in ("Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name")} == {  # type: ignore[attr-defined]
        "Remote-User": "", "Remote-Groups": "", "Remote-Email": "", "Remote-Name": ""}
    now = app.rt.clock()
    token = app.rt.codec.dump_session(Session("s", "alice", ("admins", "hr"), 2, ("forms", "totp"), now, now, now, now,
                                              False, email="alice@example.com", name="Alice Ågren"))
    signed_in = get(app, "/_mfa/auth/nginx", {"X-Original-URI": "/hello", "Cookie": f"mfa_session={token}"})
    assert signed_in.headers["Remote-User"] == "alice"  # type: ignore[attr-defined]
    assert signed_in.headers["Remote-Groups"] == "admins,hr"  # type: ignore[attr-defined]
    assert signed_in.headers["Remote-Email"] == "alice@example.com"  # type: ignore[attr-defined]


def test_other_paths_are_not_served(app: ForwardAuthApp) -> None:
    assert get(app, "/hello", {}).status_code == 404  # type: ignore[attr-defined]
    assert get(app, "/_mfa/login", {}).status_code == 200  # type: ignore[attr-defined]
