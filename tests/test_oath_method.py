"""A hardware token through the pages: the helpdesk imports the inventory, the user activates a token by serial
number and a current code at enrollment, then signs in with it; serials cannot be probed, an activated token
cannot be taken over, and an HOTP token that drifted is resynchronised with two codes."""

from __future__ import annotations

from collections.abc import Iterator

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.factors.oath.otp import decode_base32, hotp_code
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware

PASSWORD = "correct horse battery"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
HOTP_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # RFC 4226's "12345678901234567890"
INVENTORY = ("upn,serial number,secret key,time interval,manufacturer,model,type\r\n"
             f"bob,TK-1,{TOTP_SECRET},30,Acme,C200,totp\r\n"
             f",TK-2,{TOTP_SECRET},60,Acme,C200,totp\r\n"
             f"carol,TK-3,{TOTP_SECRET},30,Acme,C200,totp\r\n"
             f"bob,HK-1,{HOTP_SECRET},,Acme,H1,hotp\r\n")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    m = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "oath"]})
    m.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    m.runtime.accounts.add("carol", actor="test", password=PASSWORD)
    report = m.runtime.oath_tokens.import_file(INVENTORY, actor="helpdesk")
    assert len(report.imported) == 4, report.refused
    yield m
    m.runtime.close()


def start(mw: MFAMiddleware, user: str, serial: str) -> tuple[Browser, int, str]:
    browser = Browser(mw)
    browser.login(user, PASSWORD, "/hello")
    page = browser.get("/_mfa/enroll")
    assert 'value="oath"' in page.text and 'name="oath.serial"' in page.text
    response = browser.post("/_mfa/enroll", {"action": "start", "method": "oath", "serial": serial,
                                             "csrf_token": csrf_of(page.text)})
    return browser, response.status_code, response.text


def confirm(browser: Browser, code: str) -> int:
    page = browser.get("/_mfa/enroll")
    assert "Activate your hardware token" in page.text
    return browser.post("/_mfa/enroll", {"action": "confirm", "code": code, "csrf_token": csrf_of(page.text)}
                        ).status_code


def test_activate_an_assigned_token_and_sign_in(mw: MFAMiddleware, clock: Clock) -> None:
    browser, status, _ = start(mw, "bob", "TK-1")
    assert status == 303
    assert confirm(browser, pyotp.TOTP(TOTP_SECRET).at(clock.now)) == 303
    token = mw.runtime.store.get_oath_token("TK-1")
    assert token is not None and token.method_id is not None
    clock.advance(60)
    again = Browser(mw)
    assert again.login("bob", PASSWORD, "/hello").headers["Location"] == "/_mfa/verify"
    page = again.get("/_mfa/verify")
    assert "Hardware token TK-1" in page.text
    done = again.post("/_mfa/verify", {"code": pyotp.TOTP(TOTP_SECRET).at(clock.now),
                                       "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["Location"] == "/hello"


@pytest.mark.parametrize("serial", [
    pytest.param("TK-3", id="assigned-to-another-user"),
    pytest.param("NO-SUCH", id="unknown"),
    pytest.param("", id="empty"),
    pytest.param("TK-1\r\nX", id="control-characters"),
    pytest.param("x" * 500, id="huge"),
])
def test_serials_cannot_be_probed(mw: MFAMiddleware, serial: str) -> None:
    _, status, text = start(mw, "bob", serial)
    assert status == 400 and "No token with that serial number is available to you" in text


def test_an_activated_token_cannot_be_taken_over(mw: MFAMiddleware, clock: Clock) -> None:
    browser, _, _ = start(mw, "bob", "TK-2")  # unassigned: bob may activate it
    assert confirm(browser, pyotp.TOTP(TOTP_SECRET, interval=60).at(clock.now)) == 303
    _, status, text = start(mw, "carol", "TK-2")
    assert status == 400 and "No token with that serial number" in text


def test_hotp_token_resynchronises_with_two_codes(mw: MFAMiddleware, clock: Clock) -> None:
    key = decode_base32(HOTP_SECRET)
    browser, _, _ = start(mw, "bob", "HK-1")
    assert confirm(browser, hotp_code(key, 0)) == 303
    clock.advance(60)
    again = Browser(mw)
    again.login("bob", PASSWORD, "/hello")
    page = again.get("/_mfa/verify")
    assert 'name="next_code"' in page.text
    far = 40  # the token was pressed many times away from the site: beyond the look-ahead window
    refused = again.post("/_mfa/verify", {"code": hotp_code(key, far), "csrf_token": csrf_of(page.text)})
    assert refused.status_code == 401
    page = again.get("/_mfa/verify")
    done = again.post("/_mfa/verify", {"code": hotp_code(key, far + 1), "next_code": hotp_code(key, far + 2),
                                       "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["Location"] == "/hello"
