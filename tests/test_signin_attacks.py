"""Attacks on the sign-in steps, from the attacker's side: old pending cookies replayed after the user's record
changed, revocations landing between the password and the code, a second factor skipped by enrolling a new one,
racing enrollments, and the step-up page's "Cancel and sign out"."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.store import Store
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware, secret_of

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = make_middleware(sqlite_url, clock)
    middleware.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    yield middleware
    middleware.runtime.close()


def confirmed_methods(mw: MFAMiddleware, username: str = "bob") -> int:
    user = mw.runtime.store.get_user(username)
    assert user is not None
    return len(mw.runtime.store.list_methods(user.id))


def all_methods(mw: MFAMiddleware, username: str = "bob") -> int:
    user = mw.runtime.store.get_user(username)
    assert user is not None
    return len(mw.runtime.store.list_methods(user.id, confirmed_only=False))


def attacker_with(mw: MFAMiddleware, pending: str) -> Browser:
    """A second browser that holds nothing but a copy of someone's pending sign-in cookie."""
    attacker = Browser(mw)
    attacker.client.set_cookie("mfa_session_pending", pending, domain="localhost")
    return attacker


def pending_after_password(mw: MFAMiddleware, username: str = "bob") -> tuple[Browser, str]:
    browser = Browser(mw)
    response = browser.login(username, PASSWORD)
    assert response.status_code == 303, response.text
    pending = browser.cookie("mfa_session_pending")
    assert pending is not None
    return browser, pending


# -- finding 1: the second factor skipped by enrolling a new one ------------------------------------------------
def test_old_enrollment_sign_in_cannot_enroll_after_the_user_enrolled(mw: MFAMiddleware, clock: Clock) -> None:
    """A sign-in that passed the password while bob had no method is kept; bob enrolls elsewhere and becomes
    enforced; the old sign-in must now be asked for bob's code, and can neither start nor confirm a new method."""
    _, old_pending = pending_after_password(mw)
    clock.advance(1)
    Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.state == "enforced" and confirmed_methods(mw) == 1

    attacker = attacker_with(mw, old_pending)
    shown = attacker.get("/_mfa/enroll")
    assert shown.status_code == 303 and shown.headers["Location"] == "/_mfa/verify"
    verify_page = attacker.get("/_mfa/verify")
    assert verify_page.status_code == 200 and "Verify your identity" in verify_page.text
    token = csrf_of(verify_page.text)

    started = attacker.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": token})
    assert started.status_code == 303 and started.headers["Location"] == "/_mfa/verify"
    assert all_methods(mw) == 1  # no new enrollment was created
    confirmed = attacker.post("/_mfa/enroll", {"action": "confirm", "code": "123456", "csrf_token": token})
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/_mfa/verify"
    assert attacker.cookie("mfa_session") is None
    assert attacker.get("/hello").status_code == 302
    assert confirmed_methods(mw) == 1


def test_enrollment_started_before_the_user_enrolled_cannot_be_confirmed(mw: MFAMiddleware, clock: Clock) -> None:
    """The attacker starts an enrollment with an old sign-in (and so knows that key), then bob enrolls his own
    app elsewhere: the attacker's enrollment can never be confirmed into a second method and a session."""
    attacker, _ = pending_after_password(mw)
    start = attacker.get("/_mfa/enroll")
    assert attacker.post("/_mfa/enroll", {"action": "start", "method": "totp",
                                          "csrf_token": csrf_of(start.text)}).status_code == 303
    page = attacker.get("/_mfa/enroll")
    attacker_secret = secret_of(page.text)
    attacker_token = csrf_of(page.text)

    clock.advance(1)
    Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(30)
    code = pyotp.TOTP(attacker_secret).at(clock.now)
    response = attacker.post("/_mfa/enroll", {"action": "confirm", "code": code, "csrf_token": attacker_token})
    assert response.status_code == 303 and response.headers["Location"] == "/_mfa/verify"
    assert attacker.cookie("mfa_session") is None
    assert confirmed_methods(mw) == 1


def test_exempt_user_with_an_authenticator_is_asked_for_it_on_a_strict_rule(mw: MFAMiddleware,
                                                                            clock: Clock) -> None:
    """An MFA-exempt (disabled) user who has an authenticator meets a rule with ``exempt = false``: the step-up
    asks for the authenticator; it does not offer to enroll a new one with the password alone."""
    browser = Browser(mw)
    secret = browser.sign_in_and_enroll("bob", PASSWORD, clock)
    mw.runtime.accounts.set_state("bob", "disabled", actor="test")
    clock.advance(31)

    thief = Browser(mw)  # has bob's password only
    assert thief.login("bob", PASSWORD, "/strict/x").headers["Location"] == "/strict/x"
    step_up = thief.get("/strict/x")
    assert step_up.status_code == 302 and "/_mfa/step-up" in step_up.headers["Location"]
    landed = thief.get(step_up.headers["Location"])
    assert landed.status_code == 303 and landed.headers["Location"] == "/_mfa/verify"
    page = thief.get("/_mfa/verify")
    token = csrf_of(page.text)
    refused = thief.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": token})
    assert refused.headers["Location"] == "/_mfa/verify"
    assert all_methods(mw) == 1
    assert thief.get("/strict/x").status_code == 302

    # bob, with his authenticator, gets through.
    done = thief.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now), "csrf_token": token})
    assert done.status_code == 303 and done.headers["Location"] == "/strict/x"
    assert thief.get("/strict/x").status_code == 200


