"""Non-browser clients: HTTP Basic on ``basic = true`` rules, app passwords, the user states of DESIGN.md
section 4 for browser and Basic clients, the verified-credential cache and the helpdesk operations (issue 3)."""

from __future__ import annotations

import logging
import re
import threading
import time
from base64 import b64encode
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from sqlalchemy import event, select
from werkzeug.test import Client, TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.core.tokens import Session
from mfa_middleware.services import app_passwords as app_passwords_module
from mfa_middleware.services.accounts import AccountError
from mfa_middleware.services.app_passwords import display
from mfa_middleware.store import UserRecord
from mfa_middleware.store.schema import app_passwords as app_passwords_table
from mfa_middleware.store.schema import metadata
from tests.support.mfa import DEFAULT_RULES, Browser, Clock, csrf_of, make_middleware

PASSWORD = "correct horse battery"
REALM = "Contoso"
CHALLENGE = 'Basic realm="Contoso", charset="UTF-8"'
RULES: list[dict[str, Any]] = [
    {"path": "/dav/*", "policy": "two_factor", "basic": True},
    {"path": "/mail/*", "policy": "one_factor", "basic": True},
    {"path": "/vault/*", "policy": "two_factor", "basic": True, "exempt": False},
    {"path": "/team/*", "policy": "two_factor", "basic": True, "groups": ["admins"]},
    *DEFAULT_RULES,
]
APP_PASSWORD_NEEDED = "needs an app password"
INTERVAL = 5.0  # the revocation interval of tests/support/mfa.make_config


# -- helpers -------------------------------------------------------------------------------------------------------
def build(url: str, clock: Clock, basic: dict[str, Any] | None = None, **overrides: Any) -> MFAMiddleware:
    return make_middleware(url, clock, rules=RULES, basic={"realm": REALM, **(basic or {})}, **overrides)


def basic_header(username: str, password: str) -> str:
    return "Basic " + b64encode(f"{username}:{password}".encode()).decode("ascii")


def api(mw: MFAMiddleware, path: str, authorization: str | None = None, *, method: str = "GET",
        remote_addr: str = "127.0.0.1", **headers: str) -> TestResponse:
    """A non-browser request (no cookies, no ``Accept: text/html``)."""
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if authorization is not None:
        sent["Authorization"] = authorization
    return Client(mw, use_cookies=False).open(path, method=method, headers=sent,
                                              environ_base={"REMOTE_ADDR": remote_addr})


def add(mw: MFAMiddleware, name: str, *, state: str = "enabled", groups: tuple[str, ...] = (),
        is_admin: bool = False, password: str = PASSWORD) -> UserRecord:
    return mw.runtime.accounts.add(name, actor="test", password=password, state=state, groups=groups,
                                   is_admin=is_admin)


def user(mw: MFAMiddleware, name: str) -> UserRecord:
    found = mw.runtime.store.get_user(name)
    assert found is not None
    return found


def new_app_password(mw: MFAMiddleware, name: str, label: str = "laptop") -> str:
    _, password = mw.runtime.app_passwords.create(user(mw, name), label, actor="t")
    return password


def session_of(mw: MFAMiddleware, browser: Browser) -> Session:
    session = mw.runtime.codec.load_session(browser.cookie("mfa_session"))
    assert session is not None
    return session


def assert_challenge(response: TestResponse) -> None:
    assert response.status_code == 401, response.text
    assert response.headers.getlist("WWW-Authenticate") == [CHALLENGE]
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers
    assert "app path" not in response.text


def put_in_state(mw: MFAMiddleware, clock: Clock, name: str, state: str,
                 groups: tuple[str, ...] = ()) -> str | None:
    """Create ``name`` in one of the four rows of DESIGN.md section 4; returns the TOTP secret if enrolled."""
    if state == "disabled":
        add(mw, name, state="disabled", groups=groups)
        return None
    add(mw, name, state="enabled", groups=groups)
    if state == "enabled-without-method":
        return None
    secret = Browser(mw).sign_in_and_enroll(name, PASSWORD, clock)
    assert user(mw, name).state == "enforced"  # registration complete: enforced automatically
    if state == "enabled-with-method":
        mw.runtime.accounts.set_state(name, "enabled", actor="t")
    clock.advance(30)  # the next TOTP step, and past the revocation interval
    return secret


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = build(sqlite_url, clock)
    yield middleware
    middleware.runtime.close()


@pytest.fixture
def pair(database_url: str, clock: Clock) -> Iterator[tuple[MFAMiddleware, MFAMiddleware]]:
    """Two middleware instances ("processes") sharing one store and one clock."""
    first = build(database_url, clock, lockout={"max_failures": 3})
    second = build(database_url, clock, lockout={"max_failures": 3})
    for mw in (first, second):  # these tests pin the interval poll; PostgreSQL's push is tested on its own
        mw.runtime.revocations.listener = None
    yield first, second
    first.runtime.close()
    second.runtime.close()


# -- the Basic corpus over HTTP ------------------------------------------------------------------------------------
# alice's password has colons, a pound sign, and base64 with "+", "/" and "==" padding.
ALICE_PASSWORD = "pa:ss? £ ?>word"
ALICE_TOKEN = b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode("ascii")
assert "+" in ALICE_TOKEN and "/" in ALICE_TOKEN and ALICE_TOKEN.endswith("==")


