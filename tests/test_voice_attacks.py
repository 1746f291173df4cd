"""The attacker's tests of the phone-call method.

- The call store methods on SQLite and PostgreSQL: a call's status moves once from ``pending`` (and never after
  it expired), twenty concurrent settles have one winner, twenty concurrent checks of an approved call accept it
  once.
- Through a real socket, against the local server that speaks the provider's API (``tests/support/
  twilio_provider.py``) and the local webhook receiver (``tests/support/webhook_receiver.py``): twenty concurrent
  answers approve once; a spoofed Host or ``X-Forwarded-Host`` never decides the call's URLs nor what the
  provider's signature must cover; the webhook gateway's answers are believed only when signed, fresh and first;
  PIN mode; reporting switched off; status callbacks; huge and malformed input on every route; the poll route
  without a sign-in.
"""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pyotp
import pytest
from sqlalchemy import select

from mfa_middleware import MFAMiddleware
from mfa_middleware.factors import FactorContext, Outcome
from mfa_middleware.factors.voice import PhoneCallFactor
from mfa_middleware.runtime import Runtime
from mfa_middleware.services.lockout import Client
from mfa_middleware.store import MethodRecord, UserRecord
from mfa_middleware.store.schema import calls
from tests.support.mfa import FAST_HASHER, START, Browser, Clock, csrf_of, make_config, make_middleware
from tests.support.servers import serve_wsgi
from tests.support.twilio_provider import TwilioProvider, reference_signature, twilio_provider
from tests.support.webhook_receiver import WebhookReceiver, reference_sign, webhook_receiver

PASSWORD = "correct horse battery"
OFFICE = "+44 20 7946 0958"
WEBHOOK_SECRET = "s" * 40
CLIENT = Client("192.0.2.10", "voice-attacks")
RACE = 20


# -- the store's call methods, on SQLite and PostgreSQL ---------------------------------------------------------------
@pytest.fixture
def world(database_url: str) -> Iterator[tuple[Runtime, Clock, UserRecord, MethodRecord]]:
    """A runtime with the phone-call method (console gateway) and bob's confirmed phone-call method."""
    clock = Clock(START)
    rt = Runtime(make_config(database_url, methods={"enabled": ["voice", "totp"]},
                             phone={"gateway": "console", "allowed_countries": ["GB"]}),
                 clock=clock, password_hasher=FAST_HASHER)
    rt.store.upgrade()
    user = rt.accounts.add("bob", actor="test", password=PASSWORD)
    detail = rt.box.encrypt(json.dumps({"e164": "+442079460958", "extension": None}))
    method_id = rt.store.add_method(user.id, "voice", "Phone", None, now=clock.now, confirmed=True, detail=detail)
    method = rt.store.get_method(method_id)
    assert method is not None
    yield rt, clock, user, method
    rt.close()


def new_call(rt: Runtime, clock: Clock, user: UserRecord, method: MethodRecord, attempt: str = "a1",
             token: str = "t1", ttl: float = 150) -> int:
    return rt.store.add_call(user.id, method.id, attempt, token, now=clock.now, expires_at=clock.now + ttl)


