"""Security headers on every answer we serve (issue 12), checked on every route there is.

The routes are not listed here: they are read from the sign-in pages' url map (which holds every method's own
routes, with every method enabled) and from the operator endpoints, so a route added later is checked without
touching this file (an argument this file has no sample value for fails the test, by name). Each route is asked
with each of its methods, anonymously, in the middle of a sign-in and with a full session, through WSGI, ASGI and
the forward-auth server; then the gate's own answers (redirect, 401 JSON, Basic challenge, 403, 400) and forward
auth's (200, 401, 403, 404); then the answers when things go wrong: the store down (the gate's 503 and the pages'
``unavailable()``, by monkeypatching the store's connection to raise ``StoreUnavailable``) and a bug inside a page
(a 500), neither showing the exception's text. Every answer must carry (:mod:`mfa_middleware.web.headers`):

- a Content-Security-Policy with ``frame-ancestors 'none'``, no ``'unsafe-inline'``/``'unsafe-eval'`` and no
  source outside the origin (only ``'self'``, ``'none'`` and ``data:`` images);
- ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``, a ``Referrer-Policy`` that sends no path
  elsewhere, a ``Permissions-Policy`` that turns off the camera (the web authenticator alone allows it for itself);
- ``Cache-Control: no-store`` on anything that sets a cookie and on every page, JSON answer and redirect (only
  static files, which hold no secret and set no cookie, may be cached);
- and never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mfa_middleware.factors.push.webapp import FILES
from mfa_middleware.pages.admin import STATIC as ADMIN_STATIC
from mfa_middleware.pages.admin import VIEWS as ADMIN_VIEWS
from mfa_middleware.web.headers import secure_headers
from tests.support.adapters import VIAS, Outcome, Trio, Via
from tests.support.mfa import Browser, csrf_of
from tests.support.paths import session_cookie

STATIC = Path(__file__).resolve().parent.parent / "mfa_middleware" / "pages" / "static"
ALL_METHODS = ["totp", "oath", "sms", "mobile_voice", "voice", "email", "backup_codes", "push", "webauthn"]
#: sample values for the url map's arguments, by name (a new argument name must be added here)
SAMPLES: dict[tuple[str, str], list[str]] = {
    ("static", "filename"): [*sorted(p.name for p in STATIC.iterdir() if p.is_file()), "missing.css"],
    ("push", "filename"): [*sorted(name for name in FILES if name), "missing.js"],
    ("*", "token"): ["not-a-token"],
    ("admin", "view"): [*sorted(ADMIN_VIEWS), *sorted(ADMIN_STATIC), "missing"],
}
PASSWORD = "correct horse battery"
REFERRER_POLICIES = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
ALLOWED_SOURCES = {"'self'", "'none'"}


def config_overrides() -> dict[str, Any]:
    return {"methods": {"enabled": ALL_METHODS, "webauthn": {"origins": ["http://localhost"], "passwordless": True}},
            "email": {"gateway": "console", "from_address": "no-reply@example.com"},
            "phone": {"gateway": "console", "allowed_countries": ["*"]},
            "dev_outbox": True, "metrics": {"enabled": True, "path": "/_mfa/metrics"},
            "rules": [{"path": "/dav/*", "policy": "two_factor", "basic": True},
                      {"path": "/blocked/*", "policy": "deny"}, {"path": "/*", "policy": "two_factor"}]}


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    trio = Trio(f"sqlite:///{tmp_path_factory.mktemp('headers') / 'mfa.db'}", **config_overrides())
    trio.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    yield trio
    trio.close()


@pytest.fixture(scope="module")
def states(trio: Trio) -> dict[str, dict[str, str]]:
    """Request headers for each state of a browser: nobody, a sign-in after the password, a full session."""
    browser = Browser(trio.wsgi)
    assert browser.login("bob", PASSWORD).status_code == 303
    pending = browser.cookie("mfa_session_pending")
    assert pending is not None
    return {"anonymous": {"Accept": "text/html"},
            "pending": {"Accept": "text/html", "Cookie": f"mfa_session_pending={pending}"},
            "session": {"Accept": "text/html", "Cookie": session_cookie(trio.runtime, "bob")}}


def routes(trio: Trio) -> list[tuple[str, str]]:
    """(method, path) for every route of the pages' url map and every operator endpoint."""
    prefix = trio.runtime.config.prefix
    found: list[tuple[str, str]] = []
    for rule in trio.wsgi.pages.pages.url_map.iter_rules():  # type: ignore[attr-defined]
        owner = rule.endpoint[1] if isinstance(rule.endpoint, tuple) else str(rule.endpoint)
        paths = [rule.rule]
        for argument in sorted(rule.arguments):
            values = SAMPLES.get((owner, argument)) or SAMPLES.get(("*", argument))
            assert values, f"no sample value for <{argument}> of {rule.rule}: add one to SAMPLES"
            paths = [re.sub(r"<(?:[a-z]+:)?" + argument + ">", value, p) for p in paths for value in values]
        methods = sorted((rule.methods or {"GET", "POST"}) - {"OPTIONS"})
        found += [(method, prefix + path) for path in paths for method in methods]
    found += [(method, path) for path in sorted(trio.wsgi.ops.paths) for method in ("GET", "HEAD", "POST")]
    return found