def raw(data: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {b64encode(data).decode('ascii')}"


HTTP_CORPUS = [
    # header, status, failures counted
    pytest.param(None, 401, 0, id="no-header"),
    pytest.param("", 401, 0, id="empty-header"),
    pytest.param("Basic", 401, 0, id="scheme-alone"),
    pytest.param("Basic " + ALICE_TOKEN, 200, 0, id="correct"),
    pytest.param("basic " + ALICE_TOKEN, 200, 0, id="scheme-lower"),
    pytest.param("BASIC " + ALICE_TOKEN, 200, 0, id="scheme-upper"),
    pytest.param("Basic !!" + ALICE_TOKEN[2:], 401, 0, id="bad-base64"),
    pytest.param("Basic " + ALICE_TOKEN.replace("+", "-").replace("/", "_"), 401, 0, id="base64url"),
    pytest.param("Basic " + ALICE_TOKEN.rstrip("="), 401, 0, id="missing-padding"),
    pytest.param("Basic " + ALICE_TOKEN[:8] + " " + ALICE_TOKEN[8:], 401, 0, id="space-inside-token"),
    pytest.param(raw(b"alice"), 401, 0, id="no-colon"),
    pytest.param(raw(f":{ALICE_PASSWORD}".encode()), 401, 0, id="empty-user"),
    pytest.param(raw(b"alice:"), 401, 0, id="empty-password"),
    pytest.param(raw(f"alice\x00:{ALICE_PASSWORD}".encode()), 401, 0, id="nul-in-user"),
    pytest.param(raw(f"alice:{ALICE_PASSWORD}\x00".encode()), 401, 0, id="nul-in-password"),
    pytest.param(raw(f"alice:{ALICE_PASSWORD}\r\n".encode()), 401, 0, id="crlf-in-password"),
    pytest.param(raw(f"alice:\x07{ALICE_PASSWORD}".encode()), 401, 0, id="bell-in-password"),
    pytest.param(raw(f"alice:{ALICE_PASSWORD}".encode("latin-1")), 401, 0, id="latin1-pound"),
    pytest.param(raw(f"alice:{ALICE_PASSWORD}".encode()), 200, 0, id="utf8-pound"),
    pytest.param("Basic " + "A" * (1024 * 1024), 401, 0, id="one-megabyte"),
    pytest.param(raw(b"alice:" + b"x" * (1024 * 1024)), 401, 0, id="one-megabyte-well-formed"),
    pytest.param("Bearer " + ALICE_TOKEN, 401, 0, id="bearer"),
    pytest.param("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln", 401, 0, id="bearer-jwt"),
    pytest.param('Digest username="alice", realm="Contoso", nonce="n", uri="/dav/x", response="r"', 401, 0,
                 id="digest"),
    pytest.param(raw(b"alice:pa:ss"), 401, 1, id="wrong-password-with-colons"),
    pytest.param(raw(b"alice:abcdabcdabcdabcd"), 401, 1, id="wrong-app-password-shape"),
    pytest.param(raw(f"ALICE:{ALICE_PASSWORD.upper()}".encode()), 401, 1, id="wrong-password-case"),
    pytest.param(raw(f"mallory:{ALICE_PASSWORD}".encode()), 401, 0, id="unknown-user"),
]


@pytest.mark.parametrize("path", [pytest.param("/dav/x", id="dav"), pytest.param("/mail/x", id="mail")])
@pytest.mark.parametrize(("authorization", "status", "failures"), HTTP_CORPUS)
def test_basic_corpus_over_http(mw: MFAMiddleware, path: str, authorization: str | None, status: int,
                                failures: int) -> None:
    add(mw, "alice", password=ALICE_PASSWORD)  # enabled, no method yet: the primary password still works
    before = user(mw, "alice")
    response = api(mw, path, authorization)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.text == f"app path={path} user=alice level=1"
        assert "WWW-Authenticate" not in response.headers
    else:
        assert_challenge(response)
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    after = user(mw, "alice")
    assert after.failed_count - before.failed_count == failures
    assert after.consecutive_failures - before.consecutive_failures == failures
    assert not after.locked(mw.runtime.clock())


def test_oversized_credential_costs_no_argon2(mw: MFAMiddleware, monkeypatch: pytest.MonkeyPatch) -> None:
    add(mw, "alice")
    calls: list[str] = []

    def verify(*_args: object) -> bool:
        calls.append("verify")
        return False

    monkeypatch.setattr(mw.runtime.passwords, "verify", verify)
    started = time.perf_counter()
    assert_challenge(api(mw, "/dav/x", raw(b"alice:" + b"x" * (1024 * 1024))))
    assert time.perf_counter() - started < 1.0
    assert calls == []


@pytest.mark.parametrize("accept", [
    pytest.param("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", id="firefox"),
    pytest.param("text/html", id="text-html"),
])
def test_browser_on_basic_route_gets_the_sign_in_page(mw: MFAMiddleware, accept: str) -> None:
    response = Browser(mw).get("/dav/x", headers={"Accept": accept})
    assert response.status_code == 302
    assert response.headers["Location"] == "/_mfa/login?next=/dav/x"
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize("accept", [pytest.param("text/html", id="browser"), pytest.param("*/*", id="any")])
def test_signed_in_browser_reaches_basic_route_without_basic(mw: MFAMiddleware, clock: Clock,
                                                             accept: str) -> None:
    add(mw, "erin")
    browser = Browser(mw)
    browser.sign_in_and_enroll("erin", PASSWORD, clock, next_path="/dav/x")
    response = browser.get("/dav/x", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.text == "app path=/dav/x user=erin level=2"


# -- DESIGN.md section 4: every row x {browser, Basic} ---------------------------------------------------------------
STATE_TABLE = [
    # state, client, expected
    pytest.param("disabled", "browser", "pass-one-factor", id="disabled-browser"),
    pytest.param("disabled", "basic", "primary-accepted", id="disabled-basic"),
    pytest.param("enabled-without-method", "browser", "enroll", id="enabled-without-method-browser"),
    pytest.param("enabled-without-method", "basic", "primary-accepted", id="enabled-without-method-basic"),
    pytest.param("enabled-with-method", "browser", "verify", id="enabled-with-method-browser"),
    pytest.param("enabled-with-method", "basic", "app-password-required", id="enabled-with-method-basic"),
    pytest.param("enforced", "browser", "verify", id="enforced-browser"),
    pytest.param("enforced", "basic", "app-password-required", id="enforced-basic"),
]
STORED_STATE = {"disabled": "disabled", "enabled-without-method": "enabled", "enabled-with-method": "enabled",
                "enforced": "enforced"}


@pytest.mark.parametrize(("state", "client", "expected"), STATE_TABLE)
def test_state_table(mw: MFAMiddleware, clock: Clock, state: str, client: str, expected: str) -> None:
    secret = put_in_state(mw, clock, "dana", state)
    assert user(mw, "dana").state == STORED_STATE[state]
    if client == "browser":
        browser = Browser(mw)
        first = browser.login("dana", PASSWORD, "/hello")
        assert first.status_code == 303
        if expected == "pass-one-factor":
            assert first.headers["Location"] == "/hello"
            assert browser.get("/hello").text == "app path=/hello user=dana level=1"
            return
        if expected == "enroll":
            assert first.headers["Location"] == "/_mfa/enroll"
            assert browser.get("/hello").status_code == 302  # not signed in until enrolled
            _, done = browser.enroll(clock)
            assert done.status_code == 303 and done.headers["Location"] == "/hello"
            assert user(mw, "dana").state == "enforced"
        else:
            assert expected == "verify" and secret is not None
            assert first.headers["Location"] == "/_mfa/verify"
            assert browser.get("/hello").status_code == 302  # not signed in until verified
            done = browser.verify(pyotp.TOTP(secret).at(clock.now))
            assert done.status_code == 303 and done.headers["Location"] == "/hello"
        assert browser.get("/hello").text == "app path=/hello user=dana level=2"
        return

    primary = basic_header("dana", PASSWORD)
    for path in ("/dav/x", "/mail/x"):
        response = api(mw, path, primary)
        if expected == "primary-accepted":
            assert response.status_code == 200, response.text
            assert response.text == f"app path={path} user=dana level=1"
        else:
            assert expected == "app-password-required"
            assert_challenge(response)
            assert APP_PASSWORD_NEEDED in response.text
    password = new_app_password(mw, "dana")
    for form in (password, display(password), password.upper(), display(password).upper()):
        response = api(mw, "/dav/x", basic_header("dana", form))
        assert response.status_code == 200, (form, response.text)
        assert response.text == "app path=/dav/x user=dana level=2"
    assert user(mw, "dana").failed_count == 0


# -- what never passes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/dav/x", "/mail/x", "/vault/x", "/team/x", "/dav", "/MAIL/inbox"])
def test_enforced_main_password_never_passes_basic(mw: MFAMiddleware, clock: Clock, path: str) -> None:
    put_in_state(mw, clock, "erin", "enforced", groups=("admins",))
    for _ in range(2):  # and not from a cache either
        response = api(mw, path, basic_header("erin", PASSWORD))
        assert_challenge(response)
        assert APP_PASSWORD_NEEDED in response.text
    rows = [r for r in mw.runtime.store.list_audit(username="erin") if r.event == "basic"]
    assert {r.result for r in rows} == {"app_password_required"}


def test_app_password_never_passes_the_forms_login(mw: MFAMiddleware, clock: Clock) -> None:
    put_in_state(mw, clock, "erin", "enforced")
    password = new_app_password(mw, "erin")
    for form in (password, display(password)):
        for next_path in ("/hello", "/dav/x", "/mail/x"):
            browser = Browser(mw)
            response = browser.login("erin", form, next_path)
            assert response.status_code == 401
            assert "Incorrect username or password." in response.text
            assert browser.cookie("mfa_session") is None and browser.cookie("mfa_session_pending") is None


@pytest.mark.parametrize("path", ["/admin/x", "/admin", "/ADMIN/x"])
def test_app_password_never_opens_an_admin_route(mw: MFAMiddleware, clock: Clock, path: str) -> None:
    put_in_state(mw, clock, "alice", "enforced", groups=("admins",))
    password = new_app_password(mw, "alice")
    assert api(mw, "/team/x", basic_header("alice", password)).status_code == 200  # it works where allowed
    credential = basic_header("alice", password)
    plain = api(mw, path, credential)
    assert plain.status_code == 302 and plain.headers["Location"].startswith("/_mfa/login?next=")
    as_json = api(mw, path, credential, Accept="application/json")
    assert as_json.status_code == 401 and "authentication_required" in as_json.text
    assert "WWW-Authenticate" not in as_json.headers
    as_browser = api(mw, path, credential, Accept="text/html")
    assert as_browser.status_code == 302
    # Nor as a forms password on the way to the admin area.
    form = Browser(mw).login("alice", password, path)
    assert form.status_code == 401


@pytest.mark.parametrize(("method", "path"), [
    pytest.param("GET", "/_mfa/", id="account"),
    pytest.param("GET", "/_mfa/app-passwords", id="app-passwords"),
    pytest.param("POST", "/_mfa/app-passwords", id="app-passwords-post"),
    pytest.param("GET", "/_mfa/step-up?next=/dav/x", id="step-up"),
    pytest.param("GET", "/_mfa/verify", id="verify"),
    pytest.param("GET", "/_mfa/enroll", id="enroll"),
])
def test_app_password_never_opens_mfa_pages(mw: MFAMiddleware, clock: Clock, method: str, path: str) -> None:
    put_in_state(mw, clock, "erin", "enforced")
    password = new_app_password(mw, "erin")
    response = api(mw, path, basic_header("erin", password), method=method)
    assert response.status_code in (303, 401)
    if response.status_code == 303:
        assert response.headers["Location"].startswith("/_mfa/login")
    assert not any(c.startswith("mfa_session=") for c in response.headers.getlist("Set-Cookie"))
    assert [r.label for r in mw.runtime.app_passwords.list(user(mw, "erin"))] == ["laptop"]


def test_basic_header_on_login_page_is_ignored(mw: MFAMiddleware, clock: Clock) -> None:
    put_in_state(mw, clock, "erin", "enforced")
    password = new_app_password(mw, "erin")
    response = api(mw, "/_mfa/login?next=/dav/x", basic_header("erin", password), Accept="text/html")
    assert response.status_code == 200 and 'name="password"' in response.text
    cookies = response.headers.getlist("Set-Cookie")
    assert not any(c.startswith("mfa_session=") for c in cookies)


# -- rule options ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("state", "credential", "status"), [
    pytest.param("disabled", "primary", 401, id="disabled-primary"),
    pytest.param("enabled-without-method", "primary", 401, id="enabled-primary"),
    pytest.param("disabled", "app", 200, id="disabled-app-password"),
    pytest.param("enforced", "app", 200, id="enforced-app-password"),
])
def test_rule_refusing_exemptions(mw: MFAMiddleware, clock: Clock, state: str, credential: str,
                                  status: int) -> None:
    put_in_state(mw, clock, "dana", state)
    password = PASSWORD if credential == "primary" else new_app_password(mw, "dana")
    response = api(mw, "/vault/x", basic_header("dana", password))
    assert response.status_code == status, response.text
    if status == 401:
        assert_challenge(response)
        assert APP_PASSWORD_NEEDED in response.text
    else:
        assert response.text == "app path=/vault/x user=dana level=2"
    # The same primary password is fine where exemptions are allowed.
    if credential == "primary":
        assert api(mw, "/dav/x", basic_header("dana", PASSWORD)).status_code == 200


