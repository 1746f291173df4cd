"""The whole browser-less flow through the WSGI middleware, and the security invariants it must keep."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote, unquote_to_bytes

import pyotp
import pytest
from sqlalchemy import create_engine

from mfa_middleware import MFAMiddleware
from mfa_middleware.core.tokens import Session, TokenCodec
from mfa_middleware.services.lockout import Client
from tests.support.mfa import (FAST_HASHER, SECRET_KEY, Browser, Clock, csrf_of, echo_app, make_config, secret_of,
                               make_middleware)

PASSWORD = "correct horse battery"
LOGIN_FAILED = "Incorrect username or password. After repeated failures sign-in is paused for a while"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = make_middleware(sqlite_url, clock)
    middleware.runtime.accounts.add("alice", actor="test", password=PASSWORD, groups=["admins"])
    middleware.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    yield middleware
    middleware.runtime.close()


def enrolled(mw: MFAMiddleware, clock: Clock, user: str = "alice") -> tuple[Browser, str]:
    browser = Browser(mw)
    secret = browser.sign_in_and_enroll(user, PASSWORD, clock)
    return browser, secret


def session_of(mw: MFAMiddleware, browser: Browser) -> Session:
    session = mw.runtime.codec.load_session(browser.cookie("mfa_session"))
    assert session is not None
    return session


# -- anonymous requests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "headers", "status", "expect"), [
    pytest.param("/hello?x=1", {}, 302, "/_mfa/login?next=/hello%3Fx%3D1", id="browser-redirect"),
    pytest.param("/hello", {"Accept": "application/json"}, 401, "authentication_required", id="json-401"),
    pytest.param("/hello", {"X-Requested-With": "XMLHttpRequest"}, 401, "authentication_required", id="xhr-401"),
    pytest.param("/public/page", {}, 200, "app path=/public/page user=-", id="bypass"),
    pytest.param("/blocked/x", {}, 403, "Access denied", id="deny-403"),
    pytest.param("/admin%252fx", {}, 400, "Bad request", id="double-encoded-400"),
])
def test_anonymous(mw: MFAMiddleware, path: str, headers: dict[str, str], status: int, expect: str) -> None:
    response = Browser(mw).get(path, headers=headers)
    assert response.status_code == status
    assert expect in (response.headers.get("Location") or response.text)
    if status != 200:
        assert response.headers["Cache-Control"] == "no-store"


def test_json_challenge_body(mw: MFAMiddleware) -> None:
    response = Browser(mw).get("/api/x", headers={"Accept": "application/json"})
    body = json.loads(response.text)
    assert body["login_url"] == "/_mfa/login?next=/api/x"


# -- the whole flow ------------------------------------------------------------------------------------------------
def test_enroll_then_sign_in_with_code(mw: MFAMiddleware, clock: Clock) -> None:
    browser = Browser(mw)
    first = browser.login("alice", PASSWORD, "/hello")
    assert first.status_code == 303 and first.headers["Location"] == "/_mfa/enroll"
    intro = browser.get("/_mfa/enroll")
    assert "Set it up now" in intro.text
    secret, done = browser.enroll(clock)
    assert done.headers["Location"] == "/hello"
    page = browser.get("/hello")
    assert page.text == "app path=/hello user=alice level=2"
    user = mw.runtime.store.get_user("alice")
    assert user is not None and user.state == "enforced"  # registration complete: enforced

    # Sign out, then sign in again: now a code is asked every time.
    logout_page = browser.get("/_mfa/logout")
    out = browser.post("/_mfa/logout", {"csrf_token": csrf_of(logout_page.text)})
    assert "You have signed out" in out.text
    assert browser.get("/hello").status_code == 302
    clock.advance(30)
    again = browser.login("alice", PASSWORD, "/hello")
    assert again.headers["Location"] == "/_mfa/verify"
    verified = browser.verify(pyotp.TOTP(secret).at(clock.now))
    assert verified.status_code == 303 and verified.headers["Location"] == "/hello"
    assert browser.get("/hello").text == "app path=/hello user=alice level=2"


def test_identity_in_environ(mw: MFAMiddleware, clock: Clock) -> None:
    seen: dict[str, object] = {}

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [])  # type: ignore[operator]
        return [b"ok"]

    mw.app = app
    browser, _ = enrolled(mw, clock)
    browser.get("/hello", headers={"Remote-User": "mallory"})
    identity = seen["mfa.identity"]
    assert seen["REMOTE_USER"] == "alice"
    assert "HTTP_REMOTE_USER" not in seen  # a client header never reaches the app as an identity
    assert identity.username == "alice" and identity.groups == ("admins",)  # type: ignore[attr-defined]
    assert identity.level == 2 and identity.methods == ("forms", "totp")  # type: ignore[attr-defined]
    assert identity.primary_at == clock.now and identity.mfa_at == clock.now  # type: ignore[attr-defined]


def test_unknown_user_and_wrong_password_look_the_same(mw: MFAMiddleware) -> None:
    wrong = Browser(mw).login("alice", "not the password")
    unknown = Browser(mw).login("nobody", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    strip = lambda text: text.replace(csrf_of(text), "")  # noqa: E731
    assert strip(wrong.text).replace("alice", "X") == strip(unknown.text).replace("nobody", "X")
    assert "Incorrect username or password." in wrong.text


def test_new_session_id_at_each_step(mw: MFAMiddleware, clock: Clock) -> None:
    browser = Browser(mw)
    browser.get("/_mfa/login")
    anon = browser.cookie("mfa_session_anon")
    browser.login("alice", PASSWORD)
    pending = mw.runtime.codec.load_pending(browser.cookie("mfa_session_pending"))
    assert anon and pending is not None
    assert browser.cookie("mfa_session_anon") is None
    browser.enroll(clock)
    session = session_of(mw, browser)
    assert len({anon, pending.sid, session.sid}) == 3
    assert browser.cookie("mfa_session_pending") is None


# -- TOTP replay and lockout ---------------------------------------------------------------------------------------
def test_replayed_code_refused_sequentially(mw: MFAMiddleware, clock: Clock) -> None:
    _, secret = enrolled(mw, clock)
    clock.advance(30)
    code = pyotp.TOTP(secret).at(clock.now)
    first = Browser(mw)
    first.login("alice", PASSWORD)
    assert first.verify(code).status_code == 303
    second = Browser(mw)
    second.login("alice", PASSWORD)
    replay = second.verify(code)
    assert replay.status_code == 401 and "already been used" in replay.text
    # The code used during enrollment cannot be replayed either, nor any older code.
    assert second.verify(pyotp.TOTP(secret).at(clock.now - 30)).status_code == 401


def test_replay_under_twenty_concurrent_requests(sqlite_url: str, clock: Clock) -> None:
    mw = make_middleware(sqlite_url, clock, lockout={"max_failures": 100})
    mw.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    _, secret = enrolled(mw, clock)
    clock.advance(30)
    code = pyotp.TOTP(secret).at(clock.now)
    browsers = []
    for _ in range(20):
        b = Browser(mw)
        b.login("alice", PASSWORD)
        page = b.get("/_mfa/verify")
        browsers.append((b, csrf_of(page.text)))
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def attempt(b: Browser, csrf: str) -> None:
        barrier.wait()
        status = b.post("/_mfa/verify", {"code": code, "csrf_token": csrf}).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=attempt, args=pair) for pair in browsers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [303] + [401] * 19


def test_lockout_holds_on_every_path_and_expires(sqlite_url: str, clock: Clock) -> None:
    mw = make_middleware(sqlite_url, clock, lockout={"max_failures": 3, "lock_for": "10m", "reset_after": "10m"})
    mw.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    _, secret = enrolled(mw, clock)
    clock.advance(30)
    attacker = Browser(mw)
    attacker.login("alice", PASSWORD)
    assert attacker.verify("000000").status_code == 401
    assert attacker.verify("000001").status_code == 401
    locked = attacker.verify("000002")
    assert locked.status_code == 429 and "Account locked" in locked.text
    user = mw.runtime.store.get_user("alice")
    assert user is not None and user.failed_count == 3
    # Locked: the right password and the right code are refused too, on every path. The password form gives the
    # same answer as to any wrong password (no account enumeration through the lockout).
    victim = Browser(mw)
    refused = victim.login("alice", PASSWORD)
    assert refused.status_code == 401 and LOGIN_FAILED in refused.text
    result = mw.runtime.signin.verify(user, {"code": pyotp.TOTP(secret).at(clock.now)}, Client("127.0.0.1", "t"),
                                      clock.now)
    assert result.outcome == "locked"
    # After lock_for, the account works again.
    clock.advance(601)
    victim = Browser(mw)
    assert victim.login("alice", PASSWORD).headers["Location"] == "/_mfa/verify"
    assert victim.verify(pyotp.TOTP(secret).at(clock.now)).status_code == 303
    user = mw.runtime.store.get_user("alice")
    assert user is not None and user.failed_count == 0
    mw.runtime.close()


def test_wrong_passwords_count_and_lock(sqlite_url: str, clock: Clock) -> None:
    mw = make_middleware(sqlite_url, clock, lockout={"max_failures": 2})
    mw.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    assert Browser(mw).login("alice", "wrong").status_code == 401
    locking = Browser(mw).login("alice", "wrong")  # this failure reaches the limit: it looks like any other
    assert locking.status_code == 401 and LOGIN_FAILED in locking.text
    assert mw.runtime.accounts.get("alice").locked(clock.now)
    refused = Browser(mw).login("alice", PASSWORD)  # locked: the right password is not even checked
    assert refused.status_code == 401 and LOGIN_FAILED in refused.text
    mw.runtime.close()


def test_correct_password_does_not_reset_the_counter(mw: MFAMiddleware, clock: Clock) -> None:
    enrolled(mw, clock)
    b = Browser(mw)
    b.login("alice", PASSWORD)
    b.verify("000000")
    Browser(mw).login("alice", PASSWORD)  # the password alone must not wipe the failed code
    user = mw.runtime.store.get_user("alice")
    assert user is not None and user.failed_count == 1


# -- cookies -------------------------------------------------------------------------------------------------------
def test_cookie_attributes_over_http_and_https(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _ = enrolled(mw, clock)
    headers = Browser(mw).login("alice", PASSWORD).headers.getlist("Set-Cookie")
    pending = [h for h in headers if h.startswith("mfa_session_pending=")][0]
    assert "HttpOnly" in pending and "SameSite=Lax" in pending and "Path=/" in pending
    assert "Secure" not in pending

    secure = Browser(mw)
    secure.base = "https://localhost"
    page = secure.get("/_mfa/login")
    assert any(h.startswith("__Host-mfa_session_anon=") and "Secure" in h for h in page.headers.getlist("Set-Cookie"))
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Vary"] == "Cookie"
    assert page.headers["X-Frame-Options"] == "DENY"
    response = secure.post("/_mfa/login", {"username": "alice", "password": PASSWORD, "next": "/",
                                           "csrf_token": csrf_of(page.text)})
    cookie = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("__Host-mfa_session_pending=")][0]
    assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie and "Domain" not in cookie


def forge(mw: MFAMiddleware, session: Session) -> str:
    return mw.runtime.codec.dump_session(session)


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda mw, s, tok: tok[:-3] + ("AAA" if not tok.endswith("AAA") else "BBB"), id="tampered-sig"),
    pytest.param(lambda mw, s, tok: tok.replace("eyJ", "eyK", 1) if "eyJ" in tok else "x" + tok, id="tampered-body"),
    pytest.param(lambda mw, s, tok: mw.runtime.codec.pending_serializer.dumps(s.to_payload()), id="wrong-purpose"),
    pytest.param(lambda mw, s, tok: mw.runtime.codec.make_csrf(s.sid), id="csrf-as-session"),
    pytest.param(lambda mw, s, tok: TokenCodec(("retired-key-" + "r" * 30,)).dump_session(s), id="old-key-removed"),
    pytest.param(lambda mw, s, tok: forge(mw, replace(s, issued_at=s.issued_at - 13 * 3600,
                                                    last_seen=s.last_seen)), id="absolute-timeout"),
    pytest.param(lambda mw, s, tok: forge(mw, replace(s, last_seen=s.last_seen - 31 * 60)), id="inactivity"),
    pytest.param(lambda mw, s, tok: "%%%;;==", id="garbage"),
    pytest.param(lambda mw, s, tok: "a" * 10000, id="oversized"),
])
def test_bad_session_cookies_are_refused(mw: MFAMiddleware, clock: Clock, mutate: object) -> None:
    browser, _ = enrolled(mw, clock)
    session = session_of(mw, browser)
    good = Browser(mw).get_with_cookie_header("/hello", f"mfa_session={browser.cookie('mfa_session')}")
    assert good.status_code == 200  # the same request with the real cookie passes
    token = str(mutate(mw, session, browser.cookie("mfa_session")))  # type: ignore[operator]
    response = Browser(mw).get_with_cookie_header("/hello", f"mfa_session={token}")
    assert response.status_code == 302 and response.headers["Location"].startswith("/_mfa/login")


def test_rotated_key_keeps_old_cookies_and_signs_with_new(sqlite_url: str, clock: Clock) -> None:
    old = make_middleware(sqlite_url, clock)
    old.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    browser, _ = enrolled(old, clock)
    token = browser.cookie("mfa_session")
    new_key = "rotated-" + "z" * 40
    rotated = MFAMiddleware(echo_app, make_config(sqlite_url, secret_keys=[SECRET_KEY, new_key]), clock=clock,
                            password_hasher=FAST_HASHER)
    carrier = Browser(rotated)
    carrier.client.set_cookie("mfa_session", str(token), domain="localhost")
    assert carrier.get("/hello").status_code == 200
    clock.advance(120)  # due for refresh: the new cookie is signed with the last key only
    refreshed = carrier.get("/hello")
    assert refreshed.status_code == 200
    new_token = carrier.cookie("mfa_session")
    assert new_token != token
    only_new = MFAMiddleware(echo_app, make_config(sqlite_url, secret_keys=[new_key]), clock=clock,
                             password_hasher=FAST_HASHER)
    assert only_new.runtime.codec.load_session(new_token) is not None
    assert only_new.runtime.codec.load_session(token) is None
    for m in (old, rotated, only_new):
        m.runtime.close()


def test_activity_refreshes_cookie_with_same_session_id(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _ = enrolled(mw, clock)
    before = session_of(mw, browser)
    assert "Set-Cookie" not in browser.get("/hello").headers  # fresh cookie: nothing to send
    for _ in range(4):  # stay active past the inactivity timeout, in steps shorter than it
        clock.advance(20 * 60)
        response = browser.get("/hello")
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "private, no-store"
    after = session_of(mw, browser)
    assert after.sid == before.sid and after.last_seen == clock.now and after.issued_at == before.issued_at


def test_absolute_timeout_despite_activity(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _ = enrolled(mw, clock)
    start = clock.now
    statuses = []
    for _ in range(26):  # active every 29 minutes, for 12 h 34 min
        clock.advance(29 * 60)
        statuses.append((clock.now - start, browser.get("/hello").status_code))
    assert all(code == 200 for elapsed, code in statuses if elapsed <= 12 * 3600)
    assert all(code == 302 for elapsed, code in statuses if elapsed > 12 * 3600)


# -- revocation ------------------------------------------------------------------------------------------------------
def test_logout_revokes_the_cookie_server_side(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _ = enrolled(mw, clock)
    stolen = browser.cookie("mfa_session")
    page = browser.get("/_mfa/logout")
    browser.post("/_mfa/logout", {"csrf_token": csrf_of(page.text)})
    replay = Browser(mw)
    replay.client.set_cookie("mfa_session", str(stolen), domain="localhost")
    assert replay.get("/hello").status_code == 302


def test_revocation_reaches_another_process_within_interval(mw: MFAMiddleware, clock: Clock,
                                                            sqlite_url: str) -> None:
    browser, _ = enrolled(mw, clock)
    other = MFAMiddleware(echo_app, make_config(sqlite_url), clock=clock, password_hasher=FAST_HASHER)
    carrier = Browser(other)
    carrier.client.set_cookie("mfa_session", str(browser.cookie("mfa_session")), domain="localhost")
    assert carrier.get("/hello").status_code == 200
    clock.advance(1)
    mw.runtime.accounts.revoke_sessions("alice", actor="admin")
    clock.advance(5)  # the configured revocation interval
    assert carrier.get("/hello").status_code == 302
    assert browser.get("/hello").status_code == 302
    other.runtime.close()


@pytest.mark.parametrize("operation", ["reset_mfa", "delete", "revoke_sessions"])
def test_admin_operations_end_sessions(mw: MFAMiddleware, clock: Clock, operation: str) -> None:
    browser, _ = enrolled(mw, clock)
    clock.advance(1)
    getattr(mw.runtime.accounts, operation)("alice", actor="admin")
    clock.advance(6)
    assert browser.get("/hello").status_code == 302


# -- CSRF --------------------------------------------------------------------------------------------------------------
def test_csrf_required_on_every_post(mw: MFAMiddleware, clock: Clock) -> None:
    browser = Browser(mw)
    browser.get("/_mfa/login")
    no_token = browser.post("/_mfa/login", {"username": "alice", "password": PASSWORD})
    assert no_token.status_code == 403 and "Form expired" in no_token.text
    other = Browser(mw)
    foreign = csrf_of(other.get("/_mfa/login").text)  # a token bound to someone else's cookie
    assert browser.post("/_mfa/login", {"username": "alice", "password": PASSWORD,
                                        "csrf_token": foreign}).status_code == 403
    # Verify and logout also refuse a token bound to another cookie.
    browser.login("alice", PASSWORD)
    assert browser.post("/_mfa/enroll", {"action": "start", "csrf_token": foreign}).status_code == 403
    signed_in, _ = enrolled(mw, clock, "bob")
    assert signed_in.post("/_mfa/logout", {"csrf_token": foreign}).status_code == 403
    assert signed_in.get("/hello").status_code == 200  # the refused logout changed nothing


# -- next= and path tricks ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["//evil.com", "/\\evil.com", "/%09/evil.com", "https:evil.com",
                                    "javascript:alert(1)", "https://evil.com/", "/_mfa/logout"])
def test_next_stays_on_site(mw: MFAMiddleware, clock: Clock, target: str) -> None:
    enrolled(mw, clock)
    clock.advance(30)
    browser = Browser(mw)
    page = browser.get("/_mfa/login?next=" + quote(target, safe=""))
    assert "evil" not in page.text.split('name="next"')[1].split(">")[0]
    response = browser.post("/_mfa/login", {"username": "alice", "password": PASSWORD, "next": target,
                                            "csrf_token": csrf_of(page.text)})
    assert response.headers["Location"] == "/_mfa/verify"
    user = mw.runtime.store.get_user("alice")
    assert user is not None
    secret = mw.runtime.box.decrypt(mw.runtime.store.list_methods(user.id)[0].secret or b"")
    done = browser.verify(pyotp.TOTP(secret).at(clock.now))
    assert done.headers["Location"] == "/"


@pytest.mark.parametrize("raw", ["//admin/x", "/./admin/x", "/x/../admin/x", "/%2e%2e/admin/x", "/admin;x/y",
                                 "/ADMIN/x", "/Admin", "/admin;jsessionid=1", "/admin/x/%2e%2e/y", "/admin\\x",
                                 "/public/../admin/x", "/public/..;/admin/x", "/public%2f..%2fadmin/x",
                                 "/public/%2e%2e/admin/x", "/public/%252e%252e/admin/x", "/public/.%2e/admin/x"])
def test_path_tricks_cannot_reach_admin_without_its_rule(mw: MFAMiddleware, clock: Clock, raw: str) -> None:
    path_info = unquote_to_bytes(raw).decode("latin-1")  # what a server hands the app: decoded once
    bob, _ = enrolled(mw, clock, "bob")  # signed in fully, but not in "admins"
    response = bob.get("/", environ_overrides={"PATH_INFO": path_info})
    assert response.status_code in (400, 403), (raw, response.status_code, response.text)
    anonymous = Browser(mw).get("/", environ_overrides={"PATH_INFO": path_info})
    assert anonymous.status_code in (302, 400)
    if anonymous.status_code == 302:
        assert anonymous.headers["Location"].startswith("/_mfa/login")


def test_app_receives_the_normalised_path(mw: MFAMiddleware, clock: Clock) -> None:
    alice, _ = enrolled(mw, clock)
    assert alice.get("/x/../admin/./y").text == "app path=/admin/y user=alice level=2"


# -- user states, one factor, step-up ----------------------------------------------------------------------------------
def test_disabled_user_is_exempt_unless_the_rule_refuses(mw: MFAMiddleware) -> None:
    mw.runtime.accounts.add("carol", actor="test", password=PASSWORD, state="disabled")
    browser = Browser(mw)
    response = browser.login("carol", PASSWORD, "/hello")
    assert response.headers["Location"] == "/hello"
    assert browser.get("/hello").text == "app path=/hello user=carol level=1"
    strict = browser.get("/strict/x")
    assert strict.status_code == 302 and strict.headers["Location"].startswith("/_mfa/step-up")
    step = browser.get(strict.headers["Location"])
    assert step.headers["Location"] == "/_mfa/enroll"


def test_one_factor_route_then_step_up(mw: MFAMiddleware, clock: Clock) -> None:
    _, secret = enrolled(mw, clock)
    clock.advance(30)
    browser = Browser(mw)
    response = browser.login("alice", PASSWORD, "/reports/q3")
    assert response.headers["Location"] == "/reports/q3"
    assert browser.get("/reports/q3").text == "app path=/reports/q3 user=alice level=1"
    first_sid = session_of(mw, browser).sid
    step = browser.get("/hello")
    assert step.headers["Location"] == "/_mfa/step-up?next=/hello"
    assert browser.get(step.headers["Location"]).headers["Location"] == "/_mfa/verify"
    done = browser.verify(pyotp.TOTP(secret).at(clock.now))
    assert done.headers["Location"] == "/hello"
    assert browser.get("/hello").text == "app path=/hello user=alice level=2"
    assert session_of(mw, browser).sid != first_sid
    clock.advance(6)
    old = Browser(mw)
    old.client.set_cookie("mfa_session", forge(mw, replace(session_of(mw, browser), sid=first_sid, level=1)),
                          domain="localhost")
    assert old.get("/reports/q3").status_code == 302  # the one-factor session was ended by the step-up


def test_groups_rule_denies_other_users(mw: MFAMiddleware, clock: Clock) -> None:
    bob, _ = enrolled(mw, clock, "bob")
    assert bob.get("/admin/").status_code == 403
    alice, _ = enrolled(mw, clock)
    assert alice.get("/admin/").status_code == 200


# -- Windows sign-in ---------------------------------------------------------------------------------------------------
def test_remote_user_from_the_server_only(sqlite_url: str, clock: Clock) -> None:
    mw = make_middleware(sqlite_url, clock, primary={"methods": ["forms", "remote_user"]})
    mw.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    windows = Browser(mw)
    response = windows.get("/_mfa/login?next=/hello", environ_overrides={"REMOTE_USER": "CORP\\Alice"})
    assert response.status_code == 303 and response.headers["Location"] == "/_mfa/enroll"
    pending = mw.runtime.codec.load_pending(windows.cookie("mfa_session_pending"))
    assert pending is not None and pending.username == "alice" and pending.primary_method == "remote_user"
    spoof = Browser(mw).get("/_mfa/login", headers={"Remote-User": "alice", "X-Remote-User": "alice"})
    assert spoof.status_code == 200 and "Password" in spoof.text  # a header is not Windows sign-in
    mw.runtime.close()


def test_remote_user_ignored_unless_configured(mw: MFAMiddleware) -> None:
    response = Browser(mw).get("/_mfa/login", environ_overrides={"REMOTE_USER": "alice"})
    assert response.status_code == 200 and 'name="password"' in response.text


def test_remote_user_mismatch_ends_the_session(sqlite_url: str, clock: Clock) -> None:
    mw = make_middleware(sqlite_url, clock, primary={"methods": ["forms", "remote_user"]})
    mw.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    browser, _ = enrolled(mw, clock)
    assert browser.get("/hello", environ_overrides={"REMOTE_USER": "CORP\\alice"}).status_code == 200
    assert browser.get("/hello", environ_overrides={"REMOTE_USER": "CORP\\bob"}).status_code == 302
    mw.runtime.close()


# -- audit, fail closed ------------------------------------------------------------------------------------------------
def test_every_step_is_audited_without_secrets(mw: MFAMiddleware, clock: Clock) -> None:
    Browser(mw).login("alice", "wrong password here")
    browser, secret = enrolled(mw, clock)
    rows = mw.runtime.store.list_audit(username="alice", limit=100)
    events = {(r.event, r.result) for r in rows}
    assert {("primary", "failure"), ("primary", "success"), ("enroll", "started"), ("enroll", "success")} <= events
    assert all(r.client_ip and r.at for r in rows if r.event == "primary")
    dump = repr(rows) + repr(mw.runtime.store.list_audit(limit=1000))
    for needle in (PASSWORD, "wrong password here", secret, str(browser.cookie("mfa_session"))):
        assert needle not in dump


def test_store_down_fails_closed(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _ = enrolled(mw, clock)
    assert browser.get("/hello").status_code == 200
    mw.runtime.store.engine.dispose()
    mw.runtime.store.engine = create_engine("sqlite:////nonexistent-folder/mfa.db")
    clock.advance(16)  # past the revocation grace period (3 x 5 s)
    response = browser.get("/hello")
    assert response.status_code == 503 and "unavailable" in response.text
    assert browser.get("/hello", headers={"Accept": "application/json"}).status_code == 503
    visitor = Browser(mw)
    page = visitor.get("/_mfa/login")
    assert page.status_code == 200  # the form itself needs no store
    posted = visitor.post("/_mfa/login", {"username": "alice", "password": PASSWORD,
                                          "csrf_token": csrf_of(page.text)})
    assert posted.status_code == 503 and "Sign-in is unavailable" in posted.text


def test_refreshed_cookie_is_never_cacheable(mw: MFAMiddleware, clock: Clock) -> None:
    def cacheable_app(environ: dict[str, object], start_response: object) -> list[bytes]:
        start_response("200 OK", [("Cache-Control", "public, max-age=3600"), ("Vary", "Accept")])  # type: ignore[operator]
        return [b"cached page"]

    browser, _ = enrolled(mw, clock)
    mw.app = cacheable_app
    assert browser.get("/hello").headers["Cache-Control"] == "public, max-age=3600"  # no cookie set: untouched
    clock.advance(120)
    response = browser.get("/hello")
    assert "mfa_session=" in response.headers["Set-Cookie"]
    assert response.headers.getlist("Cache-Control") == ["private, no-store"]
    assert response.headers["Vary"] == "Accept, Cookie"


def test_unreadable_session_cookie_is_cleared(mw: MFAMiddleware) -> None:
    response = Browser(mw).get_with_cookie_header("/hello", "mfa_session=garbage.value.sig")
    assert response.status_code == 302
    assert any(h.startswith("mfa_session=;") and "Max-Age=0" in h for h in response.headers.getlist("Set-Cookie"))


def test_password_spraying_from_one_address_is_stopped(sqlite_url: str, clock: Clock) -> None:
    mw = make_middleware(sqlite_url, clock, lockout={"max_failures_per_client": 5, "client_lock_for": "10m"})
    for i in range(8):
        mw.runtime.accounts.add(f"user{i}", actor="test", password=PASSWORD)
    sprayer = Browser(mw)
    sprayer.remote_addr = "203.0.113.9"
    statuses = [sprayer.login(f"user{i}", "Winter2026!").status_code for i in range(6)]
    assert statuses == [401] * 5 + [429]  # one wrong password per account, but five from one address: the sixth
    # is refused unchecked, with the 429 every username gets from that address (regulation)
    assert mw.runtime.store.client_locked_until("203.0.113.9", clock.now) is not None
    assert sprayer.login("user7", PASSWORD).status_code == 429  # even the right password, from that address
    elsewhere = Browser(mw)
    elsewhere.remote_addr = "198.51.100.20"
    assert elsewhere.login("user7", PASSWORD).status_code == 303  # other addresses are not affected
    assert all(mw.runtime.store.get_user(f"user{i}").failed_count == 1 for i in range(5))  # type: ignore[union-attr]
    clock.advance(601)
    assert sprayer.login("user7", PASSWORD).status_code == 303
    mw.runtime.close()


def test_server_remote_user_never_reaches_the_app_without_a_session(mw: MFAMiddleware) -> None:
    response = Browser(mw).get("/public/x", environ_overrides={"REMOTE_USER": "mallory"})
    assert response.text == "app path=/public/x user=- level=-"


def test_old_revocations_are_pruned(mw: MFAMiddleware, clock: Clock) -> None:
    store = mw.runtime.store
    store.add_revocation("alice", now=clock.now - 13 * 3600, session_id="ancient")
    store.add_revocation("alice", now=clock.now, session_id="recent")
    mw.runtime.revocations.refresh(clock.now)  # the read, then the hourly pruning in the background
    mw.runtime.revocations.wait_idle()
    left = {r.session_id for r in store.revocations_since(0, newer_than=0)}
    assert "recent" in left and "ancient" not in left


def test_enrollment_can_go_on_to_create_an_app_password(mw: MFAMiddleware, clock: Clock) -> None:
    browser = Browser(mw)
    browser.login("alice", PASSWORD, "/hello")
    start = browser.get("/_mfa/enroll")
    browser.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
    page = browser.get("/_mfa/enroll")
    assert 'name="then"' in page.text and "create an app password" in page.text
    code = pyotp.TOTP(secret_of(page.text)).at(clock.now)
    done = browser.post("/_mfa/enroll", {"action": "confirm", "code": code, "then": "app-passwords",
                                         "csrf_token": csrf_of(page.text)})
    assert done.headers["Location"] == "/_mfa/app-passwords?next=/hello"
    offer = browser.get(done.headers["Location"], follow_redirects=True)  # the app passwords of security info
    assert offer.status_code == 200 and "Device name" in offer.text and 'href="/hello">Continue' in offer.text
    created = browser.post("/_mfa/app-passwords?next=/hello", {"action": "create", "label": "Mail on phone",
                                                               "csrf_token": csrf_of(offer.text)})
    assert 'id="app-password"' in created.text and 'href="/hello">Continue' in created.text
    assert browser.get("/hello").status_code == 200


def test_enrollment_offer_is_not_shown_to_administrators(sqlite_url: str, clock: Clock) -> None:
    mw = make_middleware(sqlite_url, clock)
    mw.runtime.accounts.add("root", actor="test", password=PASSWORD, is_admin=True)
    browser = Browser(mw)
    browser.login("root", PASSWORD)
    start = browser.get("/_mfa/enroll")
    browser.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
    page = browser.get("/_mfa/enroll")
    assert 'name="then"' not in page.text
    code = pyotp.TOTP(secret_of(page.text)).at(clock.now)
    done = browser.post("/_mfa/enroll", {"action": "confirm", "code": code, "then": "app-passwords",
                                         "csrf_token": csrf_of(page.text)})
    assert done.headers["Location"] == "/"  # the forged choice is ignored for an administrator
    mw.runtime.close()
