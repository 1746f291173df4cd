"""The text-message code through the pages, against a local server that speaks the provider's Messages API as the
provider does (HTTP Basic with the account's credentials, form fields, E.164 numbers): enroll a mobile number by
proving it, sign in with a texted code, numbers refused with clear words, the caps against SMS pumping, and a
provider that is down gives a clear page and the other methods, never a pass."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from werkzeug.test import TestResponse

from mfa_middleware import ConfigError, MFAMiddleware
from tests.support.mfa import Browser, Clock, csrf_of, make_config, make_middleware
from tests.support.twilio_provider import TwilioProvider, twilio_provider

PASSWORD = "correct horse battery"
MOBILE = "+44 7400 123456"
MOBILE_E164 = "+447400123456"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> Iterator[TwilioProvider]:
    with twilio_provider() as server:
        yield server


def phone_table(provider: TwilioProvider, **extra: object) -> dict[str, object]:
    return {"gateway": "twilio", "account_sid": provider.account_sid, "auth_token": provider.auth_token,
            "from_number": "+15005550006", "base_url": provider.base_url, "allowed_countries": ["GB", "US"],
            "timeout": "3s", **extra}


@pytest.fixture
def mw(sqlite_url: str, clock: Clock, provider: TwilioProvider) -> Iterator[MFAMiddleware]:
    m = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "sms", "backup_codes"]},
                        phone=phone_table(provider))
    m.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    yield m
    m.runtime.close()


def last_code(provider: TwilioProvider) -> str:
    match = re.search(r"^(\d{6}) is your", provider.messages[-1]["Body"])
    assert match, provider.messages[-1]
    return match.group(1)


def start_enrollment(mw: MFAMiddleware, number: str) -> tuple[Browser, TestResponse]:
    browser = Browser(mw)
    assert browser.login("bob", PASSWORD, "/hello").headers["Location"] == "/_mfa/enroll"
    page = browser.get("/_mfa/enroll")
    started = browser.post("/_mfa/enroll", {"action": "start", "method": "sms", "phone": number,
                                            "csrf_token": csrf_of(page.text)})
    return browser, started


def enroll_sms(mw: MFAMiddleware, provider: TwilioProvider) -> Browser:
    browser, started = start_enrollment(mw, MOBILE)
    assert started.status_code == 303
    page = browser.get("/_mfa/enroll")
    assert "+44 •••• ••3456" in page.text and "7400" not in page.text  # masked everywhere but at entry
    done = browser.post("/_mfa/enroll", {"action": "confirm", "code": last_code(provider),
                                         "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303
    return browser


def test_enroll_and_sign_in_by_text(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider) -> None:
    enroll_sms(mw, provider)
    assert len(provider.messages) == 1
    sent = provider.messages[0]
    assert sent["To"] == MOBILE_E164 and sent["From"] == "+15005550006"
    clock.advance(60)
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    assert "We texted a code to +44 •••• ••3456" in page.text
    assert browser.get("/_mfa/verify").status_code == 200 and len(provider.messages) == 2  # a reload sends nothing
    done = browser.post("/_mfa/verify", {"code": last_code(provider), "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["Location"] == "/hello"
    # The code worked once: another browser's attempt cannot use it.
    clock.advance(60)
    other = Browser(mw)
    other.login("bob", PASSWORD, "/hello")
    code = re.search(r"^(\d{6})", provider.messages[-2]["Body"])
    assert code
    assert other.verify(code.group(1)).status_code == 401
    # Audit rows name the masked number, never the code or the full number.
    rows = [r for r in mw.runtime.store.list_audit(limit=100) if r.event == "phone"]
    assert rows and all(MOBILE_E164 not in (r.detail or "") for r in rows)
    assert all(m["Body"][:6] not in (r.detail or "") for r in rows for m in provider.messages)


@pytest.mark.parametrize(("number", "message"), [
    pytest.param("+44 20 7946 0958", "landline", id="landline"),
    pytest.param("+33 6 12 34 56 78", "France", id="country-not-allowed"),
    pytest.param("call me maybe", "", id="letters"),
    pytest.param("", "Enter a phone number", id="empty"),
    pytest.param("1" * 30, "too long", id="thirty-digits"),
    pytest.param("999", "", id="emergency"),
])
def test_unusable_numbers_are_refused_with_words_and_nothing_is_sent(mw: MFAMiddleware, provider: TwilioProvider,
                                                                     number: str, message: str) -> None:
    _browser, started = start_enrollment(mw, number)
    assert started.status_code == 400
    assert message in started.text
    assert provider.messages == []


def test_resend_waits_30_seconds_and_keeps_the_failure_count(mw: MFAMiddleware, clock: Clock,
                                                             provider: TwilioProvider) -> None:
    enroll_sms(mw, provider)
    clock.advance(60)
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    method_id = re.search(r'name="method_id" value="(\d+)"', page.text)
    assert method_id
    token = csrf_of(page.text)
    assert browser.post("/_mfa/verify", {"code": "000000", "csrf_token": token}).status_code == 401
    soon = browser.post("/_mfa/sms/resend", {"method_id": method_id.group(1), "csrf_token": token})
    assert soon.status_code == 429 and "seconds" in soon.text
    clock.advance(31)
    again = browser.post("/_mfa/sms/resend", {"method_id": method_id.group(1), "csrf_token": token})
    assert again.status_code == 200 and "We sent a new code" in again.text
    assert len(provider.messages) == 3
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.failed_count == 1


def test_the_sixth_text_in_an_hour_is_refused(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider) -> None:
    enroll_sms(mw, provider)  # text 1
    for _ in range(4):  # texts 2-5, one per sign-in attempt
        clock.advance(40)
        browser = Browser(mw)
        browser.login("bob", PASSWORD, "/hello")
        assert browser.get("/_mfa/verify").status_code == 200
    assert len(provider.messages) == 5
    clock.advance(40)
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    refused = browser.get("/_mfa/verify")
    assert refused.status_code == 429 and "Too many" in refused.text
    assert len(provider.messages) == 5
    assert browser.cookie("mfa_session") is None


@pytest.mark.parametrize("mode", ["500", "400"])
def test_provider_trouble_is_a_clear_page_never_a_pass(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider,
                                                       mode: str) -> None:
    enroll_sms(mw, provider)
    clock.advance(60)
    provider.mode = mode  # type: ignore[assignment]
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    assert page.status_code == 503 and "send your code just now" in page.text
    assert browser.cookie("mfa_session") is None
    assert browser.get("/hello").status_code == 302


def test_wrong_provider_credentials_send_nothing(sqlite_url: str, clock: Clock, provider: TwilioProvider) -> None:
    mw = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "sms"]},
                         phone=phone_table(provider, auth_token="not-the-token-0123456789"))
    mw.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    _browser, started = start_enrollment(mw, MOBILE)
    assert started.status_code == 503
    assert provider.messages == []
    mw.runtime.close()


@pytest.mark.parametrize(("overrides", "message"), [
    pytest.param({"methods": {"enabled": ["totp", "sms"]}}, r"a \[phone\] table", id="sms-without-phone"),
    pytest.param({"methods": {"enabled": ["totp"], "sms": {"code_ttl": "1h"}}}, r"methods\.sms\.code_ttl",
                 id="ttl-too-long"),
    pytest.param({"methods": {"enabled": ["totp"], "sms": {"per_user_per_hour": 30, "per_user_per_day": 20}}},
                 r"methods\.sms\.per_user_per_hour", id="hour-above-day"),
    pytest.param({"methods": {"enabled": ["totp"], "sms": {"colour": "red"}}}, r"methods\.sms\.colour",
                 id="unknown-key"),
    pytest.param({"fraud": {"notify_emails": ["soc@example.test"]}}, r"fraud\.notify_emails", id="notify-no-email"),
])
def test_phone_config_errors_name_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("sqlite://", **overrides)


def test_two_methods_asking_for_a_phone_keep_their_own_inputs(sqlite_url: str, clock: Clock) -> None:
    """The choice page lists every method's fields in one form: each input is named ``<kind>.<field>``, so the
    number typed for the phone call is not lost behind the text message's empty field of the same name."""
    mw = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "sms", "voice"]},
                         phone={"gateway": "console", "allowed_countries": ["GB"]})
    mw.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    browser = Browser(mw)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/enroll")
    assert 'name="sms.phone"' in page.text and 'name="voice.phone"' in page.text
    started = browser.post("/_mfa/enroll", {"action": "start", "method": "voice", "sms.phone": "",
                                            "voice.phone": "+44 20 7946 0958", "csrf_token": csrf_of(page.text)})
    assert started.status_code == 303, started.text
    assert "+44 •• •••• 0958" in browser.get("/_mfa/enroll").text
    mw.runtime.close()