@pytest.mark.parametrize(("groups", "status"), [
    pytest.param((), 403, id="not-in-group"),
    pytest.param(("staff",), 403, id="other-group"),
    pytest.param(("staff", "admins"), 200, id="in-group"),
])
def test_groups_on_a_basic_rule(mw: MFAMiddleware, clock: Clock, groups: tuple[str, ...], status: int) -> None:
    add(mw, "gina", groups=groups)
    password = new_app_password(mw, "gina")
    response = api(mw, "/team/x", basic_header("gina", password))
    assert response.status_code == status, response.text
    assert api(mw, "/dav/x", basic_header("gina", password)).status_code == 200
    primary = api(mw, "/team/x", basic_header("gina", PASSWORD))  # no method yet: primary accepted...
    assert primary.status_code == status  # ... but the group restriction still applies


# -- creating app passwords -------------------------------------------------------------------------------------------
def test_administrators_cannot_create_app_passwords(mw: MFAMiddleware, clock: Clock) -> None:
    admin = add(mw, "root", is_admin=True)
    with pytest.raises(AccountError, match="administrator"):
        mw.runtime.app_passwords.create(admin, "laptop", actor="t")
    assert mw.runtime.app_passwords.list(admin) == []
    # Nor on the self-service page.
    browser = Browser(mw)
    browser.sign_in_and_enroll("root", PASSWORD, clock)
    page = browser.get("/_mfa/app-passwords", follow_redirects=True)
    assert page.status_code == 200 and "Administrator accounts cannot have app passwords." in page.text
    assert "/app-passwords/create" not in page.text  # no form to post; forge a valid token for the session
    csrf = mw.runtime.codec.make_csrf(session_of(mw, browser).sid)
    refused = browser.post("/_mfa/app-passwords", {"action": "create", "label": "laptop", "csrf_token": csrf})
    assert refused.status_code == 400 and "admins_may_create" in refused.text
    assert 'id="app-password"' not in refused.text
    assert mw.runtime.app_passwords.list(admin) == []


