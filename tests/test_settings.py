"""Security info (``/_mfa/settings``) through the WSGI middleware: the attacker's cases first (stale CSRF after a
step-up, another user's ids, a revoked session replaying a form, huge and non-ASCII names, double submits), then
every action, the step-up that returns to the same place, notification emails through a real SMTP server, and the
old addresses."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from werkzeug.test import TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.config import ConfigError
from mfa_middleware.services.account_notices import AccountNotices
from mfa_middleware.store import UserRecord
from tests.support.mfa import Browser, Clock, csrf_of, make_config, make_middleware, secret_of
from tests.support.smtp import smtp_server
from tests.support.servers import free_port

PASSWORD = "correct horse battery"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15"
S = "/_mfa/settings"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def build(url: str, clock: Clock, **overrides: Any) -> MFAMiddleware:
    mw = make_middleware(url, clock, methods={"enabled": ["totp", "backup_codes"], "max_authenticators": 3,
                                              "remember_device": "30d"}, **overrides)
    for name in ("bob", "alice"):
        if mw.runtime.store.get_user(name) is None:
            mw.runtime.accounts.add(name, actor="test", password=PASSWORD, email=f"{name}@example.test")
    return mw


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = build(sqlite_url, clock)
    yield middleware
    middleware.runtime.close()


class Person:
    """A user in one browser, signed in with an authenticator app (enrolled at the first sign-in)."""

    def __init__(self, mw: MFAMiddleware, clock: Clock, name: str, *, user_agent: str = FIREFOX,
                 secret: str | None = None, ip: str = "127.0.0.1") -> None:
        self.mw, self.clock, self.name = mw, clock, name
        self.browser = Browser(mw, remote_addr=ip)
        self.user_agent = user_agent
        if secret is None:
            first = self.browser.login(name, PASSWORD, "/hello")
            assert first.headers["Location"] == "/_mfa/enroll", first.text
            self.secret = self.enroll()
        else:
            self.secret = secret
            self.sign_in_again()

    def headers(self) -> dict[str, str]:
        return {"User-Agent": self.user_agent}

    def enroll(self) -> str:
        start = self.get("/_mfa/enroll")
        self.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
        page = self.get("/_mfa/enroll")
        secret = secret_of(page.text)
        done = self.post("/_mfa/enroll", {"action": "confirm", "code": pyotp.TOTP(secret).at(self.clock.now),
                                          "csrf_token": csrf_of(page.text)})
        assert done.status_code == 303, done.text
        return secret

    def code(self) -> str:
        self.clock.advance(30)
        return pyotp.TOTP(self.secret).at(self.clock.now)

    def sign_in_again(self, remember: bool = False) -> None:
        self.browser.client.delete_cookie(self.mw.runtime.config.session.cookie_name, domain="localhost")
        page = self.get("/_mfa/login?next=/hello")
        first = self.post("/_mfa/login", {"username": self.name, "password": PASSWORD, "next": "/hello",
                                          "csrf_token": csrf_of(page.text)})
        if first.headers["Location"] == "/hello":
            return  # a remembered device stood in for the second factor
        verify = self.get("/_mfa/verify")
        form = {"code": self.code(), "csrf_token": csrf_of(verify.text)}
        if remember:
            form["remember"] = "1"
        done = self.post("/_mfa/verify", form)
        assert done.headers["Location"] == "/hello", done.text

    def get(self, path: str) -> TestResponse:
        return self.browser.get(path, headers=self.headers())

    def post(self, path: str, form: dict[str, str]) -> TestResponse:
        return self.browser.post(path, form, headers=self.headers())

    def page(self) -> str:
        page = self.get(S)
        assert page.status_code == 200, page.text
        return page.text

    def act(self, path: str, **form: str) -> TestResponse:
        return self.post(S + path, {"csrf_token": csrf_of(self.page()), **form})

    def step_up(self, target: str) -> TestResponse:
        """Verify again (``fresh=1``) and return where the step-up sends the browser."""
        start = self.get(f"/_mfa/step-up?fresh=1&next={target}")
        assert start.headers["Location"] == "/_mfa/verify", start.text
        verify = self.get("/_mfa/verify")
        return self.post("/_mfa/verify", {"code": self.code(), "csrf_token": csrf_of(verify.text)})

    @property
    def user(self) -> UserRecord:
        user = self.mw.runtime.store.get_user(self.name)
        assert user is not None
        return user

    def methods(self) -> list[tuple[int, str, str, bool]]:
        return [(m.id, m.kind, m.label, m.is_default) for m in self.mw.runtime.store.list_methods(self.user.id)
                if m.kind != "backup_codes"]


def totp_id(person: Person) -> int:
    return next(m[0] for m in person.methods() if m[1] == "totp")


def notices(mw: MFAMiddleware) -> AccountNotices:
    pages: Any = mw.pages  # the sign-in pages behind the operator endpoints
    found: AccountNotices = pages.pages.settings.notices
    return found


def audit_rows(mw: MFAMiddleware, name: str, event: str) -> list[str]:
    return [r.result for r in reversed(mw.runtime.store.list_audit(username=name, limit=1000)) if r.event == event]


def add_second_totp(person: Person) -> int:
    """A second authenticator app, added directly in the store (the add-method flow has its own tests)."""
    store = person.mw.runtime.store
    return store.add_method(person.user.id, "totp", "Work phone", None, now=person.clock.now, confirmed=True)


# -- the attacker's cases ---------------------------------------------------------------------------------------
def test_old_csrf_token_after_the_step_up_window_and_a_new_step_up_is_refused(mw: MFAMiddleware,
                                                                            clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    old = csrf_of(bob.page())
    clock.advance(11 * 60)  # the second factor is no longer recent
    stale = bob.post(S + "/methods/rename", {"csrf_token": old, "method_id": str(totp_id(bob)), "label": "X"})
    assert stale.status_code == 403 and "Verify your identity" in stale.text
    back = bob.step_up(S)
    assert back.headers["Location"] == S
    replay = bob.post(S + "/methods/rename", {"csrf_token": old, "method_id": str(totp_id(bob)), "label": "X"})
    assert replay.status_code == 403 and "Form expired" in replay.text
    assert [m[2] for m in bob.methods()] == ["Authenticator app"]
    assert bob.act("/methods/rename", method_id=str(totp_id(bob)), label="X").status_code == 303


@pytest.mark.parametrize("action", [
    pytest.param(("/methods/rename", "method_id", {"label": "mine"}), id="rename-method"),
    pytest.param(("/methods/default", "method_id", {}), id="default-method"),
    pytest.param(("/methods/remove", "method_id", {}), id="remove-method"),
    pytest.param(("/app-passwords/revoke", "app_password_id", {}), id="revoke-app-password"),
    pytest.param(("/devices/forget", "device_id", {}), id="forget-device"),
    pytest.param(("/sessions/sign-out", "session_id", {}), id="sign-out-session"),
])
def test_another_users_ids_in_the_form_change_nothing(mw: MFAMiddleware, clock: Clock,
                                                      action: tuple[str, str, dict[str, str]]) -> None:
    alice = Person(mw, clock, "alice", user_agent=SAFARI)
    alice_second = add_second_totp(alice)
    alice.act("/app-passwords/create", label="Alice's phone")
    alice.sign_in_again(remember=True)
    bob = Person(mw, clock, "bob")
    store = mw.runtime.store
    ids = {"method_id": str(alice_second),
           "app_password_id": str(store.list_app_passwords(alice.user.id)[0].id),
           "device_id": str(store.list_devices(alice.user.id, now=clock.now)[0].id),
           "session_id": store.list_session_records(alice.user.id, now=clock.now)[0].sid}
    before = (alice.methods(), store.list_app_passwords(alice.user.id),
              store.list_devices(alice.user.id, now=clock.now),
              store.list_session_records(alice.user.id, now=clock.now))
    path, field, extra = action
    answer = bob.act(path, **{field: ids[field]}, **extra)
    assert answer.status_code == 400 and "is not in your list" in answer.text
    after = (alice.methods(), store.list_app_passwords(alice.user.id),
             store.list_devices(alice.user.id, now=clock.now),
             store.list_session_records(alice.user.id, now=clock.now))
    assert after == before
    assert alice.get("/hello").status_code == 200


def test_a_session_signed_out_elsewhere_cannot_replay_a_settings_form(sqlite_url: str, mw: MFAMiddleware,
                                                                      clock: Clock) -> None:
    laptop = Person(mw, clock, "bob")
    # The phone is served by a second process (another middleware on the same store): its revocation cache does
    # not see the sign-out within the interval, the settings pages ask the store.
    other = build(sqlite_url, clock)
    try:
        phone = Person(other, clock, "bob", secret=laptop.secret, user_agent=SAFARI)
        token = csrf_of(phone.page())
        assert laptop.act("/sessions/sign-out-others").headers["Location"].startswith(S + "?done=signed_out")
        replay = phone.post(S + "/app-passwords/create", {"csrf_token": token, "label": "sneaky"})
        assert replay.status_code == 401 and "signed out" in replay.text
        assert mw.runtime.store.list_app_passwords(laptop.user.id) == []
        assert laptop.get("/hello").status_code == 200
    finally:
        other.runtime.close()


@pytest.mark.parametrize(("label", "status", "message"), [
    pytest.param("x" * 65, 400, "Enter a device name of 1 to 64 characters", id="too-long"),
    pytest.param("x" * 10_000, 400, "Enter a device name of 1 to 64 characters", id="huge"),
    pytest.param("x" * 20_000, 413, "", id="over-the-form-limit"),
    pytest.param("   ", 400, "Enter a device name", id="blank"),
    pytest.param("tab\x00null", 400, "Enter a device name", id="control-character"),
    pytest.param("<script>alert(1)</script>", 200, "&lt;script&gt;", id="markup"),
    pytest.param("Büro-Laptop ✉ 東京", 200, "Büro-Laptop ✉ 東京", id="non-ascii"),
])
def test_app_password_names(mw: MFAMiddleware, clock: Clock, label: str, status: int, message: str) -> None:
    bob = Person(mw, clock, "bob")
    answer = bob.act("/app-passwords/create", label=label)
    assert answer.status_code == status
    assert message in answer.text and "Traceback" not in answer.text and "Error" not in answer.text[:0]
    made = mw.runtime.store.list_app_passwords(bob.user.id)
    assert len(made) == (1 if status == 200 else 0)


@pytest.mark.parametrize(("label", "ok"), [
    pytest.param("Téléphone de Zoë ✓", True, id="non-ascii"),
    pytest.param("y" * 100, True, id="longest"),
    pytest.param("y" * 101, False, id="too-long"),
    pytest.param("a\x7fb", False, id="control-character"),
])
def test_method_names(mw: MFAMiddleware, clock: Clock, label: str, ok: bool) -> None:
    bob = Person(mw, clock, "bob")
    answer = bob.act("/methods/rename", method_id=str(totp_id(bob)), label=label)
    assert answer.status_code == (303 if ok else 400)
    assert [m[2] for m in bob.methods()] == [label if ok else "Authenticator app"]
    if ok:
        assert label in bob.page()


def test_double_submits_racing(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    second = add_second_totp(bob)
    token = csrf_of(bob.page())
    answers: list[TestResponse] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def submit(path: str, form: dict[str, str]) -> None:
        browser = Browser(mw)
        browser.client.set_cookie(mw.runtime.config.session.cookie_name, bob.browser.cookie(
            mw.runtime.config.session.cookie_name) or "", domain="localhost")
        barrier.wait()
        answer = browser.post(path, {"csrf_token": token, **form})
        with lock:
            answers.append(answer)

    for path, form in ((S + "/app-passwords/create", {"label": "Outlook"}),
                       (S + "/methods/remove", {"method_id": str(second)})):
        answers.clear()
        threads = [threading.Thread(target=submit, args=(path, form)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        statuses = sorted(a.status_code for a in answers)
        assert statuses in ([200, 409], [303, 400]), [a.text for a in answers]
        refused = next(a for a in answers if a.status_code in (400, 409))
        assert "You already have an app password named “Outlook”" in refused.text or "not in your list" in refused.text
    assert [a.label for a in mw.runtime.store.list_app_passwords(bob.user.id)] == ["Outlook"]
    assert [m[0] for m in bob.methods()] == [totp_id(bob)]


# -- every action ------------------------------------------------------------------------------------------------
def test_the_page_says_everything_in_words_with_times_in_the_browsers_zone(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    text = bob.page()
    assert "Authenticator app" in text and "forms + totp" not in text and "totp" not in text.replace(
        "Authenticator", "")
    assert "with password and authenticator app" in text
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00">\d{4}-\d\d-\d\d \d\d:\d\d UTC</time>',
                     text)
    assert "/_mfa/static/settings.js" in text and 'href="/"' in text  # the local-time script; back to the app
    assert "Firefox on Windows" in text and "This browser" in text
    assert mw.runtime.store.list_audit(username="bob", limit=1)  # activity comes from the audit log
    assert "Method added: Authenticator app" in text


def test_old_addresses_redirect_to_their_section(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    assert bob.get("/_mfa/").headers["Location"] == S
    assert bob.get("/_mfa/app-passwords").headers["Location"] == S + "#app-passwords"
    assert bob.get("/_mfa/app-passwords?next=/hello").headers["Location"] == S + "?next=/hello#app-passwords"
    assert 'href="/hello">Continue' in bob.get(S + "?next=/hello").text
    assert 'href="/"' in bob.get(S + "?next=https://evil.example/").text


def test_rename_default_and_remove_with_confirmation(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    first = totp_id(bob)
    second = add_second_totp(bob)
    assert bob.act("/methods/default", method_id=str(second)).headers["Location"] == S + "?done=default#methods"
    assert [m[3] for m in bob.methods()] == [False, True]
    assert mw.runtime.signin.chosen(bob.user, None)[1].id == second  # offered first at sign-in
    assert bob.act("/methods/rename", method_id=str(second), label="  Work   phone ").status_code == 303
    confirm = bob.get(f"{S}/methods/remove?method_id={second}")
    assert confirm.status_code == 200 and "Remove “Work phone” (Authenticator app)?" in confirm.text
    assert len(bob.methods()) == 2  # asking changes nothing
    done = bob.post(S + "/methods/remove", {"csrf_token": csrf_of(confirm.text), "method_id": str(second)})
    assert done.headers["Location"] == S + "?done=removed#methods"
    assert [m[0] for m in bob.methods()] == [first] and bob.methods()[0][3]  # the default moved
    last = bob.act("/methods/remove", method_id=str(first))
    assert last.status_code == 409 and "only sign-in method" in last.text
    assert audit_rows(mw, "bob", "method") == ["default", "renamed", "removed", "refused"]


def test_app_password_create_once_list_with_last_use_and_revoke_with_confirmation(mw: MFAMiddleware,
                                                                                   clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    made = bob.act("/app-passwords/create", label="Outlook on laptop")
    assert made.status_code == 200
    password = re.search(r'id="app-password">([a-z ]{19})<', made.text)
    assert password is not None and 'data-copy="app-password"' in made.text
    page = bob.page()
    assert "Outlook on laptop" in page and password.group(1) not in page  # shown once
    again = bob.act("/app-passwords/create", label="outlook   on laptop".replace("o", "O", 1))
    assert again.status_code == 409 and "You already have an app password named “Outlook on laptop”" in again.text
    (item,) = mw.runtime.store.list_app_passwords(bob.user.id)
    mw.runtime.store.touch_app_password(item.id, now=clock.now, client_ip="192.0.2.7")
    assert "from 192.0.2.7" in bob.page()
    confirm = bob.get(f"{S}/app-passwords/revoke?app_password_id={item.id}")
    assert "Revoke the app password “Outlook on laptop”?" in confirm.text
    assert mw.runtime.store.list_app_passwords(bob.user.id)
    done = bob.post(S + "/app-passwords/revoke", {"csrf_token": csrf_of(confirm.text),
                                                  "app_password_id": str(item.id)})
    assert done.headers["Location"] == S + "?done=revoked#app-passwords"
    assert mw.runtime.store.list_app_passwords(bob.user.id) == []
    assert audit_rows(mw, "bob", "app_password_create") == ["success"]
    assert audit_rows(mw, "bob", "app_password_revoke") == ["success"]


def test_remembered_devices_forget_one_and_all(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    for _ in range(3):
        bob.sign_in_again(remember=True)
        bob.browser.client.delete_cookie(mw.runtime.config.session.cookie_name + "_device", domain="localhost")
    bob.sign_in_again()  # a full second factor: changes are allowed
    devices = mw.runtime.store.list_devices(bob.user.id, now=clock.now)
    assert len(devices) == 3 and "Firefox on Windows" in bob.page()
    assert bob.act("/devices/forget", device_id=str(devices[0].id)).headers["Location"].endswith("#devices")
    assert len(mw.runtime.store.list_devices(bob.user.id, now=clock.now)) == 2
    confirm = bob.get(S + "/devices/forget-all")
    assert "Forget every remembered device?" in confirm.text
    bob.post(S + "/devices/forget-all", {"csrf_token": csrf_of(confirm.text)})
    assert mw.runtime.store.list_devices(bob.user.id, now=clock.now) == []


def test_backup_codes_remaining_and_regenerated_once(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    assert "You have no backup codes." in bob.page()
    confirm = bob.get(S + "/backup-codes")
    assert "Make a new set of backup codes?" in confirm.text
    shown = bob.post(S + "/backup-codes", {"csrf_token": csrf_of(confirm.text)})
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", shown.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    page = bob.page()
    assert "10 unused codes left." in page and codes[0] not in page
    assert audit_rows(mw, "bob", "backup_codes") == ["created"]


def test_sessions_listed_with_device_and_place_and_the_others_signed_out(mw: MFAMiddleware, clock: Clock) -> None:
    laptop = Person(mw, clock, "bob")
    phone = Person(mw, clock, "bob", secret=laptop.secret, user_agent=SAFARI, ip="192.0.2.44")
    tablet = Person(mw, clock, "bob", secret=laptop.secret, user_agent="curl/8.5.0", ip="192.0.2.45")
    page = laptop.page()
    assert "Safari on iPhone" in page and "From 192.0.2.44" in page and "curl/8.5.0" in page
    one = mw.runtime.store.list_session_records(laptop.user.id, now=clock.now)
    tablet_sid = next(r.sid for r in one if r.client_ip == "192.0.2.45")
    assert laptop.act("/sessions/sign-out", session_id=tablet_sid).status_code == 303
    assert tablet.get("/hello").status_code == 302
    assert phone.get("/hello").status_code == 200
    assert laptop.act("/sessions/sign-out-others").headers["Location"] == S + "?done=signed_out#sessions"
    assert phone.get("/hello").status_code == 302 and laptop.get("/hello").status_code == 200
    page = laptop.page()
    listed = page[page.index('id="sessions-h"'):page.index('id="activity-h"')]
    assert "Safari on iPhone" not in listed and "Sign out all other sessions" not in listed
    assert audit_rows(mw, "bob", "sessions") == ["signed_out_one", "signed_out_others"]


def test_sessions_are_recorded_at_sign_in_never_on_requests(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    before = mw.runtime.store.list_session_records(bob.user.id, now=clock.now)
    for _ in range(5):
        clock.advance(120)  # past refresh_after: the cookie is refreshed, no row is written
        assert bob.get("/hello").status_code == 200
    assert mw.runtime.store.list_session_records(bob.user.id, now=clock.now) == before


def test_activity_shows_the_users_own_rows_in_words(mw: MFAMiddleware, clock: Clock) -> None:
    alice = Person(mw, clock, "alice")
    alice.act("/app-passwords/create", label="Alice secret device")
    bob = Person(mw, clock, "bob")
    page = bob.browser.get("/_mfa/login")  # a failed sign-in of bob's from another browser
    stranger = Browser(mw)
    form = stranger.get("/_mfa/login")
    stranger.post("/_mfa/login", {"username": "bob", "password": "wrong", "csrf_token": csrf_of(form.text)})
    assert page is not None
    text = bob.page()
    activity = text[text.index('id="activity-h"'):]
    assert "Sign-in failed" in activity and "Password accepted" in activity and "Method added" in activity
    assert "Alice secret device" not in activity


def test_step_up_prompt_returns_to_the_same_place(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    second = add_second_totp(bob)
    clock.advance(11 * 60)
    assert "verify your identity again" in bob.page()
    here = f"{S}/methods/remove?method_id={second}"
    prompt = bob.get(here)
    assert prompt.status_code == 403 and "Nothing was changed" in prompt.text
    link = re.search(r'href="(/_mfa/step-up[^"]+)"', prompt.text)
    assert link is not None
    start = bob.get(link.group(1).replace("&amp;", "&"))
    assert start.headers["Location"] == "/_mfa/verify"
    verify = bob.get("/_mfa/verify")
    back = bob.post("/_mfa/verify", {"code": bob.code(), "csrf_token": csrf_of(verify.text)})
    assert back.headers["Location"] == here
    assert "Remove “Work phone”" in bob.get(here).text


@pytest.mark.parametrize(("settings", "seconds"), [pytest.param({}, 600, id="default"),
                                                   pytest.param({"step_up": "2m"}, 120, id="two-minutes")])
def test_step_up_window_is_configurable(sqlite_url: str, settings: dict[str, str], seconds: float) -> None:
    assert make_config(sqlite_url, session=settings).session.step_up == seconds


@pytest.mark.parametrize("settings", [pytest.param({"step_up": "soon"}, id="not-a-duration"),
                                      pytest.param({"step_up": "13h"}, id="longer-than-a-session")])
def test_bad_step_up_window_names_the_key(sqlite_url: str, settings: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="step_up"):
        make_config(sqlite_url, session=settings)


# -- notification emails ----------------------------------------------------------------------------------------
def test_every_change_sends_a_notification_email(sqlite_url: str, clock: Clock) -> None:
    with smtp_server() as server:
        mw = build(sqlite_url, clock, email={"gateway": "smtp", "host": "127.0.0.1", "port": server.port,
                                             "security": "none", "from_address": "mfa@example.test",
                                             "timeout": "2s"})
        try:
            bob = Person(mw, clock, "bob")
            second = add_second_totp(bob)
            Person(mw, clock, "bob", secret=bob.secret, user_agent=SAFARI)
            choose = bob.get("/_mfa/methods/add")  # the add-method flow
            started = bob.post("/_mfa/methods/add", {"action": "start", "method": "totp",
                                                     "csrf_token": csrf_of(choose.text)})
            shown = bob.get(started.headers["Location"])
            clock.advance(30)
            added = bob.post(started.headers["Location"], {
                "action": "confirm", "code": pyotp.TOTP(secret_of(shown.text)).at(clock.now),
                "csrf_token": csrf_of(shown.text)})
            assert added.headers["Location"] == "/_mfa/?done=added"
            bob.act("/app-passwords/create", label="Outlook")
            item = mw.runtime.store.list_app_passwords(bob.user.id)[0]
            bob.act("/app-passwords/revoke", app_password_id=str(item.id))
            bob.act("/backup-codes")
            bob.act("/methods/remove", method_id=str(second))
            bob.act("/sessions/sign-out-others")
            notices(mw).wait(10)  # bound on a hang: the local server answers in milliseconds
            bodies = [m.message.get_body(("plain",)).get_content() for m in server.recorder.messages()]
            assert all(m.rcpt_tos == ("bob@example.test",) for m in server.recorder.messages())
            for words in ("method was added to your account: Authenticator app",
                          "app password named “Outlook” was created", "“Outlook” was revoked",
                          "new set of backup codes", "method was removed", "other session of your account was"):
                assert any(words in body for body in bodies), (words, bodies)
            assert not any(item.label + " " in body and "password:" in body for body in bodies)
            assert audit_rows(mw, "bob", "notify") == ["sent"] * 6
        finally:
            mw.runtime.close()


def test_a_failing_mail_server_never_fails_the_change(sqlite_url: str, clock: Clock) -> None:
    mw = build(sqlite_url, clock, email={"gateway": "smtp", "host": "127.0.0.1", "port": free_port(),
                                         "security": "none", "from_address": "mfa@example.test", "timeout": "2s"})
    try:
        bob = Person(mw, clock, "bob")
        assert bob.act("/app-passwords/create", label="Outlook").status_code == 200
        notices(mw).wait(10)
        assert audit_rows(mw, "bob", "notify") == ["failed"]
        assert [a.label for a in mw.runtime.store.list_app_passwords(bob.user.id)] == ["Outlook"]
    finally:
        mw.runtime.close()


# -- the store ---------------------------------------------------------------------------------------------------
def test_session_records_on_both_engines(database_url: str) -> None:
    """Record, list and end sessions: only the user's own rows, never the kept one, each ended once."""
    clock = Clock()
    mw = make_middleware(database_url, clock)
    try:
        store = mw.runtime.store
        bob = mw.runtime.accounts.add("bob", actor="test", password=PASSWORD)
        alice = mw.runtime.accounts.add("alice", actor="test", password=PASSWORD)
        for owner, sid in ((bob, "b1"), (bob, "b2"), (bob, "b3"), (alice, "a1")):
            store.add_session_record(owner.id, sid, now=clock.now, expires_at=clock.now + 3600,
                                     client_ip="192.0.2.1", user_agent=FIREFOX, methods=("forms", "totp"))
            clock.advance(1)
        assert [r.sid for r in store.list_session_records(bob.id, now=clock.now)] == ["b3", "b2", "b1"]
        assert store.end_session_records(bob.id, "bob", keep_sid="b3", now=clock.now, sids=["a1"]) == []
        assert sorted(store.end_session_records(bob.id, "bob", keep_sid="b3", now=clock.now)) == ["b1", "b2"]
        assert store.end_session_records(bob.id, "bob", keep_sid="b3", now=clock.now) == []
        assert [r.sid for r in store.list_session_records(bob.id, now=clock.now)] == ["b3"]
        assert [r.sid for r in store.list_session_records(alice.id, now=clock.now)] == ["a1"]
        assert store.sign_in_revoked("bob", since=clock.now, session_id="b1")
        assert not store.sign_in_revoked("alice", since=clock.now, session_id="a1")
        assert store.list_session_records(bob.id, now=clock.now + 3600) == []  # past the absolute timeout
    finally:
        mw.runtime.close()
