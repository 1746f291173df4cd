"""The phone-call method through the pages, served on a real socket, against a local server that speaks the
provider's Calls API and calls back as the provider's voice platform does (it fetches our call script, presses
keys on its ``<Gather>``, posts the digits and the final status with ``X-Twilio-Signature``): a call answered
``#`` signs in, ``0#`` reports fraud and blocks the user, and unsigned, forged, replayed or stale callbacks
change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mfa_middleware import MFAMiddleware
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware
from tests.support.servers import serve_wsgi
from tests.support.twilio_provider import SignatureKind, TwilioProvider, twilio_provider

PASSWORD = "correct horse battery"
OFFICE = "+44 20 7946 0958"
OFFICE_E164 = "+442079460958"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> Iterator[TwilioProvider]:
    with twilio_provider() as server:
        yield server


@pytest.fixture
def served() -> Iterator[tuple[dict[str, Any], str]]:
    """A real server whose app is set once the middleware exists: its address is the configured public_url."""
    holder: dict[str, Any] = {}
    with serve_wsgi(lambda environ, start: holder["app"](environ, start), host="localhost") as url:
        yield holder, url


def phone_table(provider: TwilioProvider, public_url: str, **extra: object) -> dict[str, object]:
    return {"gateway": "twilio", "account_sid": provider.account_sid, "auth_token": provider.auth_token,
            "from_number": "+15005550006", "base_url": provider.base_url, "allowed_countries": ["GB"],
            "timeout": "3s", "public_url": public_url, **extra}


@pytest.fixture
def mw(sqlite_url: str, clock: Clock, provider: TwilioProvider,
       served: tuple[dict[str, Any], str]) -> Iterator[MFAMiddleware]:
    holder, url = served
    m = make_middleware(sqlite_url, clock, methods={"enabled": ["voice", "totp"]}, phone=phone_table(provider, url))
    m.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    holder["app"] = m
    yield m
    m.runtime.close()


@pytest.fixture
def base(mw: MFAMiddleware, served: tuple[dict[str, Any], str]) -> str:
    return served[1]


def last_call(provider: TwilioProvider) -> str:
    assert provider.calls, "no call was placed"
    return list(provider.calls)[-1]


def enroll_by_call(mw: MFAMiddleware, provider: TwilioProvider, base: str, extension: str = "") -> None:
    browser = Browser(mw, base=base)
    assert browser.login("bob", PASSWORD, "/hello").headers["Location"] == "/_mfa/enroll"
    page = browser.get("/_mfa/enroll")
    started = browser.post("/_mfa/enroll", {"action": "start", "method": "voice", "phone": OFFICE,
                                            "extension": extension, "csrf_token": csrf_of(page.text)})
    assert started.status_code == 303, started.text
    page = browser.get("/_mfa/enroll")
    assert "+44 •• •••• 0958" in page.text and "7946" not in page.text
    sid = last_call(provider)
    form = provider.calls[sid].form
    assert form["To"] == OFFICE_E164 and form["Url"].startswith(base + "/_mfa/voice/script/")
    assert form.get("SendDigits") == ("ww" + extension if extension else None)
    script, action = provider.answer(sid, "#")
    assert script.status == 200 and "press the pound key" in script.body
    assert action is not None and action.status == 200 and "approved" in action.body
    done = browser.post("/_mfa/enroll", {"action": "confirm", "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303, done.text


def start_sign_in(mw: MFAMiddleware, base: str) -> tuple[Browser, str]:
    browser = Browser(mw, base=base)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    assert page.status_code == 200, page.text
    assert "calling +44 •• •••• 0958" in page.text and "I answered the call" in page.text
    assert "/_mfa/static/poll.js" in page.text
    return browser, csrf_of(page.text)


def poll(browser: Browser) -> str:
    reply = browser.get("/_mfa/voice/status.json")
    assert reply.status_code == 200
    status: str = json.loads(reply.text)["status"]
    return status


def test_a_call_answered_with_pound_signs_in_once(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider,
                                                   base: str) -> None:
    enroll_by_call(mw, provider, base, extension="123")
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    assert len(provider.calls) == 2
    assert browser.get("/_mfa/verify").status_code == 200 and len(provider.calls) == 2  # a reload calls nobody
    assert poll(browser) == "pending"
    waiting = browser.post("/_mfa/verify", {"csrf_token": token})
    assert waiting.status_code == 200 and "had your answer yet" in waiting.text
    provider.answer(last_call(provider), "#")
    assert poll(browser) == "approved" and poll(browser) == "approved"  # polling has no side effects
    done = browser.post("/_mfa/verify", {"csrf_token": token})
    assert done.status_code == 303 and done.headers["Location"] == "/hello"
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.failed_count == 0


def test_zero_pound_reports_fraud_and_blocks_the_user(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider,
                                                      base: str) -> None:
    enroll_by_call(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    _script, action = provider.answer(last_call(provider), "0#")
    assert action is not None and action.status == 200 and "blocked" in action.body
    ended = browser.post("/_mfa/verify", {"csrf_token": token})
    assert ended.status_code in (401, 403)  # the block ended the attempt (a user-wide revocation)
    assert browser.cookie("mfa_session") is None
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.blocked(clock())
    clock.advance(60)
    again = Browser(mw, base=base)
    blocked = again.login("bob", PASSWORD, "/hello")
    assert blocked.status_code == 403 and "blocked" in blocked.text
    assert len(provider.calls) == 2  # a blocked user is not called


@pytest.mark.parametrize("signature", [
    pytest.param("none", id="unsigned"),
    pytest.param("bad", id="forged"),
    pytest.param("stale_url", id="signed-for-another-url"),
])
def test_unsigned_or_forged_answers_change_nothing(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider,
                                                   base: str, signature: SignatureKind) -> None:
    enroll_by_call(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    _script, action = provider.answer(last_call(provider), "#", signature=signature)
    assert action is not None and action.status == 403
    assert provider.finish(last_call(provider), "no-answer", signature=signature).status == 403
    assert poll(browser) == "pending"
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 200
    assert browser.cookie("mfa_session") is None


def test_a_replayed_answer_changes_nothing(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider,
                                           base: str) -> None:
    enroll_by_call(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    sid = last_call(provider)
    provider.answer(sid, "9#")  # a wrong key: the call fails
    assert poll(browser) == "failed"
    provider.calls[sid].last_action = (provider.calls[sid].last_action[0],  # type: ignore[index]
                                       {**provider.calls[sid].last_action[1], "Digits": ""}, {})  # type: ignore[index]
    replay = provider.replay(sid)  # validly signed, but the call was answered already
    assert replay.status == 200 and "already been answered" in replay.body
    assert poll(browser) == "failed"
    failed = browser.post("/_mfa/verify", {"csrf_token": token})
    assert failed.status_code == 401 and "not answered or not approved" in failed.text
    assert browser.cookie("mfa_session") is None


def test_an_answer_after_expiry_changes_nothing(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider,
                                                base: str) -> None:
    enroll_by_call(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    clock.advance(30 + 121)  # the ring time plus the grace to answer
    script, action = provider.answer(last_call(provider), "#")
    assert action is None and "expired" in script.body  # the script itself says goodbye
    assert poll(browser) == "failed"
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 401
    assert browser.cookie("mfa_session") is None


def test_no_answer_fails_the_attempt(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider, base: str) -> None:
    enroll_by_call(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    assert provider.finish(last_call(provider), "no-answer").status == 204
    assert poll(browser) == "failed"
    failed = browser.post("/_mfa/verify", {"csrf_token": token})
    assert failed.status_code == 401 and "not answered or not approved" in failed.text
    assert browser.cookie("mfa_session") is None
    assert provider.answer(last_call(provider), "#")[0].body.count("expired") == 1  # too late now
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.failed_count == 1


def test_the_mobile_call_is_a_method_of_its_own(sqlite_url: str, clock: Clock, provider: TwilioProvider,
                                                served: tuple[dict[str, Any], str]) -> None:
    """Mobile phone (text or call) and office phone (call, with an extension) are separate methods: the mobile
    call takes mobile numbers only, has no extension, and answers on routes of its own kind."""
    holder, base = served
    mw = make_middleware(sqlite_url, clock, methods={"enabled": ["sms", "mobile_voice", "voice", "totp"]},
                         phone=phone_table(provider, base))
    holder["app"] = mw
    mw.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    browser = Browser(mw, base=base)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/enroll")
    assert "Mobile phone call" in page.text and "Office phone call" in page.text
    assert 'name="mobile_voice.extension"' not in page.text and 'name="voice.extension"' in page.text
    landline = browser.post("/_mfa/enroll", {"action": "start", "method": "mobile_voice", "mobile_voice.phone": OFFICE,
                                             "csrf_token": csrf_of(page.text)})
    assert landline.status_code == 400 and "landline" in landline.text and not provider.calls
    started = browser.post("/_mfa/enroll", {"action": "start", "method": "mobile_voice",
                                            "mobile_voice.phone": "+44 7400 123456", "csrf_token": csrf_of(page.text)})
    assert started.status_code == 303, started.text
    sid = last_call(provider)
    assert provider.calls[sid].form["Url"].startswith(base + "/_mfa/mobile_voice/script/")
    assert provider.calls[sid].form.get("SendDigits") is None
    script, action = provider.answer(sid, "#")
    assert action is not None and action.status == 200 and "approved" in action.body
    page = browser.get("/_mfa/enroll")
    done = browser.post("/_mfa/enroll", {"action": "confirm", "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303, done.text
    user = mw.runtime.store.get_user("bob")
    assert user is not None and [m.kind for m in mw.runtime.store.list_methods(user.id)] == ["mobile_voice"]
    mw.runtime.close()


def test_silence_posted_as_an_empty_answer_never_approves(mw: MFAMiddleware, clock: Clock, provider: TwilioProvider,
                                                          base: str) -> None:
    """A provider that posts the gather's action on an empty result (no key pressed, not even #) sends
    ``Digits=""`` with ``FinishedOnKey=""``: that is silence, never an approval; the attempt fails."""
    import xml.etree.ElementTree as ET
    from urllib.parse import urljoin

    enroll_by_call(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    sid = last_call(provider)
    script, action = provider.answer(sid, "")  # silence: the provider itself posts nothing
    assert action is None and script.status == 200
    gather = ET.fromstring(script.body).find("Gather")
    assert gather is not None
    url = urljoin(provider.calls[sid].form["Url"], gather.get("action") or "")
    params = {"CallSid": sid, "AccountSid": provider.account_sid, "From": "+15005550006", "To": OFFICE_E164,
              "CallStatus": "in-progress", "Direction": "outbound-api", "Digits": "", "FinishedOnKey": ""}
    reply = provider.post_signed(url, params)
    assert reply.status == 200 and "approved" not in reply.body
    assert poll(browser) == "failed"
    ended = browser.post("/_mfa/verify", {"csrf_token": token})
    assert ended.status_code == 401 and browser.cookie("mfa_session") is None
