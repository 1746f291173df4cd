"""The email code through the pages, against a real SMTP server (aiosmtpd on 127.0.0.1): enroll an address by
proving it, sign in with a code, codes bound to the attempt, no resend on reload, "Send a new code" limited, and a
gateway that is down gives a clear page and the other methods, never a pass."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware
from tests.support.servers import free_port
from tests.support.smtp import SmtpServer, smtp_server

PASSWORD = "correct horse battery"
ADDRESS = "zofia.nowak@example.test"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


def middleware(sqlite_url: str, clock: Clock, port: int) -> MFAMiddleware:
    mw = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "email", "backup_codes"]},
                         email={"gateway": "smtp", "host": "127.0.0.1", "port": port, "security": "none",
                                "from_address": "mfa@example.test", "timeout": "2s"})
    mw.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    return mw


@pytest.fixture
def mw(sqlite_url: str, clock: Clock, smtp: SmtpServer) -> Iterator[MFAMiddleware]:
    m = middleware(sqlite_url, clock, smtp.port)
    yield m
    m.runtime.close()


def last_code(smtp: SmtpServer) -> str:
    message = smtp.recorder.messages()[-1].message
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(r"code is (\d{6})", body.get_content())
    assert match, body.get_content()
    return match.group(1)


def enroll_email(mw: MFAMiddleware, smtp: SmtpServer) -> Browser:
    browser = Browser(mw)
    assert browser.login("bob", PASSWORD, "/hello").headers["Location"] == "/_mfa/enroll"
    page = browser.get("/_mfa/enroll")
    assert 'value="email"' in page.text and 'name="email.address"' in page.text
    started = browser.post("/_mfa/enroll", {"action": "start", "method": "email", "address": ADDRESS,
                                            "csrf_token": csrf_of(page.text)})
    assert started.status_code == 303, started.text
    shown = browser.get("/_mfa/enroll")
    assert "Check your email" in shown.text and "z•••@example.test" in shown.text and ADDRESS not in shown.text
    assert len(smtp.recorder.messages()) == 1
    assert browser.get("/_mfa/enroll").status_code == 200 and len(smtp.recorder.messages()) == 1  # no resend
    done = browser.post("/_mfa/enroll", {"action": "confirm", "code": last_code(smtp),
                                         "csrf_token": csrf_of(shown.text)})
    assert done.status_code == 303 and done.headers["Location"].startswith("/_mfa/backup-codes"), done.text
    return browser


def test_enroll_an_address_then_sign_in_with_a_code(mw: MFAMiddleware, clock: Clock, smtp: SmtpServer) -> None:
    enroll_email(mw, smtp)
    message = smtp.recorder.messages()[0]
    assert message.rcpt_tos == (ADDRESS,)
    assert message.message.get_body(preferencelist=("html",)) is not None
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.state == "enforced"
    (method,) = mw.runtime.store.list_methods(user.id)
    assert method.kind == "email" and method.is_default and ADDRESS.encode() not in (method.detail or b"")

    clock.advance(60)
    browser = Browser(mw)
    assert browser.login("bob", PASSWORD, "/hello").headers["Location"] == "/_mfa/verify"
    page = browser.get("/_mfa/verify")
    assert "We sent a code to z•••@example.test" in page.text
    assert browser.get("/_mfa/verify").status_code == 200
    assert len(smtp.recorder.messages()) == 2  # one per attempt, not one per page load
    done = browser.post("/_mfa/verify", {"code": last_code(smtp), "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["Location"] == "/hello"


def test_a_code_works_only_in_its_own_attempt_and_once(mw: MFAMiddleware, clock: Clock, smtp: SmtpServer) -> None:
    enroll_email(mw, smtp)
    clock.advance(60)
    first = Browser(mw)
    first.login("bob", PASSWORD, "/hello")
    first_page = first.get("/_mfa/verify")
    code = last_code(smtp)
    second = Browser(mw)
    second.login("bob", PASSWORD, "/hello")
    second_page = second.get("/_mfa/verify")
    refused = second.post("/_mfa/verify", {"code": code, "csrf_token": csrf_of(second_page.text)})
    assert refused.status_code == 401, "a code of another sign-in attempt"
    assert first.post("/_mfa/verify", {"code": code, "csrf_token": csrf_of(first_page.text)}).status_code == 303


def test_codes_expire(mw: MFAMiddleware, clock: Clock, smtp: SmtpServer) -> None:
    enroll_email(mw, smtp)
    clock.advance(60)
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    clock.advance(10 * 60 + 1)
    response = browser.post("/_mfa/verify", {"code": last_code(smtp), "csrf_token": csrf_of(page.text)})
    assert response.status_code in (401, 303)
    assert response.status_code == 401 or "Sign-in expired" not in response.text
    assert browser.cookie("mfa_session") is None


def test_send_again_waits_and_keeps_the_failure_count(mw: MFAMiddleware, clock: Clock, smtp: SmtpServer) -> None:
    enroll_email(mw, smtp)
    clock.advance(60)
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    method_id = re.search(r'name="method_id" value="(\d+)"', page.text)
    assert method_id
    token = csrf_of(page.text)
    assert browser.post("/_mfa/verify", {"code": "000000", "csrf_token": token}).status_code == 401
    soon = browser.post("/_mfa/email/resend", {"method_id": method_id.group(1), "csrf_token": token})
    assert soon.status_code == 429 and "Wait" in soon.text
    clock.advance(31)
    again = browser.post("/_mfa/email/resend", {"method_id": method_id.group(1), "csrf_token": token})
    assert again.status_code == 200 and "We sent a new code" in again.text
    assert len(smtp.recorder.messages()) == 3
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.failed_count == 1


def test_hourly_cap_stops_sms_pumping_style_abuse(mw: MFAMiddleware, clock: Clock, smtp: SmtpServer) -> None:
    enroll_email(mw, smtp)
    sent = len(smtp.recorder.messages())
    statuses = []
    for _ in range(8):
        clock.advance(31)
        browser = Browser(mw)
        browser.login("bob", PASSWORD, "/hello")
        statuses.append(browser.get("/_mfa/verify").status_code)
    assert statuses.count(429) >= 1
    assert len(smtp.recorder.messages()) - sent <= 5  # per address per hour


def test_gateway_down_is_a_clear_page_never_a_pass(sqlite_url: str, clock: Clock) -> None:
    with smtp_server() as server:
        mw = middleware(sqlite_url, clock, server.port)
        try:
            browser = Browser(mw)
            browser.login("bob", PASSWORD, "/hello")
            page = browser.get("/_mfa/enroll")
            browser.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(page.text)})
            shown = browser.get("/_mfa/enroll")
            secret = re.search(r'<code id="secret" class="secret">([A-Z2-7 ]+)</code>', shown.text)
            assert secret
            browser.post("/_mfa/enroll", {"action": "confirm", "code": pyotp.TOTP(secret.group(1).replace(" ", ""))
                                          .at(clock.now), "csrf_token": csrf_of(shown.text)})
        finally:
            mw.runtime.close()
    mw = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "email"]},
                         email={"gateway": "smtp", "host": "127.0.0.1", "port": free_port(), "security": "none",
                                "from_address": "mfa@example.test", "timeout": "2s"})
    try:
        user = mw.runtime.store.get_user("bob")
        assert user is not None
        # bob also has an email method; the mail server is gone.
        mw.runtime.store.add_method(user.id, "email", "Email", None, now=clock.now, confirmed=True,
                                    detail=mw.runtime.box.encrypt(ADDRESS))
        email_id = [m.id for m in mw.runtime.store.list_methods(user.id) if m.kind == "email"][0]
        clock.advance(60)
        browser = Browser(mw)
        browser.login("bob", PASSWORD, "/hello")
        page = browser.get("/_mfa/verify")
        choose = browser.post("/_mfa/verify", {"action": "choose", "csrf_token": csrf_of(page.text)})
        browser.post("/_mfa/verify", {"action": "use", "method_id": str(email_id), "csrf_token": csrf_of(choose.text)})
        down = browser.get("/_mfa/verify")
        assert down.status_code == 503 and "send your code just now" in down.text
        assert 'href="/_mfa/verify?another=1"' in down.text
        other = browser.get("/_mfa/verify?another=1")
        assert other.status_code == 200 and "Sign in another way" in other.text
        assert browser.cookie("mfa_session") is None and browser.get("/hello").status_code == 302
    finally:
        mw.runtime.close()


def test_enroll_refuses_bad_addresses(mw: MFAMiddleware, smtp: SmtpServer) -> None:
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    for bad in ("", "not an address", "a@b", "a@example.test, b@example.test", "Ann <a@example.test>",
                "a@example.test\r\nBcc: x@example.test", "x" * 300 + "@example.test"):
        page = browser.get("/_mfa/enroll")
        response = browser.post("/_mfa/enroll", {"action": "start", "method": "email", "address": bad,
                                                 "csrf_token": csrf_of(page.text)})
        assert response.status_code == 400 and "Enter one email address" in response.text, bad
    assert smtp.recorder.messages() == []


def test_start_again_with_another_address(mw: MFAMiddleware, smtp: SmtpServer) -> None:
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/enroll")
    browser.post("/_mfa/enroll", {"action": "start", "method": "email", "address": "typo@example.test",
                                  "csrf_token": csrf_of(page.text)})
    shown = browser.get("/_mfa/enroll")
    assert "Use another address or method" in shown.text
    again = browser.post("/_mfa/enroll", {"action": "restart", "csrf_token": csrf_of(shown.text)})
    assert again.status_code == 303
    choice = browser.get("/_mfa/enroll")
    assert "How should we verify you?" in choice.text
    user = mw.runtime.store.get_user("bob")
    assert user is not None and mw.runtime.store.list_methods(user.id, confirmed_only=False) == []


def test_the_resend_route_checks_its_access_before_the_method_runs(mw: MFAMiddleware, clock: Clock,
                                                                   smtp: SmtpServer) -> None:
    """``/email/resend`` is the method's own route: the pages check the sign-in, the CSRF token and the method in
    use before the method sees the request; every refusal sends nothing."""
    enroll_email(mw, smtp)
    clock.advance(60)
    sent = len(smtp.recorder.messages())
    # No sign-in at all: nothing to resend.
    stranger = Browser(mw)
    assert stranger.post("/_mfa/email/resend", {"method_id": "1", "csrf_token": "x"}).status_code == 401  # ended
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    sent += 1  # the attempt's first code
    method_id = re.search(r'name="method_id" value="(\d+)"', page.text)
    assert method_id
    clock.advance(31)
    # A token from another browser's attempt, or none: refused.
    other = Browser(mw)
    other.login("bob", PASSWORD, "/hello")
    other_token = csrf_of(other.get("/_mfa/verify").text)
    sent += 1
    assert browser.post("/_mfa/email/resend", {"method_id": method_id.group(1),
                                               "csrf_token": other_token}).status_code == 403
    assert browser.post("/_mfa/email/resend", {"method_id": method_id.group(1)}).status_code == 403
    # A method id that is not this attempt's: back to the verify page, nothing sent.
    wrong = browser.post("/_mfa/email/resend", {"method_id": "999999", "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 303 and wrong.headers["Location"] == "/_mfa/verify"
    # GET is not a resend.
    assert browser.get("/_mfa/email/resend").status_code == 405
    assert len(smtp.recorder.messages()) == sent


@pytest.mark.parametrize(("table", "message"), [
    pytest.param({"code_ttl": "5s"}, r"methods\.email\.code_ttl: must be between 1m and 1h", id="ttl-short"),
    pytest.param({"code_ttl": "2h"}, r"methods\.email\.code_ttl: must be between 1m and 1h", id="ttl-long"),
    pytest.param({"resend_after": "1s"}, r"methods\.email\.resend_after", id="resend-short"),
    pytest.param({"per_user_per_hour": 0}, r"methods\.email\.per_user_per_hour", id="cap-zero"),
    pytest.param({"per_address_per_hour": "5"}, r"methods\.email\.per_address_per_hour", id="cap-string"),
    pytest.param({"colour": "red"}, r"methods\.email\.colour: unknown key", id="unknown-key"),
])
def test_email_limits_config_errors_name_the_key(table: dict[str, object], message: str) -> None:
    from mfa_middleware import ConfigError
    from tests.support.mfa import make_config

    with pytest.raises(ConfigError, match=message):
        make_config("sqlite://", methods={"enabled": ["totp"], "email": table})


def test_email_limits_come_from_the_config(sqlite_url: str, clock: Clock, smtp: SmtpServer) -> None:
    """``[methods.email]``: a shorter code lifetime and resend wait reach the method."""
    mw = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "email"],
                                                     "email": {"code_ttl": "2m", "resend_after": "15s",
                                                               "per_user_per_hour": 3}},
                         email={"gateway": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "none",
                                "from_address": "mfa@example.test", "timeout": "2s"})
    from mfa_middleware.factors.email import EmailCodeFactor

    factor = mw.runtime.factors.get("email")
    assert isinstance(factor, EmailCodeFactor)
    settings = factor.settings
    assert (settings.code_ttl, settings.resend_after, settings.per_user_per_hour, settings.per_address_per_hour) == (
        120, 15, 3, 5)
    mw.runtime.close()