def is_static(path: str) -> bool:
    return "/static/" in path or "/authenticator/" in path or path.endswith((".js", ".css"))


def assert_secure(outcome: Outcome, what: str, cacheable: bool = False) -> None:
    headers = outcome.headers
    assert outcome.status != 500, (what, outcome.text[:300])
    csp = headers.get("content-security-policy")
    assert csp, (what, "no Content-Security-Policy")
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}
    assert directives.get("frame-ancestors") == ["'none'"], (what, csp)
    assert "default-src" in directives and "base-uri" in directives, (what, csp)
    for name, sources in directives.items():
        for source in sources:
            assert source in ALLOWED_SOURCES or (source == "data:" and name == "img-src"), (what, name, source)
    assert headers.get("x-frame-options") == "DENY", what
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") in REFERRER_POLICIES, (what, headers.get("referrer-policy"))
    permissions = headers.get("permissions-policy", "")
    assert "microphone=()" in permissions and "geolocation=()" in permissions, (what, permissions)
    assert "camera=()" in permissions or (what.split()[2].startswith("/_mfa/authenticator")
                                          and "camera=(self)" in permissions), (what, permissions)
    cache = headers.get("cache-control", "")
    if "set-cookie" in headers or not (cacheable and 200 <= outcome.status < 300):
        assert "no-store" in cache, (what, cache, outcome.status)
    if "set-cookie" in headers:
        assert "cookie" in headers.get("vary", "").lower(), what


def test_every_kind_of_route_is_in_the_enumeration(trio: Trio) -> None:
    """The walk covers each method's routes (it reads them, so this only guards the fixture's configuration)."""
    paths = {path for _, path in routes(trio)}
    for expected in ("/_mfa/login", "/_mfa/device/v1/requests", "/_mfa/authenticator/", "/_mfa/webauthn/options.json",
                     "/_mfa/voice/status.json", "/_mfa/backup-codes", "/_mfa/health", "/_mfa/ready", "/_mfa/metrics",
                     "/_mfa/static/missing.css"):
        assert expected in paths, expected
    assert len(paths) >= 40


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("state", ["anonymous", "pending", "session"])
def test_every_route_has_the_security_headers(trio: Trio, states: dict[str, dict[str, str]], via: Via,
                                              state: str) -> None:
    checked = 0
    for method, path in routes(trio):
        headers = dict(states[state])
        body = b""
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = b"x=1"
        outcome = trio.send(via, path.encode("utf-8"), method=method, headers=headers, body=body)
        assert_secure(outcome, f"{via} {method} {path} ({state}) -> {outcome.status}", cacheable=is_static(path))
        checked += 1
    assert checked >= 60


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize(("target", "headers"), [
    pytest.param(b"/docs/x", {"Accept": "text/html"}, id="redirect-to-sign-in"),
    pytest.param(b"/docs/x", {"Accept": "application/json"}, id="401-json"),
    pytest.param(b"/dav/x", {}, id="basic-challenge"),
    pytest.param(b"/dav/x", {"Authorization": "Basic !!!"}, id="basic-malformed"),
    pytest.param(b"/blocked/x", {"Cookie": "SESSION"}, id="403-deny"),
    pytest.param(b"/docs/%2561", {"Accept": "text/html"}, id="400-bad-path"),
    pytest.param(b"/docs/x", {"Cookie": "mfa_session=forged"}, id="bad-cookie-cleared"),
    pytest.param(b"/docs/x", {"Cookie": "SESSION"}, id="passed"),
])
def test_the_gate_answers_have_the_security_headers(trio: Trio, via: Via, target: bytes,
                                                    headers: dict[str, str]) -> None:
    if headers.get("Cookie") == "SESSION":
        headers = {**headers, "Cookie": session_cookie(trio.runtime, "bob")}
    outcome = trio.send(via, target, headers=headers)
    if outcome.reached and via != "forward":
        return  # the app's own answer: not ours to change
    assert_secure(outcome, f"{via} GET {target.decode()} -> {outcome.status}")