def race(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads released together; the results in thread order."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_call_settles_once_and_is_used_once(world: tuple[Runtime, Clock, UserRecord, MethodRecord]) -> None:
    rt, clock, user, method = world
    first = new_call(rt, clock, user, method, token="t1")
    newest = new_call(rt, clock, user, method, token="t2")
    found = rt.store.call_of_attempt(method.id, "a1")
    assert found is not None and found.id == newest  # the newest call of the attempt
    assert rt.store.call_of_attempt(method.id, "another") is None
    assert rt.store.call_by_token("t1") is not None and rt.store.call_by_token("t1").id == first  # type: ignore[union-attr]
    assert rt.store.call_by_token("unknown") is None
    assert rt.store.settle_call(first, "approved", now=clock.now)
    for status in ("approved", "fraud", "failed"):
        assert not rt.store.settle_call(first, status, now=clock.now)
    call = rt.store.call_by_token("t1")
    assert call is not None and call.status == "approved" and call.answered_at == clock.now
    assert rt.store.use_call(first) and not rt.store.use_call(first)
    assert not rt.store.settle_call(first, "failed", now=clock.now)
    assert rt.store.call_by_token("t1").status == "used"  # type: ignore[union-attr]
    assert not rt.store.use_call(newest)  # a pending call is not an approval
    with pytest.raises(ValueError):
        rt.store.settle_call(newest, "used", now=clock.now)
    with pytest.raises(ValueError):
        rt.store.settle_call(newest, "pending", now=clock.now)


@pytest.mark.parametrize("late", [pytest.param(0, id="at-expiry"), pytest.param(1, id="after-expiry")])
def test_a_settle_after_expiry_changes_nothing(world: tuple[Runtime, Clock, UserRecord, MethodRecord],
                                               late: float) -> None:
    rt, clock, user, method = world
    call_id = new_call(rt, clock, user, method, ttl=150)
    for status in ("approved", "fraud", "failed"):
        assert not rt.store.settle_call(call_id, status, now=clock.now + 150 + late)
    call = rt.store.call_by_token("t1")
    assert call is not None and call.status == "pending" and call.answered_at is None
    factor = rt.factors.get("voice")
    assert isinstance(factor, PhoneCallFactor)
    clock.advance(150 + late)
    assert factor.status_of(call, clock.now) == "failed"
    ctx = rt.signin.context(CLIENT, clock.now, "a1")
    assert factor.verify(user, method, {}, ctx).outcome is Outcome.REJECTED


def test_twenty_concurrent_settles_have_one_winner(world: tuple[Runtime, Clock, UserRecord, MethodRecord]) -> None:
    rt, clock, user, method = world
    call_id = new_call(rt, clock, user, method)
    statuses = [("approved", "fraud", "failed")[i % 3] for i in range(RACE)]
    won = race(RACE, lambda i: rt.store.settle_call(call_id, statuses[i], now=clock.now))
    assert won.count(True) == 1
    call = rt.store.call_by_token("t1")
    assert call is not None and call.status == statuses[won.index(True)]


def test_twenty_concurrent_checks_of_an_approved_call_accept_once(
        world: tuple[Runtime, Clock, UserRecord, MethodRecord]) -> None:
    rt, clock, user, method = world
    call_id = new_call(rt, clock, user, method)
    assert rt.store.settle_call(call_id, "approved", now=clock.now)
    factor = rt.factors.get("voice")
    assert factor is not None
    outcomes = race(RACE, lambda i: factor.verify(user, method, {}, FactorContext(
        now=clock.now, client_ip=f"192.0.2.{i + 20}", user_agent="race", attempt_id="a1")).outcome)
    assert outcomes.count(Outcome.ACCEPTED) == 1
    assert outcomes.count(Outcome.REPLAYED) == RACE - 1
    assert rt.store.call_by_token("t1").status == "used"  # type: ignore[union-attr]
    # Through the sign-in service too: the approval is gone, nothing else accepts.
    assert not rt.signin.verify(user, {}, CLIENT, clock.now, method_id=method.id, attempt_id="a1").accepted


# -- through the pages, served on a real socket -----------------------------------------------------------------------
@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> Iterator[TwilioProvider]:
    with twilio_provider() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver(WEBHOOK_SECRET.encode()) as server:
        yield server


@pytest.fixture
def served() -> Iterator[tuple[dict[str, Any], str]]:
    """A real server whose app is set once the middleware exists: its address is the configured public_url."""
    holder: dict[str, Any] = {}
    with serve_wsgi(lambda environ, start: holder["app"](environ, start), host="localhost") as url:
        yield holder, url


def twilio_table(provider: TwilioProvider, public_url: str) -> dict[str, object]:
    return {"gateway": "twilio", "account_sid": provider.account_sid, "auth_token": provider.auth_token,
            "from_number": "+15005550006", "base_url": provider.base_url, "allowed_countries": ["GB"],
            "timeout": "3s", "public_url": public_url}


Build = Callable[..., MFAMiddleware]


@pytest.fixture
def build(sqlite_url: str, clock: Clock, provider: TwilioProvider,
          served: tuple[dict[str, Any], str]) -> Iterator[Build]:
    """Make the middleware once per test (overrides as for ``make_config``; the Twilio-compatible gateway at the
    served address unless ``phone`` says otherwise), with bob, and serve it."""
    holder, url = served
    made: list[MFAMiddleware] = []

    def make(**overrides: Any) -> MFAMiddleware:
        overrides.setdefault("methods", {"enabled": ["voice", "totp"]})
        overrides.setdefault("phone", twilio_table(provider, url))
        m = make_middleware(sqlite_url, clock, **overrides)
        m.runtime.accounts.add("bob", actor="test", password=PASSWORD)
        holder["app"] = m
        made.append(m)
        return m

    yield make
    for m in made:
        m.runtime.close()


@pytest.fixture
def base(served: tuple[dict[str, Any], str]) -> str:
    return served[1]


def last_call(provider: TwilioProvider) -> str:
    assert provider.calls, "no call was placed"
    return list(provider.calls)[-1]


def start_enrollment(mw: MFAMiddleware, base: str, **fields: str) -> tuple[Browser, Any]:
    browser = Browser(mw, base=base)
    assert browser.login("bob", PASSWORD, "/hello").headers["Location"] == "/_mfa/enroll"
    page = browser.get("/_mfa/enroll")
    started = browser.post("/_mfa/enroll", {"action": "start", "method": "voice", "phone": OFFICE,
                                            "csrf_token": csrf_of(page.text), **fields})
    return browser, started


def confirm_enrollment(browser: Browser) -> None:
    page = browser.get("/_mfa/enroll")
    done = browser.post("/_mfa/enroll", {"action": "confirm", "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303, done.text


def enroll(mw: MFAMiddleware, provider: TwilioProvider, base: str, keys: str = "#", **fields: str) -> None:
    browser, started = start_enrollment(mw, base, **fields)
    assert started.status_code == 303, started.text
    _script, action = provider.answer(last_call(provider), keys)
    assert action is not None and "approved" in action.body, action
    confirm_enrollment(browser)


def add_totp(mw: MFAMiddleware, clock: Clock) -> None:
    """Bob's second method, an authenticator app (as from the account page, with a fresh second factor)."""
    rt = mw.runtime
    user = rt.store.get_user("bob")
    assert user is not None
    view = rt.signin.enroll_begin(user, "totp", CLIENT, clock.now, first_method_only=False)
    code = pyotp.TOTP(view.fields["secret"].replace(" ", "")).at(clock.now)
    assert rt.signin.enroll_finish(user, view.method_id, {"code": code}, CLIENT, clock.now,
                                   first_method_only=False).accepted


def start_sign_in(mw: MFAMiddleware, base: str) -> tuple[Browser, str]:
    browser = Browser(mw, base=base)
    browser.login("bob", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    assert page.status_code == 200 and "calling +44" in page.text, page.text
    return browser, csrf_of(page.text)


def poll(browser: Browser) -> str:
    reply = browser.get("/_mfa/voice/status.json")
    assert reply.status_code == 200, reply.text
    status: str = json.loads(reply.text)["status"]
    return status


def call_statuses(mw: MFAMiddleware) -> list[str]:
    """The status of each of bob's calls, oldest first, straight from the store."""
    user = mw.runtime.store.get_user("bob")
    assert user is not None
    with mw.runtime.store.engine.connect() as c:
        return [row.status for row in c.execute(select(calls).where(calls.c.user_id == user.id)
                                                   .order_by(calls.c.id))]


def gather_action(script_body: str) -> str:
    gather = ET.fromstring(script_body).find("Gather")
    assert gather is not None, script_body
    action = gather.get("action")
    assert action is not None
    return action


def call_params(provider: TwilioProvider, sid: str, **extra: str) -> dict[str, str]:
    form = provider.calls[sid].form
    return {"CallSid": sid, "AccountSid": provider.account_sid, "From": form["From"], "To": form["To"],
            "CallStatus": "in-progress", "Direction": "outbound-api", "ApiVersion": "2010-04-01", **extra}


# -- twenty answers at once -------------------------------------------------------------------------------------------
def test_twenty_concurrent_answers_approve_once(build: Build, clock: Clock, provider: TwilioProvider,
                                                base: str) -> None:
    mw = build()
    enroll(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    sid = last_call(provider)
    script = provider.post_signed(provider.calls[sid].form["Url"], call_params(provider, sid))
    action = gather_action(script.body)
    answer = call_params(provider, sid, Digits="", FinishedOnKey="#")
    replies = race(RACE, lambda i: provider.post_signed(action, answer))
    bodies = [r.body for r in replies]  # type: ignore[attr-defined]
    assert all(r.status == 200 for r in replies)  # type: ignore[attr-defined]
    assert sum("approved" in b and "not approved" not in b for b in bodies) == 1, bodies
    assert sum("already been answered" in b for b in bodies) == RACE - 1, bodies
    assert call_statuses(mw)[-1] == "approved"
    done = browser.post("/_mfa/verify", {"csrf_token": token})
    assert done.status_code == 303 and done.headers["Location"] == "/hello"
    # A replay after the success: validly signed, changes nothing.
    replay = provider.post_signed(action, answer)
    assert replay.status == 200 and "already been answered" in replay.body
    assert call_statuses(mw)[-1] == "used"
    assert [e.result for e in mw.runtime.store.list_audit(username="bob")
            if e.event == "phone" and e.result.startswith("call_")].count("call_approved") == 2  # enroll + this


# -- a spoofed Host ---------------------------------------------------------------------------------------------------
SPOOFED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize("proxies", [pytest.param([], id="untrusted-peer"),
                                     pytest.param(["127.0.0.1"], id="trusted-proxy")])
def test_a_spoofed_host_never_decides_the_call_urls(build: Build, clock: Clock, provider: TwilioProvider,
                                                    base: str, proxies: list[str]) -> None:
    mw = build(trusted_proxies=proxies)
    enroll(mw, provider, base)
    clock.advance(60)
    browser = Browser(mw, base="https://evil.example")  # the Host header the middleware sees is evil.example
    login = browser.get("/_mfa/login?next=/hello", headers=SPOOFED)
    browser.post("/_mfa/login", {"username": "bob", "password": PASSWORD, "next": "/hello",
                                 "csrf_token": csrf_of(login.text)}, headers=SPOOFED)
    page = browser.get("/_mfa/verify", headers=SPOOFED)
    assert page.status_code == 200 and "calling +44" in page.text, page.text
    sid = last_call(provider)
    form = provider.calls[sid].form
    assert form["Url"].startswith(base + "/_mfa/voice/script/"), form
    assert form["StatusCallback"].startswith(base + "/_mfa/voice/status/"), form
    assert "evil" not in json.dumps(form)
    # The provider fetches the script from public_url, but the request reaches us with a forged Host (a proxy
    # that passes Host on): the answer URL in the script is still on public_url.
    params = call_params(provider, sid)
    signature = reference_signature(provider.auth_token, form["Url"], params)
    script = httpx.post(form["Url"], data=params, timeout=10.0, headers={
        "X-Twilio-Signature": signature, "Host": "evil.example", **SPOOFED})
    assert script.status_code == 200, script.text
    assert gather_action(script.text).startswith(base + "/_mfa/voice/answer/")
    # A callback signed over the URL its Host header builds (not public_url's) is refused.
    token = form["Url"].rsplit("/", 1)[-1]
    for route, fields in (("answer", {"Digits": "", "FinishedOnKey": "#"}), ("status", {"CallStatus": "busy"}),
                          ("script", {})):
        path = f"/_mfa/voice/{route}/{token}"
        forged = call_params(provider, sid, **fields)
        for host, signed_url in (("evil.example", "http://evil.example" + path),
                                 ("evil.example", "https://evil.example" + path)):
            reply = httpx.post(base + path, data=forged, timeout=10.0, headers={
                "Host": host, "X-Twilio-Signature": reference_signature(provider.auth_token, signed_url, forged),
                **SPOOFED})
            assert reply.status_code == 403, (route, signed_url, reply.text)
    assert call_statuses(mw)[-1] == "pending"


# -- the webhook gateway ----------------------------------------------------------------------------------------------
def webhook_table(receiver: WebhookReceiver, public_url: str) -> dict[str, object]:
    return {"gateway": "webhook", "url": receiver.url, "secret": WEBHOOK_SECRET, "allowed_countries": ["GB"],
            "timeout": "3s", "public_url": public_url}


def signed_post(url: str, payload: dict[str, Any], *, secret: str = WEBHOOK_SECRET,
                stamp: int | None = None, sign: bool = True) -> tuple[httpx.Response, dict[str, str], bytes]:
    """POST ``payload`` as the operator's webhook service would; returns the reply and what was sent (to replay)."""
    body = json.dumps(payload).encode()
    stamp = int(time.time()) if stamp is None else stamp
    headers = {"Content-Type": "application/json", "X-MFA-Timestamp": str(stamp)}
    if sign:
        headers["X-MFA-Signature"] = reference_sign(secret.encode(), stamp, body)
    return httpx.post(url, content=body, headers=headers, timeout=10.0), headers, body


def webhook_answer_url(receiver: WebhookReceiver) -> tuple[str, str]:
    """The newest call the receiver got (checked with its own code): fetch its script, signed; return the answer
    URL and the status URL."""
    call = receiver.received[-1]
    assert call.valid and call.payload["type"] == "call", call
    assert call.payload["to"] == "+442079460958"
    reply, _, _ = signed_post(call.payload["script_url"], {})
    assert reply.status_code == 200, reply.text
    return gather_action(reply.text), call.payload["status_url"]


@pytest.fixture
def webhook_mw(build: Build, receiver: WebhookReceiver, base: str, clock: Clock) -> MFAMiddleware:
    clock.now = float(int(time.time()))  # the service signs with the wall clock; the middleware checks against its own
    mw = build(phone=webhook_table(receiver, base))
    browser, started = start_enrollment(mw, base)
    assert started.status_code == 303, started.text
    answer_url, _ = webhook_answer_url(receiver)
    reply, _, _ = signed_post(answer_url, {"digits": ""})
    assert reply.status_code == 200 and "approved" in reply.text, reply.text
    confirm_enrollment(browser)
    return mw


def test_webhook_a_signed_answer_approves_and_its_replay_changes_nothing(
        webhook_mw: MFAMiddleware, receiver: WebhookReceiver, base: str) -> None:
    browser, token = start_sign_in(webhook_mw, base)
    answer_url, status_url = webhook_answer_url(receiver)
    reply, headers, body = signed_post(answer_url, {"digits": ""})
    assert reply.status_code == 200 and "approved" in reply.text
    assert poll(browser) == "approved"
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 303
    replay = httpx.post(answer_url, content=body, headers=headers, timeout=10.0)  # the same bytes again
    assert replay.status_code == 200 and "already been answered" in replay.text
    completed, _, _ = signed_post(status_url, {"status": "completed"})
    assert completed.status_code == 204
    assert call_statuses(webhook_mw)[-1] == "used"


@pytest.mark.parametrize("forgery", [
    pytest.param({"secret": "x" * 40}, id="bad-signature"),
    pytest.param({"sign": False}, id="unsigned"),
    pytest.param({"stamp": -301}, id="stale-timestamp"),
    pytest.param({"stamp": 301}, id="future-timestamp"),
    pytest.param({"stamp": -10**10}, id="timestamp-zero"),
])
def test_webhook_forged_answers_change_nothing(webhook_mw: MFAMiddleware, receiver: WebhookReceiver, base: str,
                                               clock: Clock, forgery: dict[str, Any]) -> None:
    if "stamp" in forgery:  # seconds from the middleware's now
        forgery = {"stamp": max(0, int(clock.now) + forgery["stamp"])}
    browser, token = start_sign_in(webhook_mw, base)
    answer_url, status_url = webhook_answer_url(receiver)
    script_url = receiver.received[-1].payload["script_url"]
    for url, payload in ((answer_url, {"digits": ""}), (answer_url, {"digits": "0"}),
                         (status_url, {"status": "no-answer"}), (script_url, {})):
        reply, _, _ = signed_post(url, payload, **forgery)
        assert reply.status_code == 403, (url, reply.text)
    assert poll(browser) == "pending"
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 200
    assert call_statuses(webhook_mw)[-1] == "pending"
    assert not [r for r in webhook_mw.runtime.store.list_fraud_reports(username="bob")]


def test_webhook_a_replayed_failure_cannot_be_turned_around(webhook_mw: MFAMiddleware, receiver: WebhookReceiver,
                                                            base: str) -> None:
    browser, token = start_sign_in(webhook_mw, base)
    answer_url, _ = webhook_answer_url(receiver)
    reply, headers, body = signed_post(answer_url, {"digits": "9"})
    assert reply.status_code == 200 and "not approved" in reply.text
    assert httpx.post(answer_url, content=body, headers=headers, timeout=10.0).status_code == 200
    approve, _, _ = signed_post(answer_url, {"digits": ""})
    assert "already been answered" in approve.text
    assert poll(browser) == "failed"
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 401


@pytest.mark.parametrize("body", [
    pytest.param(b'{"digits": "' + b"1" * 10_000 + b'"}', id="huge-digits"),
    pytest.param(b'{"digits": "   "}', id="spaces-digits"),
    pytest.param(b'{"digits": 0}', id="digits-a-number"),
    pytest.param(b'{"digits": null, "status": ["no-answer"]}', id="wrong-types"),
    pytest.param(b"[" * 5_000 + b"]" * 5_000, id="deeply-nested"),
    pytest.param(b"{not json", id="bad-json"),
    pytest.param("{\"digits\": \"\u0661\"}".encode(), id="non-ascii-digits"),
])
def test_webhook_malformed_signed_bodies_change_nothing(webhook_mw: MFAMiddleware, receiver: WebhookReceiver,
                                                        base: str, clock: Clock, body: bytes) -> None:
    browser, token = start_sign_in(webhook_mw, base)
    answer_url, status_url = webhook_answer_url(receiver)
    stamp = int(clock.now)
    headers = {"Content-Type": "application/json", "X-MFA-Timestamp": str(stamp),
               "X-MFA-Signature": reference_sign(WEBHOOK_SECRET.encode(), stamp, body)}
    for url in (answer_url, status_url):
        reply = httpx.post(url, content=body, headers=headers, timeout=10.0)
        assert reply.status_code in (200, 204), (url, reply.status_code, reply.text)
        assert "approved" not in reply.text
    assert call_statuses(webhook_mw)[-1] == "pending" and poll(browser) == "pending"
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 200


# -- PIN mode ---------------------------------------------------------------------------------------------------------
PIN = "2580"
PIN_METHODS = {"enabled": ["voice", "totp"], "voice": {"pin": True}}


@pytest.mark.parametrize("pin", [
    pytest.param("", id="empty"),
    pytest.param("12", id="too-short"),
    pytest.param("1" * 11, id="too-long"),
    pytest.param("1111", id="repeated"),
    pytest.param("1234", id="ascending"),
    pytest.param("9876", id="descending"),
    pytest.param("abcd", id="letters"),
    pytest.param("12a4", id="digits-and-letters"),
    pytest.param("２５８０", id="fullwidth-digits"),
    pytest.param("25 80", id="inner-space"),
])
def test_pin_mode_enrollment_refuses_weak_pins(build: Build, provider: TwilioProvider, base: str, pin: str) -> None:
    mw = build(methods=PIN_METHODS)
    _browser, started = start_enrollment(mw, base, pin=pin)
    assert started.status_code == 400 and "PIN" in started.text, started.text
    assert not provider.calls  # nobody was called
    user = mw.runtime.store.get_user("bob")
    assert user is not None and not mw.runtime.store.list_methods(user.id, confirmed_only=False)


def test_pin_mode_stores_an_argon2id_hash_and_calls_need_the_pin(build: Build, clock: Clock,
                                                                 provider: TwilioProvider, base: str) -> None:
    mw = build(methods=PIN_METHODS)
    browser, started = start_enrollment(mw, base, pin=PIN)
    assert started.status_code == 303, started.text
    script, action = provider.answer(last_call(provider), "#")  # the pound key alone: no PIN
    assert "enter your PIN" in script.body and action is not None and "not approved" in action.body
    confirm = browser.post("/_mfa/enroll", {"action": "confirm",
                                            "csrf_token": csrf_of(browser.get("/_mfa/enroll").text)})
    assert confirm.status_code != 303
    # Again, answered with the PIN.
    clock.advance(31)
    browser, started = start_enrollment(mw, base, pin=PIN)
    assert started.status_code == 303, started.text
    _script, action = provider.answer(last_call(provider), PIN + "#")
    assert action is not None and "approved" in action.body and "not approved" not in action.body
    confirm_enrollment(browser)
    user = mw.runtime.store.get_user("bob")
    assert user is not None
    (method,) = [m for m in mw.runtime.store.list_methods(user.id) if m.kind == "voice"]
    assert method.detail is not None and PIN.encode() not in method.detail
    detail = json.loads(mw.runtime.box.decrypt(method.detail))
    assert detail["pin"].startswith("$argon2id$") and PIN not in json.dumps(detail)
    assert all(PIN not in json.dumps(e.__dict__ if hasattr(e, "__dict__") else str(e))
               for e in mw.runtime.store.list_audit(username="bob"))


@pytest.mark.parametrize(("keys", "status", "outcome"), [
    pytest.param(PIN + "#", "approved", (303,), id="pin-then-pound"),
    pytest.param("2581#", "failed", (401,), id="wrong-pin"),
    pytest.param("#", "failed", (401,), id="pound-alone"),
    pytest.param(PIN + PIN + "#", "failed", (401,), id="pin-twice"),
    pytest.param("0" + PIN + "#", "failed", (401,), id="zero-then-pin"),
    pytest.param("0#", "fraud", (401, 403), id="fraud-code"),  # the block ends the attempt (user-wide revocation)
])
def test_pin_mode_sign_in(build: Build, clock: Clock, provider: TwilioProvider, base: str, keys: str,
                          status: str, outcome: tuple[int, ...]) -> None:
    mw = build(methods=PIN_METHODS)
    enroll(mw, provider, base, keys=PIN + "#", pin=PIN)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    provider.answer(last_call(provider), keys)
    assert call_statuses(mw)[-1] == status
    if status != "fraud":  # a report blocks the user, which ends the attempt (its poll too)
        assert poll(browser) == status
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code in outcome
    assert browser.cookie("mfa_session") is None if status != "approved" else browser.cookie("mfa_session")
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.blocked(clock()) is (status == "fraud")


# -- reporting switched off -------------------------------------------------------------------------------------------
def test_zero_pound_with_reporting_off_fails_the_call_without_a_block(build: Build, clock: Clock,
                                                                      provider: TwilioProvider, base: str) -> None:
    mw = build(fraud={"allow_users_to_report": False})
    enroll(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    _script, action = provider.answer(last_call(provider), "0#")
    assert action is not None and action.status == 200 and "blocked" not in action.body
    assert poll(browser) == "failed"
    failed = browser.post("/_mfa/verify", {"csrf_token": token})
    assert failed.status_code == 401 and "not approved" in failed.text
    user = mw.runtime.store.get_user("bob")
    assert user is not None and not user.blocked(clock())
    assert not mw.runtime.store.list_fraud_reports(username="bob")
    rows = [(e.event, e.result) for e in mw.runtime.store.list_audit(username="bob")]
    assert ("fraud", "refused") in rows and ("fraud", "reported") not in rows and ("user_block", "success") not in rows
    # The user signs in again as usual.
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    provider.answer(last_call(provider), "#")
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 303


def test_the_fraud_code_comes_from_the_config(build: Build, clock: Clock, provider: TwilioProvider,
                                              base: str) -> None:
    """``[fraud] code = "99"``: the call says "press 9 9 then pound", ``99#`` reports fraud and ``0#`` is just a
    wrong key (the attempt fails, nobody is blocked)."""
    mw = build(fraud={"code": "99"})
    enroll(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    assert "press 99 then #" in browser.get("/_mfa/verify").text
    script, action = provider.answer(last_call(provider), "0#")
    assert "press 9 9 then pound" in script.body
    assert action is not None and "blocked" not in action.body
    user = mw.runtime.store.get_user("bob")
    assert user is not None and not user.blocked(clock())
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    _script, action = provider.answer(last_call(provider), "99#")
    assert action is not None and "blocked" in action.body
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.blocked(clock())


@pytest.mark.parametrize("code", ["", "x", "12345", "0#", "٣"])
def test_a_bad_fraud_code_is_a_config_error(code: str) -> None:
    from mfa_middleware import ConfigError
    from tests.support.mfa import make_config

    with pytest.raises(ConfigError, match=r"fraud\.code"):
        make_config("sqlite://", fraud={"code": code})


# -- status callbacks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [pytest.param(s, id=s) for s in ("no-answer", "busy", "failed", "canceled")])
def test_a_call_that_ends_unanswered_fails_and_offers_another_way(build: Build, clock: Clock,
                                                                  provider: TwilioProvider, base: str,
                                                                  status: str) -> None:
    mw = build()
    enroll(mw, provider, base)
    add_totp(mw, clock)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    assert provider.finish(last_call(provider), status).status == 204
    assert poll(browser) == "failed"
    failed = browser.post("/_mfa/verify", {"csrf_token": token})
    assert failed.status_code == 401 and "Sign in another way" in failed.text
    assert "/_mfa/verify?another=1" in failed.text
    choose = browser.get("/_mfa/verify?another=1")
    assert choose.status_code == 200 and "Authenticator app" in choose.text, choose.text
    assert browser.cookie("mfa_session") is None
    # An answer after the status callback is too late.
    script, action = provider.answer(last_call(provider), "#")
    assert action is None and "already been answered" in script.body
    assert call_statuses(mw)[-1] == "failed"


def test_completed_after_an_approval_changes_nothing(build: Build, clock: Clock, provider: TwilioProvider,
                                                     base: str) -> None:
    mw = build()
    enroll(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    sid = last_call(provider)
    provider.answer(sid, "#")
    for status in ("completed", "no-answer", "failed"):
        assert provider.finish(sid, status).status == 204
    assert poll(browser) == "approved"
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 303
    assert call_statuses(mw)[-1] == "used"


# -- huge and malformed input on every route --------------------------------------------------------------------------
MALFORMED: dict[str, tuple[str | None, Callable[[dict[str, str]], dict[str, str] | str | bytes]]] = {
    # id: (content type, the body made from the call's own parameters); None: a form
    "huge-digits": (None, lambda p: {**p, "Digits": "1" * 10_000}),
    "spaces-digits": (None, lambda p: {**p, "Digits": " " * 5_000}),
    "pound-digits": (None, lambda p: {**p, "Digits": "#" * 10_000}),
    "non-ascii-digits": (None, lambda p: {**p, "Digits": "١٢٣"}),
    "text-body": ("text/plain", lambda p: "Digits=&CallStatus=completed"),
    "json-body": ("application/json", lambda p: json.dumps({"digits": "", "status": "completed"})),
    "bad-json": ("application/json", lambda p: "{not json"),
    "binary": ("application/octet-stream", lambda p: b"\xff\x00" * 5000),
}


def post_raw(provider: TwilioProvider, url: str, content_type: str | None, body: Any, *,
             signed: bool = True) -> httpx.Response:
    """POST ``body`` to ``url`` with a signature by the provider's key over the URL and the form fields (none
    for a body that is not a form)."""
    covered = body if isinstance(body, dict) else {}
    headers = {"X-Twilio-Signature": reference_signature(provider.auth_token, url, covered)} if signed else {}
    if isinstance(body, dict):
        return httpx.post(url, data=body, headers=headers, timeout=10.0)
    headers["Content-Type"] = content_type or "application/x-www-form-urlencoded"
    return httpx.post(url, content=body.encode() if isinstance(body, str) else body, headers=headers,
                      timeout=10.0)


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("signed", [pytest.param(True, id="signed"), pytest.param(False, id="unsigned")])
def test_malformed_callbacks_change_nothing(build: Build, clock: Clock, provider: TwilioProvider, base: str,
                                            case: str, signed: bool) -> None:
    mw = build()
    enroll(mw, provider, base)
    clock.advance(60)
    browser, token = start_sign_in(mw, base)
    sid = last_call(provider)
    script_url = provider.calls[sid].form["Url"]
    answer_url = script_url.replace("/script/", "/answer/")
    status_url = provider.calls[sid].form["StatusCallback"]
    content_type, make_body = MALFORMED[case]
    body = make_body(call_params(provider, sid))
    for url in (script_url, answer_url, status_url):
        reply = post_raw(provider, url, content_type, body, signed=signed)
        assert reply.status_code in ((200, 204, 413) if signed else (403, 413)), (url, reply.status_code,
                                                                                   reply.text)
        if reply.status_code == 200:
            assert reply.headers["Content-Type"].startswith("application/xml")
            ET.fromstring(reply.text)  # well-formed TwiML
    assert call_statuses(mw)[-1] == "pending"
    assert poll(browser) == "pending"
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 200
    # The call still works for its real answer.
    _script, action = provider.answer(sid, "#")
    assert action is not None and "approved" in action.body
    assert browser.post("/_mfa/verify", {"csrf_token": token}).status_code == 303


@pytest.mark.parametrize("token", [
    pytest.param("A" * 10_000, id="10kB"),
    pytest.param("ключ-☎", id="non-ascii"),
    pytest.param("", id="empty"),
    pytest.param("..%2F..%2Fverify", id="dot-segments"),
    pytest.param("%00", id="nul"),
])
@pytest.mark.parametrize("route", ["script", "answer", "status"])
def test_strange_tokens_change_nothing(build: Build, clock: Clock, provider: TwilioProvider, base: str,
                                       token: str, route: str) -> None:
    mw = build()
    enroll(mw, provider, base)
    clock.advance(60)
    browser, csrf = start_sign_in(mw, base)
    sid = last_call(provider)
    url = f"{base}/_mfa/voice/{route}/{quote(token, safe='%')}"
    params = call_params(provider, sid, Digits="", FinishedOnKey="#", CallStatus="busy")
    for signed in (True, False):
        reply = post_raw(provider, url, None, params, signed=signed)
        assert reply.status_code < 500, (reply.status_code, reply.text)
        assert "approved" not in reply.text or "not approved" in reply.text
    assert call_statuses(mw)[-1] == "pending" and poll(browser) == "pending"
    assert browser.post("/_mfa/verify", {"csrf_token": csrf}).status_code == 200


# -- the poll route without a sign-in ---------------------------------------------------------------------------------
def test_the_poll_route_leaks_nothing_and_places_no_call(build: Build, clock: Clock, provider: TwilioProvider,
                                                         base: str) -> None:
    mw = build()
    enroll(mw, provider, base)
    clock.advance(60)
    calls_before, phone_rows = len(provider.calls), phone_audit_rows(mw)
    stranger = Browser(mw, base=base)
    for path in ("/_mfa/voice/status.json", "/_mfa/voice/status.json?attempt=1"):
        reply = stranger.get(path)
        assert reply.status_code in (302, 303, 401, 403), reply.status_code
        assert '"status"' not in reply.text and "pending" not in reply.text and "approved" not in reply.text
    # Signed in with the password, the call not placed yet: the poll places none and says nothing useful.
    browser = Browser(mw, base=base)
    browser.login("bob", PASSWORD, "/hello")
    assert json.loads(browser.get("/_mfa/voice/status.json").text)["status"] == "failed"
    assert len(provider.calls) == calls_before
    assert phone_audit_rows(mw) == phone_rows
    # A POST (no CSRF) and a forged pending cookie change nothing either.
    assert browser.post("/_mfa/voice/status.json", {}).status_code in (400, 403, 405)
    forged = stranger.get_with_cookie_header("/_mfa/voice/status.json", "mfa_pending=eyJmb3JnZWQiOjF9.x.y")
    assert forged.status_code in (302, 303, 401, 403) and '"status"' not in forged.text
    user = mw.runtime.store.get_user("bob")
    assert user is not None and user.failed_count == 0
    assert len(provider.calls) == calls_before
    # The verify page places the call; the poll is bound to the attempt of its own cookie: another user's
    # sign-in in progress (alice, enrolling still) sees nothing of bob's call.
    page = browser.get("/_mfa/verify")
    assert len(provider.calls) == calls_before + 1 and "calling +44" in page.text
    provider.answer(last_call(provider), "#")
    mw.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    alice = Browser(mw, base=base)
    alice.login("alice", PASSWORD, "/hello")
    theirs = alice.get("/_mfa/voice/status.json")
    assert theirs.status_code in (302, 303, 401, 403) and '"status"' not in theirs.text
    assert poll(browser) == "approved"


def phone_audit_rows(mw: MFAMiddleware) -> int:
    return len([e for e in mw.runtime.store.list_audit(limit=1000) if e.event == "phone"])
