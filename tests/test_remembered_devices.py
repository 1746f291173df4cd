""" "Remember this device" through the pages: off by default, a device skips the second factor (never the
password), and stops doing so after revoke-sessions (service and CLI), a password change, reset-mfa, removing a
method, forgetting it, and expiry; a device cookie of another user, tampered, or of another purpose is refused; the
Basic path never reads it; a blocked or locked user never gets past the password with it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner
from werkzeug.test import Client, TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.cli import admin
from mfa_middleware.config import ConfigError
from mfa_middleware.core.tokens import DeviceToken
from mfa_middleware.services.devices import device_name
from tests.support.mfa import (
    ENCRYPTION_KEY,
    SECRET_KEY,
    Browser,
    Clock,
    csrf_of,
    make_config,
    make_middleware,
)

PASSWORD = "correct horse battery"
DEVICE = "mfa_session_device"
DAY = 86400.0
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def build(url: str, clock: Clock, **methods: Any) -> MFAMiddleware:
    return make_middleware(url, clock, methods={"enabled": ["totp", "backup_codes"], **methods},
                           rules=[{"path": "/dav/*", "policy": "two_factor", "basic": True},
                                  {"path": "/*", "policy": "two_factor"}])


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = build(sqlite_url, clock, remember_device="14d")
    middleware.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    middleware.runtime.accounts.add("carol", actor="test", password=PASSWORD)
    yield middleware
    middleware.runtime.close()


@dataclass
class AgentBrowser(Browser):
    """A :class:`Browser` that sends a User-Agent header (remembered devices are named after it)."""

    user_agent: str = FIREFOX

    def get(self, path: str, **kw: Any) -> TestResponse:
        kw.setdefault("headers", {"User-Agent": self.user_agent})
        return super().get(path, **kw)

    def post(self, path: str, data: dict[str, str], **kw: Any) -> TestResponse:
        kw.setdefault("headers", {"User-Agent": self.user_agent})
        return super().post(path, data, **kw)


class Person:
    """One user with an authenticator app, signing in from as many browsers as the test needs."""

    def __init__(self, mw: MFAMiddleware, clock: Clock, name: str) -> None:
        self.mw, self.clock, self.name = mw, clock, name
        browser = Browser(mw)
        self.secret = browser.sign_in_and_enroll(name, PASSWORD, clock)

    def code(self) -> str:
        self.clock.advance(30)  # each code once: a new step for every sign-in
        return pyotp.TOTP(self.secret).at(self.clock.now)

    def browser(self, user_agent: str = FIREFOX) -> Browser:
        return AgentBrowser(self.mw, user_agent=user_agent)

    def sign_in(self, browser: Browser, *, remember: bool) -> Any:
        assert browser.login(self.name, PASSWORD, "/hello").headers["Location"] == "/_mfa/verify"
        page = browser.get("/_mfa/verify")
        form = {"code": self.code(), "csrf_token": csrf_of(page.text)}
        if remember:
            assert "Don't ask again on this device for 14 days" in page.text
            form["remember"] = "1"
        answer = browser.post("/_mfa/verify", form)
        assert answer.status_code == 303 and answer.headers["Location"] == "/hello", answer.text
        return answer

    def remembered(self, user_agent: str = FIREFOX) -> Browser:
        browser = self.browser(user_agent)
        answer = self.sign_in(browser, remember=True)
        header = next(h for h in answer.headers.getlist("Set-Cookie") if h.startswith(DEVICE + "="))
        assert "HttpOnly" in header and "SameSite=Lax" in header and f"Max-Age={int(14 * DAY)}" in header
        assert browser.cookie(DEVICE)
        return browser


def skips(browser: Browser, name: str = "bob") -> bool:
    """Whether the password alone now signs ``browser`` in (the remembered device stands in for the factor)."""
    browser.client.delete_cookie("mfa_session", domain="localhost")
    first = browser.login(name, PASSWORD, "/hello")
    assert first.status_code == 303, first.text
    if first.headers["Location"] == "/hello":
        return True
    assert first.headers["Location"] in ("/_mfa/verify", "/_mfa/enroll")
    return False


def events(mw: MFAMiddleware, username: str, event: str) -> list[str]:
    return [r.result for r in reversed(mw.runtime.store.list_audit(username=username, limit=1000)) if r.event == event]


def test_off_by_default(sqlite_url: str, clock: Clock) -> None:
    mw = build(sqlite_url, clock)
    try:
        mw.runtime.accounts.add("bob", actor="test", password=PASSWORD)
        bob = Person(mw, clock, "bob")
        browser = bob.browser()
        browser.login("bob", PASSWORD, "/hello")
        page = browser.get("/_mfa/verify")
        assert 'name="remember"' not in page.text
        answer = browser.post("/_mfa/verify", {"code": bob.code(), "remember": "1", "csrf_token": csrf_of(page.text)})
        assert answer.status_code == 303
        assert not any(h.startswith(DEVICE) for h in answer.headers.getlist("Set-Cookie"))
        assert not skips(browser)
    finally:
        mw.runtime.close()


def test_a_remembered_device_skips_the_second_factor_only(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    browser = bob.remembered()
    clock.advance(3600)
    assert skips(browser)
    assert browser.get("/hello").status_code == 200
    session = mw.runtime.codec.load_session(browser.cookie("mfa_session"))
    assert session is not None and session.methods == ("forms", "remembered_device") and session.level == 2
    # The password is still asked: a wrong one gets the login form, with or without the device.
    browser.client.delete_cookie("mfa_session", domain="localhost")
    assert browser.login("bob", "wrong password", "/hello").status_code == 401
    # A browser that did not tick the box is asked.
    plain = bob.browser()
    bob.sign_in(plain, remember=False)
    assert not plain.cookie(DEVICE)
    assert not skips(plain)
    assert events(mw, "bob", "device") == ["remembered", "used"]
    user = mw.runtime.store.get_user("bob")
    assert user is not None
    [row] = mw.runtime.devices.of_user(user, now=clock.now)
    assert row.name == "Firefox on Windows" and row.last_used_at is not None


def revoke_with_cli(mw: MFAMiddleware, tmp_path: Path) -> None:
    config = tmp_path / "mfa.toml"
    config.write_text(f'secret_keys = ["{SECRET_KEY}"]\nencryption_key = "{ENCRYPTION_KEY}"\n'
                      f'database = "{mw.runtime.config.database}"\n')
    result = CliRunner(env={"MFA_CONFIG": None}).invoke(admin, ["--config", str(config), "user", "revoke-sessions",
                                                                "bob"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def remove_a_method(mw: MFAMiddleware, clock: Clock, bob: Person) -> None:
    """Bob adds a second authenticator app, then removes it, from a browser with a fresh second factor."""
    browser = bob.browser()
    bob.sign_in(browser, remember=False)
    user = mw.runtime.store.get_user("bob")
    assert user is not None
    extra = mw.runtime.store.add_method(user.id, "totp", "Spare phone", None, now=clock.now, confirmed=True)
    page = browser.get("/_mfa/", follow_redirects=True)
    removed = browser.post("/_mfa/methods", {"action": "remove", "method_id": str(extra),
                                             "csrf_token": csrf_of(page.text)})
    assert removed.status_code == 303 and removed.headers["Location"] == "/_mfa/?done=removed", removed.text


ENDINGS: list[Any] = [
    pytest.param(lambda mw, clock, bob, tmp: mw.runtime.accounts.revoke_sessions("bob", actor="t"),
                 id="revoke-sessions"),
    pytest.param(lambda mw, clock, bob, tmp: revoke_with_cli(mw, tmp), id="cli-revoke-sessions"),
    pytest.param(lambda mw, clock, bob, tmp: mw.runtime.accounts.set_password("bob", PASSWORD, actor="t"),
                 id="set-password"),
    pytest.param(lambda mw, clock, bob, tmp: remove_a_method(mw, clock, bob), id="method-removed"),
    pytest.param(lambda mw, clock, bob, tmp: clock.advance(14 * DAY + 1), id="expired"),
    pytest.param(lambda mw, clock, bob, tmp: mw.runtime.store.add_revocation(
        "bob", now=clock.now, session_id=f"dev:{mw.runtime.store.list_devices(1, now=clock.now)[0].id}"),
        id="device-id-revoked"),
]


@pytest.mark.parametrize("end", ENDINGS)
def test_the_device_stops_skipping(mw: MFAMiddleware, clock: Clock, tmp_path: Path,
                                   end: Callable[[MFAMiddleware, Clock, Person, Path], None]) -> None:
    bob = Person(mw, clock, "bob")
    browser = bob.remembered()
    assert skips(browser)
    clock.advance(60)
    end(mw, clock, bob, tmp_path)
    clock.advance(1)
    assert not skips(browser)
    assert not browser.cookie(DEVICE)  # the refused cookie is cleared


def test_reset_mfa_ends_it_even_after_enrolling_again(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    browser = bob.remembered()
    stolen = browser.cookie(DEVICE)
    assert stolen and skips(browser)
    mw.runtime.accounts.reset_mfa("bob", actor="helpdesk")
    clock.advance(60)
    again = Person(mw, clock, "bob")  # re-registers a new authenticator app
    replay = again.browser()
    replay.client.set_cookie(DEVICE, stolen, domain="localhost")
    assert not skips(replay)


def test_revocation_rows_pruned_do_not_bring_a_device_back(mw: MFAMiddleware, clock: Clock) -> None:
    """Revocation rows are kept only as long as the longest session; devices live longer. A user-wide revocation
    deletes the device rows themselves, so pruning the revocation later changes nothing."""
    bob = Person(mw, clock, "bob")
    browser = bob.remembered()
    mw.runtime.accounts.revoke_sessions("bob", actor="t")
    clock.advance(2 * DAY)
    mw.runtime.store.prune_revocations(clock.now)
    assert not skips(browser)


def forged(mw: MFAMiddleware, genuine: str, user_id: int) -> dict[str, str]:
    codec = mw.runtime.codec
    device = codec.load_device(genuine)
    assert device is not None
    other = DeviceToken(user_id=user_id, username="carol", device_id=device.device_id, created_at=device.created_at)
    head, _, sig = genuine.rpartition(".")
    return {
        "another-users-cookie": "carol",
        "tampered-signature": head + "." + ("A" if sig[0] != "A" else "B") + sig[1:],
        "renamed-to-another-user": codec.dump_device(other),
        "session-salt": str(codec.session_serializer.dumps(device.to_payload())),
        "pending-salt": str(codec.pending_serializer.dumps(device.to_payload())),
        "csrf-salt": str(codec.csrf_serializer.dumps(device.to_payload())),
        "unsigned-payload": head,
        "other-users-name-same-id": str(codec.dump_device(DeviceToken(
            user_id=device.user_id, username="carol", device_id=device.device_id, created_at=device.created_at))),
        "other-time": str(codec.dump_device(DeviceToken(
            user_id=device.user_id, username="bob", device_id=device.device_id, created_at=device.created_at - 1))),
        "made-up-device": str(codec.dump_device(DeviceToken(
            user_id=device.user_id, username="bob", device_id="x" * 24, created_at=device.created_at))),
    }


@pytest.mark.parametrize("kind", ["another-users-cookie", "tampered-signature", "renamed-to-another-user",
                                  "session-salt", "pending-salt", "csrf-salt", "unsigned-payload",
                                  "other-users-name-same-id", "other-time", "made-up-device"])
def test_a_foreign_or_forged_device_cookie_is_refused(mw: MFAMiddleware, clock: Clock, kind: str) -> None:
    bob = Person(mw, clock, "bob")
    carol = Person(mw, clock, "carol")
    bob_cookie = bob.remembered().cookie(DEVICE)
    carol_cookie = carol.remembered().cookie(DEVICE)
    assert bob_cookie and carol_cookie
    carol_user = mw.runtime.store.get_user("carol")
    assert carol_user is not None
    value = forged(mw, bob_cookie, carol_user.id)[kind]
    if kind == "another-users-cookie":
        value = carol_cookie  # Carol's own device, presented for Bob
    attacker = bob.browser()
    attacker.client.set_cookie(DEVICE, value, domain="localhost")
    assert not skips(attacker, "bob")
    # Bob's and Carol's real devices still work.
    for name, cookie in (("bob", bob_cookie), ("carol", carol_cookie)):
        real = bob.browser()
        real.client.set_cookie(DEVICE, cookie, domain="localhost")
        assert skips(real, name)


def test_forgetting_one_device_keeps_the_others(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    laptop = bob.remembered(FIREFOX)
    phone = bob.remembered("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                           "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
    page = phone.get("/_mfa/", follow_redirects=True)
    assert "Firefox on Windows" in page.text and "Safari on iPhone" in page.text
    user = mw.runtime.store.get_user("bob")
    assert user is not None
    firefox = next(d for d in mw.runtime.devices.of_user(user, now=clock.now) if d.name == "Firefox on Windows")
    refused = phone.post("/_mfa/methods", {"action": "forget", "device_id": str(firefox.id), "csrf_token": "x"})
    assert refused.status_code == 403  # CSRF
    done = phone.post("/_mfa/methods", {"action": "forget", "device_id": str(firefox.id),
                                        "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303
    listed = phone.get("/_mfa/", follow_redirects=True).text.split('id="devices-h"')[1].split("</section>")[0]
    assert "Firefox on Windows" not in listed
    assert not skips(laptop)
    assert skips(phone)
    assert "forgotten" in events(mw, "bob", "device")


def test_a_device_cannot_forget_another_users_device(mw: MFAMiddleware, clock: Clock) -> None:
    bob, carol = Person(mw, clock, "bob"), Person(mw, clock, "carol")
    bob_browser = bob.remembered()
    carol_browser = carol.remembered()
    bob_user = mw.runtime.store.get_user("bob")
    assert bob_user is not None
    [bobs] = mw.runtime.devices.of_user(bob_user, now=clock.now)
    page = carol_browser.get("/_mfa/", follow_redirects=True)
    answer = carol_browser.post("/_mfa/methods", {"action": "forget", "device_id": str(bobs.id),
                                                  "csrf_token": csrf_of(page.text)})
    assert answer.status_code == 400
    assert skips(bob_browser)


def test_never_on_the_basic_path(mw: MFAMiddleware, clock: Clock) -> None:
    from base64 import b64encode

    bob = Person(mw, clock, "bob")
    browser = bob.remembered()
    credential = "Basic " + b64encode(f"bob:{PASSWORD}".encode()).decode()
    cookie = f"{DEVICE}={browser.cookie(DEVICE)}"
    for headers in ({"Authorization": credential, "Cookie": cookie}, {"Cookie": cookie}):
        answer = Client(mw, use_cookies=False).get("/dav/x", headers=headers, base_url="http://localhost")
        assert answer.status_code == 401, answer.text  # enforced: app passwords only; no device on this path
    assert events(mw, "bob", "device") == ["remembered"]


def test_never_for_a_locked_or_blocked_user(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    browser = bob.remembered()
    user = mw.runtime.store.get_user("bob")
    assert user is not None
    for _ in range(mw.runtime.config.lockout.max_failures):
        mw.runtime.lockout.fail(user, clock.now)
    browser.client.delete_cookie("mfa_session", domain="localhost")
    assert browser.login("bob", PASSWORD, "/hello").status_code == 401  # the password is not even checked
    mw.runtime.accounts.unlock("bob", actor="t")
    assert skips(browser)
    mw.runtime.accounts.block("bob", actor="t", reason="left the company")
    browser.client.delete_cookie("mfa_session", domain="localhost")
    assert browser.login("bob", PASSWORD, "/hello").status_code == 403
    mw.runtime.accounts.unblock("bob", actor="t")
    assert not skips(browser)  # the block ended the device


def test_a_remembered_device_is_not_a_fresh_second_factor(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    browser = bob.remembered()
    assert skips(browser)
    page = browser.get("/_mfa/", follow_redirects=True)
    assert "verify your identity again" in page.text
    user = mw.runtime.store.get_user("bob")
    assert user is not None
    [method] = [m for m in mw.runtime.store.list_methods(user.id) if m.kind == "totp"]
    refused = browser.post("/_mfa/methods", {"action": "rename", "method_id": str(method.id), "label": "x",
                                             "csrf_token": csrf_of(page.text)})
    assert refused.status_code == 403 and "Verify again first" in refused.text
    assert browser.get("/_mfa/methods/add").status_code == 403
    assert browser.get("/_mfa/backup-codes").status_code == 403
    # Verifying again (a real second factor) opens the changes.
    step = browser.get("/_mfa/step-up?fresh=1&next=/_mfa/")
    assert step.status_code == 303 and step.headers["Location"] == "/_mfa/verify"
    page = browser.get("/_mfa/verify")
    done = browser.post("/_mfa/verify", {"code": bob.code(), "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["Location"] == "/_mfa/"
    assert browser.get("/_mfa/methods/add").status_code == 200


@pytest.mark.parametrize(("value", "message"), [
    pytest.param("400d", "must be between 1h and 365d", id="over-a-year"),
    pytest.param("10m", "must be between 1h and 365d", id="too-short"),
    pytest.param("soon", "expected a duration", id="not-a-duration"),
    pytest.param(True, "give a duration", id="true"),
    pytest.param(["14d"], "expected a string", id="a-list"),
])
def test_remember_device_config_errors_name_the_key(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=r"methods\.remember_device") as caught:
        make_config("sqlite://", methods={"remember_device": value})
    assert message in str(caught.value)


@pytest.mark.parametrize(("value", "seconds"), [
    pytest.param("14d", 14 * DAY, id="14d"), pytest.param("365d", 365 * DAY, id="365d"),
    pytest.param(False, 0.0, id="false"), pytest.param("12h", 12 * 3600.0, id="12h"),
])
def test_remember_device_config(value: Any, seconds: float) -> None:
    assert make_config("sqlite://", methods={"remember_device": value}).methods.remember_device == seconds


@pytest.mark.parametrize(("agent", "name"), [
    pytest.param(FIREFOX, "Firefox on Windows", id="firefox-windows"),
    pytest.param("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/126.0 Safari/537.36 Edg/126.0", "Edge on macOS", id="edge-mac"),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 "
                 "Safari/537.36", "Chrome on Linux", id="chrome-linux"),
    pytest.param("", "Unknown browser", id="empty"),
    pytest.param("curl/8.0 <script>", "curl/8.0 script", id="odd"),
])
def test_device_names(agent: str, name: str) -> None:
    assert device_name(agent) == name


def test_the_cookie_never_appears_in_audit_rows(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Person(mw, clock, "bob")
    browser = bob.remembered()
    skips(browser)
    token = browser.cookie(DEVICE)
    device = mw.runtime.codec.load_device(token)
    assert token and device is not None
    rows = repr(mw.runtime.store.list_audit(username="bob", limit=1000))
    assert device.device_id not in rows and token not in rows
    assert re.fullmatch(r"[0-9a-f]{64}", mw.runtime.store.list_devices(device.user_id, now=clock.now)[0].device_id)