@pytest.mark.parametrize(("path", "peer", "headers"), [
    pytest.param("/_mfa/auth/nginx", "203.0.113.9", {}, id="untrusted-peer"),
    pytest.param("/_mfa/auth/nginx", "127.0.0.1", {}, id="no-uri"),
    pytest.param("/_mfa/auth/forward", "127.0.0.1", {"HTTP_X_FORWARDED_URI": "/docs/x", "HTTP_ACCEPT": "text/html"},
                 id="forward-redirect"),
    pytest.param("/_mfa/auth/nginx", "127.0.0.1", {"HTTP_X_ORIGINAL_URI": "/docs/.."}, id="not-canonical"),
    pytest.param("/elsewhere", "127.0.0.1", {}, id="404"),
])
def test_forward_auth_answers_have_the_security_headers(trio: Trio, path: str, peer: str,
                                                        headers: dict[str, str]) -> None:
    from werkzeug.test import Client

    response = Client(trio.forward, use_cookies=False).get(path, environ_overrides={"REMOTE_ADDR": peer, **headers})
    outcome = Outcome(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                      response.get_data(), False, None, None)
    assert_secure(outcome, f"forward GET {path} -> {outcome.status}")


def test_the_web_authenticator_keeps_its_own_csp_and_camera(trio: Trio) -> None:
    outcome = trio.send("wsgi", b"/_mfa/authenticator/")
    csp = outcome.headers["content-security-policy"]
    assert "manifest-src 'self'" in csp and "worker-src 'self'" in csp
    assert "camera=(self)" in outcome.headers["permissions-policy"]


def test_pages_hold_nothing_the_csp_would_block(trio: Trio, states: dict[str, dict[str, str]]) -> None:
    """No inline script, inline style or event-handler attribute on any HTML page (the CSP would block it)."""
    for method, path in routes(trio):
        if method != "GET":
            continue
        for state in states.values():
            outcome = trio.send("wsgi", path.encode(), headers=state)
            if not outcome.headers.get("content-type", "").startswith("text/html"):
                continue
            html = outcome.text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), (path, "inline script")
            assert not re.search(r"<style\b", html) and not re.search(r"\sstyle=", html), (path, "inline style")
            assert not re.search(r"\son[a-z]+=", html), (path, "inline event handler")


def test_a_static_file_that_sets_a_cookie_is_not_cached() -> None:
    secured = dict(secure_headers([("Cache-Control", "public, max-age=3600"), ("Set-Cookie", "a=b")]))
    assert secured["Cache-Control"] == "no-store" and secured["Vary"] == "Cookie"
    own = dict(secure_headers([("Content-Security-Policy", "default-src 'self'")]))
    assert own["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'none'"


# -- when things go wrong: the store down (503) and a bug in a page (500) ------------------------------------------
#: text an exception carries that must never reach a browser (a bug's message can hold a query, a path, a secret)
LEAK = "internal detail 7f3a: SELECT password_hash FROM users"


@pytest.fixture
def outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Trio, dict[str, str]]]:
    """A trio whose store answers nothing: every connection raises StoreUnavailable (as a dead PostgreSQL or an
    unreadable SQLite file does). Also the request headers of each state of a browser, taken before the outage:
    a sign-in after the password, a full session, and the login form's cookie and CSRF token."""
    from mfa_middleware.store import StoreUnavailable

    trio = Trio(f"sqlite:///{tmp_path / 'mfa.db'}", **config_overrides())
    trio.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    browser = Browser(trio.wsgi)
    assert browser.login("bob", PASSWORD).status_code == 303
    form = Browser(trio.wsgi)
    csrf = csrf_of(form.get("/_mfa/login").text)
    states = {"anonymous": "", "pending": f"mfa_session_pending={browser.cookie('mfa_session_pending')}",
              "session": session_cookie(trio.runtime, "bob"),
              "form": f"mfa_session_anon={form.cookie('mfa_session_anon')}", "csrf": csrf}

    def down(*args: object, **kwargs: object) -> Any:
        raise StoreUnavailable(LEAK)

    for runtime in (trio.wsgi.runtime, trio.asgi.runtime, trio.forward_runtime):
        monkeypatch.setattr(runtime.store, "_begin", down)
    yield trio, states
    monkeypatch.undo()
    trio.close()