# -- finding 2: a sign-in in progress survives revocation ------------------------------------------------------
REVOCATIONS: list[object] = [
    pytest.param(lambda mw: mw.runtime.accounts.set_password("bob", NEW_PASSWORD, actor="helpdesk"),
                 id="set-password"),
    pytest.param(lambda mw: mw.runtime.accounts.revoke_sessions("bob", actor="helpdesk"), id="revoke-sessions"),
    pytest.param(lambda mw: mw.runtime.accounts.reset_mfa("bob", actor="helpdesk"), id="reset-mfa"),
    pytest.param(lambda mw: mw.runtime.accounts.block("bob", actor="helpdesk", reason="stolen laptop"),
                 id="block"),
    pytest.param(lambda mw: mw.runtime.accounts.delete("bob", actor="helpdesk"), id="delete"),
]


@pytest.mark.parametrize("revoke", REVOCATIONS)
def test_revocation_between_password_and_code_ends_the_sign_in(mw: MFAMiddleware, clock: Clock,
                                                               revoke: Callable[[MFAMiddleware], None]) -> None:
    secret = Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(31)
    browser, _ = pending_after_password(mw)
    page = browser.get("/_mfa/verify")
    token = csrf_of(page.text)
    clock.advance(1)
    revoke(mw)  # no wait for the revocation interval: the sign-in is checked against the store
    clock.advance(1)
    response = browser.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now), "csrf_token": token})
    assert response.status_code in (401, 403), response.text
    assert browser.cookie("mfa_session") is None
    assert browser.cookie("mfa_session_pending") is None  # cleared
    assert browser.get("/hello").status_code == 302


@pytest.mark.parametrize("revoke", REVOCATIONS)
def test_revocation_between_password_and_enrollment_ends_the_sign_in(mw: MFAMiddleware, clock: Clock,
                                                                     revoke: Callable[[MFAMiddleware], None]) -> None:
    browser, _ = pending_after_password(mw)
    start = browser.get("/_mfa/enroll")
    assert browser.post("/_mfa/enroll", {"action": "start", "method": "totp",
                                         "csrf_token": csrf_of(start.text)}).status_code == 303
    page = browser.get("/_mfa/enroll")
    secret, token = secret_of(page.text), csrf_of(page.text)
    clock.advance(1)
    revoke(mw)
    clock.advance(1)
    response = browser.post("/_mfa/enroll", {"action": "confirm", "code": pyotp.TOTP(secret).at(clock.now),
                                             "csrf_token": token})
    assert response.status_code in (401, 403), response.text
    assert browser.cookie("mfa_session") is None
    assert mw.runtime.store.get_user("bob") is None or confirmed_methods(mw) == 0


def test_revocation_by_another_server_ends_the_sign_in_at_once(sqlite_url: str, mw: MFAMiddleware,
                                                               clock: Clock) -> None:
    """The revocation is written by another process (another middleware on the same store, whose cache this one
    never sees within the interval): the sign-in in progress still ends at the next step."""
    secret = Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(31)
    browser, _ = pending_after_password(mw)
    page = browser.get("/_mfa/verify")
    other = make_middleware(sqlite_url, clock)
    try:
        clock.advance(1)
        other.runtime.accounts.revoke_sessions("bob", actor="helpdesk")
    finally:
        other.runtime.close()
    response = browser.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now),
                                             "csrf_token": csrf_of(page.text)})
    assert response.status_code == 401 and browser.cookie("mfa_session") is None


def test_revocation_while_the_code_is_checked_issues_no_session(mw: MFAMiddleware, clock: Clock) -> None:
    """A revocation that lands after the code was found correct but before the session is issued wins."""
    secret = Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(31)
    browser, _ = pending_after_password(mw)
    page = browser.get("/_mfa/verify")
    signin = mw.runtime.signin
    real_verify = signin.verify

    def verify_then_revoke(*args: object, **kwargs: object) -> object:
        result = real_verify(*args, **kwargs)  # type: ignore[arg-type]
        mw.runtime.accounts.revoke_sessions("bob", actor="helpdesk")
        return result

    signin.verify = verify_then_revoke  # type: ignore[method-assign]
    response = browser.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now),
                                             "csrf_token": csrf_of(page.text)})
    assert response.status_code == 401 and browser.cookie("mfa_session") is None