def test_administrators_may_create_when_configured(sqlite_url: str, clock: Clock) -> None:
    mw = build(sqlite_url, clock, basic={"admins_may_create": True})
    try:
        admin = add(mw, "root", is_admin=True, groups=("admins",))
        _, password = mw.runtime.app_passwords.create(admin, "laptop", actor="t")
        assert api(mw, "/dav/x", basic_header("root", password)).status_code == 200
        assert api(mw, "/admin/x", basic_header("root", password)).status_code == 302  # still never admin pages
    finally:
        mw.runtime.close()


def test_app_password_limit(sqlite_url: str, clock: Clock) -> None:
    mw = build(sqlite_url, clock, basic={"max_app_passwords": 2})
    try:
        carol = add(mw, "carol")
        mw.runtime.app_passwords.create(carol, "laptop", actor="t")
        mw.runtime.app_passwords.create(carol, "phone", actor="t")
        with pytest.raises(AccountError, match=r"already has 2 app passwords \(the limit is 2\); revoke one first"):
            mw.runtime.app_passwords.create(carol, "tablet", actor="t")
        assert [r.label for r in mw.runtime.app_passwords.list(carol)] == ["laptop", "phone"]
        mw.runtime.app_passwords.revoke(carol, "phone", actor="t")
        mw.runtime.app_passwords.create(carol, "tablet", actor="t")
        assert [r.label for r in mw.runtime.app_passwords.list(carol)] == ["laptop", "tablet"]
    finally:
        mw.runtime.close()


def test_labels_unique_per_user(mw: MFAMiddleware) -> None:
    carol, dave = add(mw, "carol"), add(mw, "dave")
    mw.runtime.app_passwords.create(carol, "laptop", actor="t")
    for label in ("laptop", "  laptop  "):
        with pytest.raises(AccountError, match="already has an app password named 'laptop'"):
            mw.runtime.app_passwords.create(carol, label, actor="t")
    mw.runtime.app_passwords.create(dave, "laptop", actor="t")  # another user may use the same name
    assert len(mw.runtime.app_passwords.list(carol)) == len(mw.runtime.app_passwords.list(dave)) == 1