def assert_no_leak(outcome: Outcome, what: str) -> None:
    assert "7f3a" not in outcome.text and "Traceback" not in outcome.text, (what, outcome.text[:300])


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize(("method", "path", "state", "accept"), [
    pytest.param("GET", "/docs/x", "session", "text/html", id="gate-page"),
    pytest.param("GET", "/docs/x", "session", "application/json", id="gate-json"),
    pytest.param("GET", "/docs/x", "anonymous", "text/html", id="gate-anonymous"),
    pytest.param("GET", "/_mfa/enroll", "pending", "text/html", id="pages-enroll"),
    pytest.param("GET", "/_mfa/enroll", "pending", "application/json", id="pages-enroll-json"),
    pytest.param("POST", "/_mfa/login", "form", "text/html", id="pages-login-post"),
])
def test_store_down_answers_503_with_the_security_headers(outage: tuple[Trio, dict[str, str]], via: Via,
                                                         method: str, path: str, state: str, accept: str) -> None:
    """The gate's 503 (its revocation list older than the grace, the store unreachable) and the pages' 503
    (``unavailable()``): every security header, ``no-store``, and nothing of the store's error."""
    trio, states = outage
    if path.startswith("/docs"):
        trio.clock.advance(trio.runtime.revocations.grace + 1)  # the gate may no longer trust its copy
    headers = {"Accept": accept}
    if states[state]:
        headers["Cookie"] = states[state]
    body = b""
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = f"username=bob&password=correct+horse+battery&next=/&csrf_token={states['csrf']}".encode()
    outcome = trio.send(via, path.encode(), method=method, headers=headers, body=body)
    what = f"{via} {method} {path} ({state}) -> {outcome.status}"
    assert outcome.status == 503 and not outcome.reached, (what, outcome.text[:300])
    assert_secure(outcome, what)
    assert outcome.headers.get("retry-after") == "30", what
    assert_no_leak(outcome, what)
    if accept == "application/json" and not (via == "forward" and path.startswith("/docs")):
        assert outcome.headers.get("content-type", "").startswith("application/json"), what


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_a_bug_in_a_page_answers_500_with_the_security_headers(trio: Trio, via: Via, accept: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception nobody expected inside the pages: a 500 that carries every security header and
    ``Cache-Control: no-store``, says nothing of the exception, and is logged (not shown)."""
    def broken(*args: object, **kwargs: object) -> Any:
        raise RuntimeError(LEAK)

    for app in (trio.wsgi, trio.asgi, trio.forward):
        monkeypatch.setattr(app.pages.pages, "page_login", broken)  # type: ignore[attr-defined]
    outcome = trio.send(via, b"/_mfa/login", headers={"Accept": accept})
    what = f"{via} GET /_mfa/login -> {outcome.status}"
    assert outcome.status == 500, what
    headers = outcome.headers
    assert headers.get("content-security-policy") and headers.get("x-frame-options") == "DENY", what
    assert "no-store" in headers.get("cache-control", ""), what
    assert headers.get("referrer-policy") in REFERRER_POLICIES and "camera=()" in headers.get(
        "permissions-policy", ""), what
    assert_no_leak(outcome, what)
    if accept == "application/json":
        assert headers.get("content-type", "").startswith("application/json"), what