def test_a_finished_sign_in_cannot_be_replayed(mw: MFAMiddleware, clock: Clock) -> None:
    secret = Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(31)
    browser, pending = pending_after_password(mw)
    page = browser.get("/_mfa/verify")
    token = csrf_of(page.text)
    assert browser.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now),
                                         "csrf_token": token}).status_code == 303
    clock.advance(30)
    replay = attacker_with(mw, pending)
    response = replay.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now), "csrf_token": token})
    assert response.status_code == 401 and replay.cookie("mfa_session") is None


def test_sign_in_of_a_blocked_user_stops_at_the_next_step(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _ = pending_after_password(mw)
    clock.advance(1)
    mw.runtime.accounts.block("bob", actor="helpdesk", reason="left the company")
    response = browser.get("/_mfa/enroll")
    assert response.status_code in (401, 403)
    assert "Sign in" in response.text or "blocked" in response.text


# -- races --------------------------------------------------------------------------------------------------------
def test_racing_enrollments_confirm_one_first_method(database_url: str) -> None:
    """Twenty sign-ins confirm twenty different enrollments of one user at once: exactly one becomes the first
    method (the user's row is locked while the others look)."""
    store = Store(database_url)
    store.upgrade()
    try:
        user = store.create_user("bob", now=1.0)
        ids = [store.add_method(user.id, "totp", "Authenticator app", b"x", now=1.0) for _ in range(20)]
        barrier = threading.Barrier(len(ids))
        results: list[bool] = []
        lock = threading.Lock()

        def confirm(method_id: int) -> None:
            barrier.wait()
            ok = store.confirm_method(method_id, user.id, step=1, now=2.0, only_if_first=True)
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=confirm, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1
        assert len(store.list_methods(user.id)) == 1
    finally:
        store.close()


# -- finding 11: "Cancel and sign out" on the step-up page ------------------------------------------------------
def test_cancel_and_sign_out_on_the_step_up_page_signs_out(mw: MFAMiddleware, clock: Clock) -> None:
    Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(31)
    browser = Browser(mw)
    assert browser.login("bob", PASSWORD, "/reports/x").headers["Location"] == "/reports/x"
    assert browser.get("/reports/x").status_code == 200
    old_session = browser.cookie("mfa_session")
    step_up = browser.get("/hello")
    assert browser.get(step_up.headers["Location"]).headers["Location"] == "/_mfa/verify"
    page = browser.get("/_mfa/verify")
    assert "Cancel and sign out" in page.text
    response = browser.post("/_mfa/logout", {"csrf_token": csrf_of(page.text.split("secondary-form")[1])})
    assert response.status_code == 200 and "You have signed out" in response.text
    assert browser.cookie("mfa_session") is None and browser.cookie("mfa_session_pending") is None
    assert old_session is not None
    clock.advance(6)  # past the revocation interval
    again = Browser(mw).get_with_cookie_header("/reports/x", f"mfa_session={old_session}")
    assert again.status_code == 302


def test_logout_token_of_another_browser_is_refused(mw: MFAMiddleware, clock: Clock) -> None:
    Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(31)
    victim = Browser(mw)
    victim.login("bob", PASSWORD, "/reports/x")
    other, _ = pending_after_password(mw)
    foreign = csrf_of(other.get("/_mfa/verify").text)
    response = victim.post("/_mfa/logout", {"csrf_token": foreign})
    assert response.status_code == 403
    assert victim.get("/reports/x").status_code == 200


def test_step_up_of_an_old_one_factor_session_works(mw: MFAMiddleware, clock: Clock) -> None:
    """A one-factor session older than the sign-in timeout can still step up: the step-up counts from now."""
    secret = Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(31)
    browser = Browser(mw)
    assert browser.login("bob", PASSWORD, "/reports/x").headers["Location"] == "/reports/x"
    for _ in range(5):  # 25 minutes of activity, within the inactivity timeout
        clock.advance(300)
        assert browser.get("/reports/x").status_code == 200
    step_up = browser.get("/hello")
    assert browser.get(step_up.headers["Location"]).headers["Location"] == "/_mfa/verify"
    page = browser.get("/_mfa/verify")
    done = browser.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now), "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["Location"] == "/hello"


def test_step_up_of_a_revoked_session_ends(mw: MFAMiddleware, clock: Clock) -> None:
    Browser(mw).sign_in_and_enroll("bob", PASSWORD, clock)
    clock.advance(31)
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/reports/x")
    step_up = browser.get("/hello")
    clock.advance(1)
    mw.runtime.accounts.revoke_sessions("bob", actor="helpdesk")  # this process's cache has not seen it yet
    response = browser.get(step_up.headers["Location"])
    assert response.status_code in (302, 303, 401)
    assert browser.cookie("mfa_session_pending") is None
