"""Backup codes through the pages: offered after enrollment, shown once, "Sign in another way" with a code, each
code once, a new set ends the old one, and a fresh second factor is needed to make a set."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware

PASSWORD = "correct horse battery"
CODE = re.compile(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "backup_codes"]})
    middleware.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    yield middleware
    middleware.runtime.close()


def enroll_and_make_codes(mw: MFAMiddleware, clock: Clock) -> tuple[Browser, str, list[str]]:
    browser = Browser(mw)
    first = browser.login("bob", PASSWORD, "/hello")
    assert first.headers["Location"] == "/_mfa/enroll"
    secret, done = browser.enroll(clock)
    assert done.status_code == 303 and done.headers["Location"] == "/_mfa/backup-codes?next=/hello"
    offer = browser.get(done.headers["Location"])
    assert offer.status_code == 200 and "Make my backup codes" in offer.text
    made = browser.post("/_mfa/backup-codes", {"csrf_token": csrf_of(offer.text), "next": "/hello"})
    assert made.status_code == 200, made.text
    codes = CODE.findall(made.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "download=" in made.text and 'href="/hello"' in made.text
    assert made.headers["Cache-Control"] == "no-store"
    return browser, secret, codes


def sign_in_with_backup_code(mw: MFAMiddleware, code: str) -> tuple[Browser, int, str]:
    browser = Browser(mw)
    assert browser.login("bob", PASSWORD, "/hello").headers["Location"] == "/_mfa/verify"
    page = browser.get("/_mfa/verify")
    assert "Sign in another way" in page.text
    choose = browser.post("/_mfa/verify", {"action": "choose", "csrf_token": csrf_of(page.text)})
    assert choose.status_code == 200 and "I can&#39;t use my other methods" in choose.text
    method_id = re.findall(r'name="method_id" value="(\d+)"', choose.text)[-1]
    used = browser.post("/_mfa/verify", {"action": "use", "method_id": method_id, "csrf_token": csrf_of(choose.text)})
    assert used.headers["Location"] == "/_mfa/verify"
    codes_page = browser.get("/_mfa/verify")
    assert "Backup code" in codes_page.text
    answer = browser.post("/_mfa/verify", {"code": code, "method_id": method_id,
                                           "csrf_token": csrf_of(codes_page.text)})
    return browser, answer.status_code, answer.headers.get("Location", "")


def test_codes_offered_after_enrollment_and_each_works_once(mw: MFAMiddleware, clock: Clock) -> None:
    _, _, codes = enroll_and_make_codes(mw, clock)
    clock.advance(60)
    browser, status, location = sign_in_with_backup_code(mw, codes[0].upper())
    assert (status, location) == (303, "/hello")
    assert browser.get("/hello").status_code == 200
    session = mw.runtime.codec.load_session(browser.cookie("mfa_session"))
    assert session is not None and session.methods == ("forms", "backup_codes")
    clock.advance(60)
    _, status, _ = sign_in_with_backup_code(mw, codes[0])
    assert status == 401
    user = mw.runtime.store.get_user("bob")
    assert user is not None and mw.runtime.store.count_backup_codes(user.id) == 9


def test_a_new_set_ends_the_old_one(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _, old = enroll_and_make_codes(mw, clock)
    page = browser.get("/_mfa/backup-codes")
    assert "You have <strong>10</strong> unused backup" in page.text
    new = CODE.findall(browser.post("/_mfa/backup-codes", {"csrf_token": csrf_of(page.text)}).text)
    assert len(new) == 10 and not set(new) & set(old)
    clock.advance(60)
    assert sign_in_with_backup_code(mw, old[1])[1] == 401
    assert sign_in_with_backup_code(mw, new[1])[1] == 303


def test_making_codes_needs_a_fresh_second_factor(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _, _ = enroll_and_make_codes(mw, clock)
    page = browser.get("/_mfa/backup-codes")
    token = csrf_of(page.text)
    clock.advance(11 * 60)
    refused = browser.post("/_mfa/backup-codes", {"csrf_token": token})
    assert refused.status_code == 403 and "Verify again first" in refused.text


def test_one_factor_session_cannot_make_codes(mw: MFAMiddleware, clock: Clock) -> None:
    enroll_and_make_codes(mw, clock)
    clock.advance(60)
    browser = Browser(mw)
    assert browser.login("bob", PASSWORD, "/reports/x").headers["Location"] == "/reports/x"
    assert browser.get("/_mfa/backup-codes").status_code == 403


def test_the_last_code_warns(mw: MFAMiddleware, clock: Clock) -> None:
    browser, secret, codes = enroll_and_make_codes(mw, clock)
    for code in codes[:9]:
        clock.advance(60)
        assert sign_in_with_backup_code(mw, code)[1] == 303
    clock.advance(60)
    again = Browser(mw)
    again.login("bob", PASSWORD, "/hello")
    page = again.get("/_mfa/verify")
    assert again.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now),
                                       "csrf_token": csrf_of(page.text)}).status_code == 303
    offer = again.get("/_mfa/backup-codes")
    assert 'class="alert"' in offer.text and "<strong>1</strong> unused backup" in offer.text


def test_backup_codes_cannot_be_the_first_method(mw: MFAMiddleware, clock: Clock) -> None:
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/enroll")
    assert 'value="backup_codes"' not in page.text
    refused = browser.post("/_mfa/enroll", {"action": "start", "method": "backup_codes",
                                            "csrf_token": csrf_of(page.text)})
    assert refused.status_code == 400
    user = mw.runtime.store.get_user("bob")
    assert user is not None and mw.runtime.store.list_methods(user.id, confirmed_only=False) == []


def test_another_users_method_cannot_be_chosen_or_answered(mw: MFAMiddleware, clock: Clock) -> None:
    """The method id travels in a form and in the pending cookie: one of another user's methods is ignored when
    chosen, and an answer naming it is not checked against it."""
    _, _, bob_codes = enroll_and_make_codes(mw, clock)
    mw.runtime.accounts.add("carol", actor="test", password=PASSWORD)
    carol = Browser(mw)
    carol.login("carol", PASSWORD, "/hello")
    carol.enroll(clock)
    bob = mw.runtime.store.get_user("bob")
    assert bob is not None
    bob_backup = [m.id for m in mw.runtime.store.list_methods(bob.id) if m.kind == "backup_codes"][0]
    clock.advance(60)
    attacker = Browser(mw)
    attacker.login("carol", PASSWORD, "/hello")
    page = attacker.get("/_mfa/verify")
    token = csrf_of(page.text)
    chosen = attacker.post("/_mfa/verify", {"action": "use", "method_id": str(bob_backup), "csrf_token": token})
    assert chosen.headers["Location"] == "/_mfa/verify"
    pending = mw.runtime.codec.load_pending(attacker.cookie("mfa_session_pending"))
    assert pending is not None and pending.method_id is None
    answer = attacker.post("/_mfa/verify", {"code": bob_codes[0], "method_id": str(bob_backup),
                                            "csrf_token": token})
    assert answer.status_code == 303 and answer.headers["Location"] == "/_mfa/verify"
    assert attacker.cookie("mfa_session") is None
    assert mw.runtime.store.count_backup_codes(bob.id) == 10