@pytest.mark.parametrize("label", [pytest.param("", id="empty"), pytest.param("   ", id="blank"),
                                   pytest.param("x" * 65, id="too-long"), pytest.param("a\x00b", id="nul")])
def test_bad_labels_refused(mw: MFAMiddleware, label: str) -> None:
    carol = add(mw, "carol")
    with pytest.raises(AccountError, match="device name"):
        mw.runtime.app_passwords.create(carol, label, actor="t")


def test_app_password_properties(mw: MFAMiddleware, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    generated = {app_passwords_module.generate() for _ in range(200)}
    assert len(generated) == 200
    assert all(re.fullmatch(r"[a-z]{16}", p) for p in generated)
    assert re.fullmatch(r"[a-z]{4}( [a-z]{4}){3}", display(next(iter(generated))))

    caplog.set_level(logging.DEBUG)
    carol = add(mw, "carol")
    record, password = mw.runtime.app_passwords.create(carol, "laptop", actor="t")
    assert re.fullmatch(r"[a-z]{16}", password)
    assert record.label == "laptop" and record.created_at == clock.now and record.last_used_at is None
    with mw.runtime.store.engine.connect() as conn:
        row = conn.execute(select(app_passwords_table)).one()
    assert row.password_hash.startswith("$argon2id$")
    assert password not in row.password_hash and row.lookup != password

    # Use it, fail with a near miss, revoke it: nothing anywhere holds it.
    assert api(mw, "/dav/x", basic_header("carol", display(password))).status_code == 200
    assert api(mw, "/dav/x", basic_header("carol", password[:-1] + "a" if password[-1] != "a" else
                                          password[:-1] + "b")).status_code == 401
    mw.runtime.app_passwords.revoke(carol, "laptop", actor="t")
    forms = {password, display(password), password.upper()}
    audit = mw.runtime.store.list_audit(limit=1000)
    assert {r.event for r in audit} >= {"app_password_create", "basic", "app_password_revoke"}
    for r in audit:
        assert not any(f in repr(r) for f in forms), r
    with mw.runtime.store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for stored in conn.execute(select(table)).all():
                assert not any(f in repr(tuple(stored)) for f in forms), (table.name, stored)
    assert not any(f in caplog.text for f in forms)


# -- the verified-credential cache -----------------------------------------------------------------------------------
class Counters:
    def __init__(self, mw: MFAMiddleware, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        self.argon2 = 0
        self.engine = mw.runtime.store.engine
        self.revocations = mw.runtime.revocations
        real_verify = mw.runtime.passwords.verify

        def verify(stored_hash: str | None, password: str) -> bool:
            self.argon2 += 1
            return real_verify(stored_hash, password)

        monkeypatch.setattr(mw.runtime.passwords, "verify", verify)
        event.listen(self.engine, "before_cursor_execute", self._on_statement)

    def _on_statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def reset(self) -> None:
        self.revocations.wait_idle()  # the revocation cache's hourly pruning runs in the background
        self.statements.clear()
        self.argon2 = 0

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on_statement)


@pytest.fixture
def counters(mw: MFAMiddleware, monkeypatch: pytest.MonkeyPatch) -> Iterator[Counters]:
    c = Counters(mw, monkeypatch)
    yield c
    c.close()


@pytest.mark.parametrize(("credential", "path", "level"), [
    pytest.param("app", "/dav/x", 2, id="app-password"),
    pytest.param("app-display", "/dav/x", 2, id="app-password-with-spaces"),
    pytest.param("primary", "/mail/x", 1, id="primary-password"),
])
def test_repeated_request_is_served_from_the_cache(mw: MFAMiddleware, clock: Clock, counters: Counters,
                                                   credential: str, path: str, level: int) -> None:
    add(mw, "carol")
    app_password = new_app_password(mw, "carol")
    password = {"app": app_password, "app-display": display(app_password), "primary": PASSWORD}[credential]
    header = basic_header("carol", password)
    counters.reset()
    assert api(mw, path, header).text == f"app path={path} user=carol level={level}"
    assert counters.statements and counters.argon2 >= 1  # the first request pays
    counters.reset()
    for _ in range(5):
        assert api(mw, path, header).status_code == 200
    assert counters.statements == []
    assert counters.argon2 == 0
    # A wrong password is never cached: each attempt pays argon2.
    wrong = basic_header("carol", "not the password")
    for _ in range(2):
        assert api(mw, path, wrong).status_code == 401
    assert counters.argon2 == 2
    # After the cache TTL (default 5 minutes) the credential is verified again, once.
    clock.advance(mw.runtime.config.basic.cache_ttl)
    counters.reset()
    assert api(mw, path, header).status_code == 200
    assert api(mw, path, header).status_code == 200
    assert counters.argon2 == 1


def test_cache_is_per_credential(mw: MFAMiddleware) -> None:
    add(mw, "carol")
    add(mw, "dave")
    carol = new_app_password(mw, "carol")
    assert api(mw, "/dav/x", basic_header("carol", carol)).status_code == 200
    # The cached credential does not let another user name through with carol's app password.
    assert api(mw, "/dav/x", basic_header("dave", carol)).status_code == 401
    assert user(mw, "dave").failed_count == 1


# -- revocation seen from a second process --------------------------------------------------------------------------
def test_revoked_app_password_refused_within_the_interval(pair: tuple[MFAMiddleware, MFAMiddleware],
                                                          clock: Clock) -> None:
    first, second = pair
    add(first, "carol")
    password = new_app_password(first, "carol")
    other = new_app_password(first, "carol", "phone")
    credential = basic_header("carol", password)
    assert api(first, "/dav/x", credential).status_code == 200
    assert api(first, "/dav/x", basic_header("carol", other)).status_code == 200
    assert second.runtime.app_passwords.revoke(user(second, "carol"), "laptop", actor="helpdesk") == 1
    api(first, "/dav/x", credential)  # within the interval: may still pass from the cache
    clock.advance(INTERVAL)
    assert_challenge(api(first, "/dav/x", credential))
    assert_challenge(api(second, "/dav/x", credential))
    assert api(first, "/dav/x", basic_header("carol", other)).status_code == 200  # the other one still works


def test_block_refuses_cached_credential_and_unblock_restores(pair: tuple[MFAMiddleware, MFAMiddleware],
                                                              clock: Clock) -> None:
    first, second = pair
    add(first, "carol")
    password = new_app_password(first, "carol")
    app_credential = basic_header("carol", password)
    primary = basic_header("carol", PASSWORD)
    assert api(first, "/dav/x", app_credential).status_code == 200
    assert api(first, "/mail/x", primary).status_code == 200
    second.runtime.accounts.block("carol", actor="helpdesk", reason="stolen laptop", days=1)
    clock.advance(INTERVAL)
    for path, credential in (("/dav/x", app_credential), ("/mail/x", primary)):
        refused = api(first, path, credential)
        assert_challenge(refused)
        assert "blocked" in refused.text
    assert user(first, "carol").failed_count == 0  # a blocked account's correct credentials are not failures
    second.runtime.accounts.unblock("carol", actor="helpdesk")
    assert api(first, "/dav/x", app_credential).status_code == 200
    assert api(first, "/mail/x", primary).status_code == 200


def test_block_expires(pair: tuple[MFAMiddleware, MFAMiddleware], clock: Clock) -> None:
    first, second = pair
    add(first, "carol")
    password = new_app_password(first, "carol")
    second.runtime.accounts.block("carol", actor="helpdesk", reason="leave", days=1)
    assert_challenge(api(first, "/dav/x", basic_header("carol", password)))
    clock.advance(86400 + 1)
    assert api(first, "/dav/x", basic_header("carol", password)).status_code == 200


def test_primary_refused_once_the_user_enrolls(pair: tuple[MFAMiddleware, MFAMiddleware], clock: Clock) -> None:
    first, second = pair
    add(first, "dave")  # enabled, no method: the primary password is accepted on the Basic path
    primary = basic_header("dave", PASSWORD)
    assert api(first, "/dav/x", primary).text == "app path=/dav/x user=dave level=1"
    Browser(second).sign_in_and_enroll("dave", PASSWORD, clock)
    assert user(second, "dave").state == "enforced"
    clock.advance(INTERVAL)
    for path in ("/dav/x", "/mail/x"):
        refused = api(first, path, primary)
        assert_challenge(refused)
        assert APP_PASSWORD_NEEDED in refused.text


def test_primary_refused_once_set_to_enforced(pair: tuple[MFAMiddleware, MFAMiddleware], clock: Clock) -> None:
    first, second = pair
    add(first, "dora", state="disabled")
    primary = basic_header("dora", PASSWORD)
    assert api(first, "/mail/x", primary).status_code == 200
    second.runtime.accounts.set_state("dora", "enforced", actor="helpdesk")
    clock.advance(INTERVAL)
    assert_challenge(api(first, "/mail/x", primary))


def test_forms_lockout_refuses_cached_app_password(pair: tuple[MFAMiddleware, MFAMiddleware],
                                                   clock: Clock) -> None:
    first, second = pair
    add(first, "carol")
    credential = basic_header("carol", new_app_password(first, "carol"))
    assert api(first, "/dav/x", credential).status_code == 200
    attacker = Browser(second)
    statuses = [attacker.login("carol", f"guess {guess}").status_code for guess in range(3)]  # max_failures = 3
    assert statuses == [401, 401, 401]  # the third failure locks, and looks like any other wrong password
    assert user(second, "carol").locked(clock.now)
    locked = attacker.login("carol", "guess 4")
    assert locked.status_code == 401 and "Incorrect username or password." in locked.text  # no enumeration
    clock.advance(INTERVAL)
    refused = api(first, "/dav/x", credential)
    assert_challenge(refused)
    assert refused.text == api(first, "/dav/x", basic_header("nobody", "wrong password")).text
    assert Browser(first).login("carol", PASSWORD).status_code == 401


def test_concurrent_wrong_basic_attempts_counted_exactly(database_url: str, clock: Clock) -> None:
    instances = [build(database_url, clock, lockout={"max_failures": 50}) for _ in range(2)]
    try:
        first, second = instances
        add(first, "carol")
        app_password = new_app_password(first, "carol")
        for mw in instances:  # a warm revocation view (a cold one under load: see test_cold_view_...)
            assert api(mw, "/dav/x", basic_header("carol", app_password)).status_code == 200
        barrier = threading.Barrier(50)
        statuses: list[int] = []
        lock = threading.Lock()

        def attempt(i: int) -> None:
            barrier.wait()
            response = api(instances[i % 2], "/dav/x", basic_header("carol", f"wrong password {i}"))
            with lock:
                statuses.append(response.status_code)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [401] * 50
        carol = user(first, "carol")
        assert carol.failed_count == 50 and carol.consecutive_failures == 50
        assert carol.locked(clock.now)
        # The lockout holds on every path, in both processes, for the right secrets too (the cached app
        # password included, once the lock reaches the revocation view).
        clock.advance(INTERVAL)
        for mw in instances:
            refused = api(mw, "/dav/x", basic_header("carol", app_password))
            assert_challenge(refused)
            assert "paused" in refused.text  # the one answer to every failure, unknown users included
            assert api(mw, "/mail/x", basic_header("carol", PASSWORD)).status_code == 401
            assert Browser(mw).login("carol", PASSWORD).status_code == 401
        assert user(first, "carol").failed_count == 50  # refused before any check: not counted again
    finally:
        for mw in instances:
            mw.runtime.close()


# -- the self-service page -------------------------------------------------------------------------------------------
CREATED = re.compile(r'<code class="secret" id="app-password">([a-z ]+)</code>')


def test_app_password_page_requires_sign_in(mw: MFAMiddleware) -> None:
    response = Browser(mw).get("/_mfa/app-passwords")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/_mfa/login?next=")
    post = Browser(mw).post("/_mfa/app-passwords", {"action": "create", "label": "laptop"})
    assert post.status_code == 303 and post.headers["Location"].startswith("/_mfa/login")


def test_app_password_page_asks_one_factor_session_to_step_up(mw: MFAMiddleware, clock: Clock) -> None:
    secret = put_in_state(mw, clock, "erin", "enforced")
    assert secret is not None
    browser = Browser(mw)
    first = browser.login("erin", PASSWORD, "/reports/x")  # one_factor: a level-1 session
    assert first.status_code == 303 and first.headers["Location"] == "/reports/x"
    assert session_of(mw, browser).level == 1
    assert browser.get("/_mfa/app-passwords").headers["Location"] == "/_mfa/settings#app-passwords"
    page = browser.get("/_mfa/settings")
    assert page.status_code == 303
    assert page.headers["Location"] == "/_mfa/step-up?next=/_mfa/settings"
    step_up = browser.get(page.headers["Location"])
    assert step_up.status_code == 303 and step_up.headers["Location"] == "/_mfa/verify"
    assert browser.verify(pyotp.TOTP(secret).at(clock.now)).status_code == 303
    assert browser.get("/_mfa/app-passwords", follow_redirects=True).status_code == 200


def test_app_password_page_create_list_revoke(mw: MFAMiddleware, clock: Clock) -> None:
    add(mw, "erin")
    browser = Browser(mw)
    browser.sign_in_and_enroll("erin", PASSWORD, clock)
    page = browser.get("/_mfa/app-passwords", follow_redirects=True)
    assert page.status_code == 200 and "No app passwords yet." in page.text
    created = browser.post("/_mfa/app-passwords", {"action": "create", "label": "Outlook on laptop",
                                                   "csrf_token": csrf_of(page.text)})
    assert created.status_code == 200
    match = CREATED.search(created.text)
    assert match, created.text
    shown = match.group(1)
    assert re.fullmatch(r"[a-z]{4}( [a-z]{4}){3}", shown)
    password = shown.replace(" ", "")
    assert "Outlook on laptop" in created.text
    # Shown once: not on the next GET.
    again = browser.get("/_mfa/app-passwords", follow_redirects=True)
    assert shown not in again.text and password not in again.text and 'id="app-password"' not in again.text
    assert "Outlook on laptop" in again.text and "never" in again.text
    # It works on the Basic path; the list then shows when and from where it was last used.
    clock.advance(60)
    used = api(mw, "/dav/x", basic_header("erin", shown), remote_addr="192.0.2.7")
    assert used.text == "app path=/dav/x user=erin level=2"
    listed = browser.get("/_mfa/app-passwords", follow_redirects=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(clock.now))
    assert f"{stamp}</time> from 192.0.2.7" in listed.text
    # Revoke.
    revoked = browser.post("/_mfa/app-passwords", {"action": "revoke", "label": "Outlook on laptop",
                                                   "csrf_token": csrf_of(listed.text)})
    assert revoked.status_code == 303 and revoked.headers["Location"] == "/_mfa/app-passwords"
    after = browser.get("/_mfa/app-passwords", follow_redirects=True)
    listed_after = after.text.split('id="app-passwords-h"')[1].split("</section>")[0]  # not the activity list
    assert "Outlook on laptop" not in listed_after and "No app passwords yet." in listed_after
    assert mw.runtime.app_passwords.list(user(mw, "erin")) == []
    clock.advance(INTERVAL)
    assert_challenge(api(mw, "/dav/x", basic_header("erin", shown)))
    rows = [r for r in mw.runtime.store.list_audit(username="erin") if r.event.startswith("app_password")]
    assert {(r.event, r.actor) for r in rows} == {("app_password_create", "erin"), ("app_password_revoke", "erin")}


@pytest.mark.parametrize("token", [pytest.param(None, id="missing"), pytest.param("bogus", id="bogus"),
                                   pytest.param("other-session", id="other-session")])
def test_app_password_page_enforces_csrf(mw: MFAMiddleware, clock: Clock, token: str | None) -> None:
    add(mw, "erin")
    add(mw, "fred")
    browser = Browser(mw)
    browser.sign_in_and_enroll("erin", PASSWORD, clock)
    new_app_password(mw, "erin", "phone")
    data = {"action": "create", "label": "laptop"}
    if token == "bogus":
        data["csrf_token"] = "bogus"
    elif token == "other-session":
        other = Browser(mw)
        other.sign_in_and_enroll("fred", PASSWORD, clock)
        data["csrf_token"] = csrf_of(other.get("/_mfa/app-passwords", follow_redirects=True).text)
    refused = browser.post("/_mfa/app-passwords", data)
    assert refused.status_code == 403 and "Form expired" in refused.text
    revoke = browser.post("/_mfa/app-passwords", {**data, "action": "revoke", "label": "phone"})
    assert revoke.status_code == 403
    assert [r.label for r in mw.runtime.app_passwords.list(user(mw, "erin"))] == ["phone"]


# -- helpdesk: bypass and block ----------------------------------------------------------------------------------------
def test_bypass_skips_the_code_page_once(pair: tuple[MFAMiddleware, MFAMiddleware], clock: Clock) -> None:
    first, second = pair
    put_in_state(first, clock, "alice", "enforced")
    second.runtime.accounts.bypass("alice", actor="helpdesk", seconds=300, reason="lost phone")
    browser = Browser(first)
    response = browser.login("alice", PASSWORD, "/hello")
    assert response.status_code == 303 and response.headers["Location"] == "/hello"
    session = session_of(first, browser)
    assert session.level == 2 and "bypass" in session.methods
    assert browser.get("/hello").text == "app path=/hello user=alice level=2"
    rows = [r for r in first.runtime.store.list_audit(username="alice") if r.event in ("user_bypass",
                                                                                      "second_factor")]
    assert ("user_bypass", "helpdesk") in {(r.event, r.actor) for r in rows}
    assert any(r.event == "second_factor" and r.result == "bypassed" for r in rows)
    # Used up: the next sign-in asks for the code again.
    again = Browser(first).login("alice", PASSWORD, "/hello")
    assert again.status_code == 303 and again.headers["Location"] == "/_mfa/verify"
    assert user(second, "alice").bypass_until is None


@pytest.mark.parametrize(("wait", "location"), [
    pytest.param(0, "/hello", id="immediately"),
    pytest.param(299, "/hello", id="just-before-expiry"),
    pytest.param(300, "/_mfa/verify", id="at-expiry"),
    pytest.param(3600, "/_mfa/verify", id="long-after"),
])
def test_unused_bypass_expires(pair: tuple[MFAMiddleware, MFAMiddleware], clock: Clock, wait: float,
                               location: str) -> None:
    first, second = pair
    put_in_state(first, clock, "alice", "enforced")
    second.runtime.accounts.bypass("alice", actor="helpdesk", seconds=300, reason="lost phone")
    clock.advance(wait)
    response = Browser(first).login("alice", PASSWORD, "/hello")
    assert response.status_code == 303 and response.headers["Location"] == location


def test_blocked_user_cannot_sign_in(pair: tuple[MFAMiddleware, MFAMiddleware], clock: Clock) -> None:
    first, second = pair
    put_in_state(first, clock, "alice", "enforced")
    second.runtime.accounts.bypass("alice", actor="helpdesk", seconds=300, reason="lost phone")
    second.runtime.accounts.block("alice", actor="helpdesk", reason="left the company")
    browser = Browser(first)
    response = browser.login("alice", PASSWORD, "/hello")
    assert response.status_code == 403 and "Account blocked" in response.text
    assert browser.cookie("mfa_session") is None and browser.cookie("mfa_session_pending") is None
    second.runtime.accounts.unblock("alice", actor="helpdesk")
    assert Browser(first).login("alice", PASSWORD, "/hello").headers["Location"] == "/hello"  # bypass unused


def test_blocked_users_session_refused_within_the_interval(pair: tuple[MFAMiddleware, MFAMiddleware],
                                                           clock: Clock) -> None:
    first, second = pair
    add(first, "alice")
    browser = Browser(first)
    browser.sign_in_and_enroll("alice", PASSWORD, clock)
    assert browser.get("/hello").text == "app path=/hello user=alice level=2"
    second.runtime.accounts.block("alice", actor="helpdesk", reason="left the company")
    browser.get("/hello")  # within the interval: nothing asserted
    clock.advance(INTERVAL)
    refused = browser.get("/hello")
    assert refused.status_code == 302
    assert refused.headers["Location"] in ("/_mfa/login?next=/hello", "/_mfa/login?next=/hello&reason=signed_out")
    assert browser.get("/_mfa/app-passwords").status_code == 303


class SignallingLock:
    """A lock that calls ``on_contention`` when a second thread has to wait for it."""

    def __init__(self, on_contention: Any) -> None:
        self._lock = threading.Lock()
        self._on_contention = on_contention

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(False):
            return True
        self._on_contention()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


@pytest.mark.parametrize("idle", [pytest.param(None, id="cold-start"), pytest.param(20.0, id="after-idle")])
def test_view_being_refreshed_is_not_a_503(mw: MFAMiddleware, clock: Clock, monkeypatch: pytest.MonkeyPatch,
                                           idle: float | None) -> None:
    """Two requests at once while the revocation view is cold (or older than its grace period): the second
    must wait for the first one's refresh, not be refused because the store looks unreachable."""
    add(mw, "carol")
    credential = basic_header("carol", new_app_password(mw, "carol"))
    if idle is not None:
        assert api(mw, "/dav/x", credential).status_code == 200
        clock.advance(idle)
    main = threading.current_thread()
    entered, release = threading.Event(), threading.Event()
    real = mw.runtime.store.revocations_since

    def held_refresh(after_id: int, *, newer_than: float, also_ids: Any = ()) -> Any:
        if threading.current_thread() is not main:
            entered.set()
            release.wait(timeout=30)  # until the main thread waits for the lock (or has answered)
        return real(after_id, newer_than=newer_than, also_ids=also_ids)

    monkeypatch.setattr(mw.runtime.store, "revocations_since", held_refresh)
    monkeypatch.setattr(mw.runtime.revocations, "_lock", SignallingLock(release.set))
    results: list[int] = []
    refresher = threading.Thread(target=lambda: results.append(api(mw, "/dav/x", credential).status_code))
    refresher.start()
    try:
        assert entered.wait(timeout=30)
        concurrent = api(mw, "/dav/x", credential)
    finally:
        release.set()
        refresher.join()
    assert results == [200]
    assert concurrent.status_code == 200, concurrent.text
