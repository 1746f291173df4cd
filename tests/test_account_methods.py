"""Managing methods on the security info page (``/_mfa/``): add, remove, rename, change the default, each after a
fresh second factor and with CSRF; the last method of an enforced user stays, also under concurrent removals."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.store import StoreUnavailable
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware, secret_of

PASSWORD = "correct horse battery"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = make_middleware(sqlite_url, clock, methods={"enabled": ["totp", "backup_codes"],
                                                             "max_authenticators": 2})
    middleware.runtime.accounts.add("bob", actor="test", password=PASSWORD)
    yield middleware
    middleware.runtime.close()


class Bob:
    def __init__(self, mw: MFAMiddleware, clock: Clock) -> None:
        self.mw, self.clock = mw, clock
        self.browser = Browser(mw)
        self.secret = self.browser.sign_in_and_enroll("bob", PASSWORD, clock)

    def code(self, secret: str | None = None) -> str:
        self.clock.advance(30)
        return pyotp.TOTP(secret or self.secret).at(self.clock.now)

    def account(self) -> str:
        page = self.browser.get("/_mfa/", follow_redirects=True)
        assert page.status_code == 200
        return page.text

    def post(self, action: str, **form: str) -> tuple[int, str]:
        answer = self.browser.post("/_mfa/methods", {"action": action, "csrf_token": csrf_of(self.account()),
                                                     **form})
        return answer.status_code, answer.headers.get("Location", "") or answer.text

    def add_totp(self) -> tuple[int, str]:
        """Add a second authenticator app; returns (method id, its secret)."""
        choose = self.browser.get("/_mfa/methods/add")
        assert choose.status_code == 200, choose.text
        started = self.browser.post("/_mfa/methods/add", {"action": "start", "method": "totp",
                                                          "csrf_token": csrf_of(choose.text)})
        assert started.status_code == 303, started.text
        location = started.headers["Location"]
        page = self.browser.get(location)
        assert f'action="{location}"' in page.text
        secret = secret_of(page.text)
        wrong = self.browser.post(location, {"action": "confirm", "code": "000000", "csrf_token": csrf_of(page.text)})
        assert wrong.status_code == 401
        done = self.browser.post(location, {"action": "confirm", "code": self.code(secret),
                                            "csrf_token": csrf_of(page.text)})
        assert done.status_code == 303 and done.headers["Location"] == "/_mfa/?done=added", done.text
        return int(location.rsplit("=", 1)[1]), secret

    def methods(self) -> list[tuple[int, str, str, bool]]:
        user = self.mw.runtime.store.get_user("bob")
        assert user is not None
        return [(m.id, m.kind, m.label, m.is_default) for m in self.mw.runtime.store.list_methods(user.id)]


def audit(mw: MFAMiddleware, event: str) -> list[str]:
    return [r.result for r in reversed(mw.runtime.store.list_audit(username="bob", limit=1000)) if r.event == event]


def test_add_rename_default_remove(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Bob(mw, clock)
    first = bob.methods()[0][0]
    assert "Add a method" in bob.account()
    second, secret = bob.add_totp()
    assert [(k, d) for _, k, _, d in bob.methods()] == [("totp", True), ("totp", False)]
    assert bob.post("rename", method_id=str(second), label="  Spare   phone ") == (303, "/_mfa/?done=renamed")
    assert bob.post("default", method_id=str(second)) == (303, "/_mfa/?done=default")
    assert [(i, label, d) for i, _, label, d in bob.methods()] == [(first, "Authenticator app", False),
                                                                  (second, "Spare phone", True)]
    page = bob.account()
    assert "Spare phone" in page and "Default</span>" in page
    # The next sign-in starts with the new default.
    other = Browser(mw)
    other.login("bob", PASSWORD, "/hello")
    verify = other.get("/_mfa/verify")
    assert f'name="method_id" value="{second}"' in verify.text
    assert other.post("/_mfa/verify", {"code": bob.code(secret), "method_id": str(second),
                                       "csrf_token": csrf_of(verify.text)}).status_code == 303
    # Removing the default makes the other one the default.
    assert bob.post("remove", method_id=str(second)) == (303, "/_mfa/?done=removed")
    assert [(i, d) for i, _, _, d in bob.methods()] == [(first, True)]
    assert audit(mw, "method") == ["renamed", "default", "removed"]
    assert "success" in audit(mw, "enroll")


def test_max_per_user(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Bob(mw, clock)
    bob.add_totp()
    choose = bob.browser.get("/_mfa/methods/add")
    refused = bob.browser.post("/_mfa/methods/add", {"action": "start", "method": "totp",
                                                     "csrf_token": csrf_of(choose.text)})
    assert refused.status_code == 400 and "the most allowed" in refused.text


@pytest.mark.parametrize("with_backup_codes", [pytest.param(False, id="alone"),
                                               pytest.param(True, id="with-backup-codes")])
def test_the_last_method_of_an_enforced_user_stays(mw: MFAMiddleware, clock: Clock, with_backup_codes: bool) -> None:
    bob = Bob(mw, clock)
    if with_backup_codes:
        offer = bob.browser.get("/_mfa/backup-codes")
        assert bob.browser.post("/_mfa/backup-codes", {"csrf_token": csrf_of(offer.text)}).status_code == 200
        assert "unused codes left" in bob.account()
    [totp] = [i for i, kind, _, _ in bob.methods() if kind == "totp"]
    status, text = bob.post("remove", method_id=str(totp))
    assert status == 409 and "only sign-in method" in text
    assert totp in [i for i, _, _, _ in bob.methods()]
    assert audit(mw, "method") == ["refused"]


def test_a_user_who_is_not_enforced_may_remove_the_last(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Bob(mw, clock)
    mw.runtime.accounts.set_state("bob", "disabled", actor="t")
    bob.browser = Browser(mw)
    assert bob.browser.login("bob", PASSWORD, "/hello").headers["Location"] == "/hello"  # exempt now
    assert bob.browser.get("/_mfa/step-up?fresh=1&next=/_mfa/").headers["Location"] == "/_mfa/verify"
    page = bob.browser.get("/_mfa/verify")
    assert bob.browser.post("/_mfa/verify", {"code": bob.code(), "csrf_token": csrf_of(page.text)}).status_code == 303
    [totp] = [i for i, _, _, _ in bob.methods()]
    assert bob.post("remove", method_id=str(totp)) == (303, "/_mfa/?done=removed")
    assert bob.methods() == []


@pytest.mark.parametrize("path", [pytest.param("/_mfa/methods/add", id="add"),
                                  pytest.param("/_mfa/backup-codes", id="backup-codes")])
def test_changes_need_a_fresh_second_factor(mw: MFAMiddleware, clock: Clock, path: str) -> None:
    bob = Bob(mw, clock)
    page = bob.account()
    [totp] = [i for i, _, _, _ in bob.methods()]
    clock.advance(11 * 60)
    assert "verify your identity again" in bob.account()
    refused = bob.browser.get(path)
    assert refused.status_code == 403 and "Verify again" in refused.text
    for action in ("remove", "rename", "default"):
        answer = bob.browser.post("/_mfa/methods", {"action": action, "method_id": str(totp), "label": "x",
                                                    "csrf_token": csrf_of(page)})
        assert answer.status_code == 403, action
    step = bob.browser.get("/_mfa/step-up?fresh=1&next=/_mfa/")
    assert step.headers["Location"] == "/_mfa/verify"
    verify = bob.browser.get("/_mfa/verify")
    assert bob.browser.post("/_mfa/verify", {"code": bob.code(), "csrf_token": csrf_of(verify.text)}).headers[
        "Location"] == "/_mfa/"
    assert bob.browser.get(path).status_code == 200
    assert "Add a method" in bob.account()


def test_a_fresh_session_does_not_step_up_again(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Bob(mw, clock)
    assert bob.browser.get("/_mfa/step-up?fresh=1&next=/_mfa/").headers["Location"] == "/_mfa/"


def test_a_revoked_session_cannot_verify_again(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Bob(mw, clock)
    clock.advance(11 * 60)
    mw.runtime.accounts.revoke_sessions("bob", actor="t")  # not yet in this process's cache...
    step = bob.browser.get("/_mfa/step-up?fresh=1&next=/_mfa/")
    assert step.status_code in (303, 401) and step.headers.get("Location", "") != "/_mfa/verify"


@pytest.mark.parametrize("action", ["remove", "rename", "default", "forget"])
def test_every_change_needs_csrf(mw: MFAMiddleware, clock: Clock, action: str) -> None:
    bob = Bob(mw, clock)
    [totp] = [i for i, _, _, _ in bob.methods()]
    for token in ("", "forged", csrf_of(Browser(mw).get("/_mfa/login").text)):
        answer = bob.browser.post("/_mfa/methods", {"action": action, "method_id": str(totp), "device_id": "1",
                                                    "label": "x", "csrf_token": token})
        assert answer.status_code == 403
    assert bob.methods()[0][2] == "Authenticator app" and audit(mw, "method") == []


def test_another_users_method_is_not_in_the_list(mw: MFAMiddleware, clock: Clock) -> None:
    mw.runtime.accounts.add("carol", actor="test", password=PASSWORD)
    carol_browser = Browser(mw)
    carol_browser.sign_in_and_enroll("carol", PASSWORD, clock)
    carol = mw.runtime.store.get_user("carol")
    assert carol is not None
    [theirs] = mw.runtime.store.list_methods(carol.id)
    bob = Bob(mw, clock)
    for action in ("remove", "rename", "default"):
        assert bob.post(action, method_id=str(theirs.id), label="mine")[0] == 400
    assert mw.runtime.store.list_methods(carol.id) == [theirs]


def test_enrollment_of_another_user_is_not_shown(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Bob(mw, clock)
    mw.runtime.accounts.add("carol", actor="test", password=PASSWORD)
    carol = mw.runtime.store.get_user("carol")
    assert carol is not None
    pending = mw.runtime.store.add_method(carol.id, "totp", "Authenticator app", b"x", now=clock.now)
    shown = bob.browser.get(f"/_mfa/methods/add?id={pending}")
    assert shown.status_code == 303 and shown.headers["Location"] == "/_mfa/methods/add"


def test_concurrent_removals_cannot_remove_the_last_method(database_url: str, clock: Clock) -> None:
    """Two removals at once of an enforced user's two methods (plus backup codes, which do not count): at most one
    passes, whatever the engine, and the user keeps a method."""
    mw = make_middleware(database_url, clock, methods={"enabled": ["totp", "backup_codes"]})
    try:
        store = mw.runtime.store
        user = mw.runtime.accounts.add("bob", actor="test", password=PASSWORD, state="enforced")
        for _ in range(10):
            ids = [store.add_method(user.id, "totp", "App", None, now=clock.now, confirmed=True) for _ in range(2)]
            store.add_method(user.id, "backup_codes", "Backup codes", None, now=clock.now, confirmed=True)
            barrier = threading.Barrier(2)
            results: list[bool | str] = []

            def remove(method_id: int, barrier: threading.Barrier = barrier,
                       results: list[bool | str] = results) -> None:
                barrier.wait()
                try:
                    results.append(store.delete_method(user.id, method_id, keep_one=True, counted_kinds=("totp",)))
                except StoreUnavailable:  # SQLite's lock held too long: refused, never both
                    results.append("unavailable")

            threads = [threading.Thread(target=remove, args=(i,)) for i in ids]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results.count(True) <= 1, results
            left = [m for m in store.list_methods(user.id) if m.kind == "totp"]
            assert len(left) >= 1
            assert store.delete_methods(user.id) >= 1
    finally:
        mw.runtime.close()


def test_backup_codes_link_with_the_count(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Bob(mw, clock)
    assert "You have no backup codes." in bob.account()
    offer = bob.browser.get("/_mfa/backup-codes")
    bob.browser.post("/_mfa/backup-codes", {"csrf_token": csrf_of(offer.text)})
    assert "10 unused codes left" in bob.account()


def test_a_bypass_session_must_verify_before_changing_methods(mw: MFAMiddleware, clock: Clock) -> None:
    """A one-time bypass stands in for the second factor at sign-in only: whoever talked the helpdesk into it must
    not also be able to add their own authenticator or print backup codes on the strength of it."""
    Bob(mw, clock)  # enrolled
    mw.runtime.accounts.bypass("bob", actor="helpdesk", seconds=300, reason="lost phone")
    browser = Browser(mw)
    assert browser.login("bob", PASSWORD).status_code == 303
    assert browser.get("/").status_code == 200  # the bypass let the sign-in through...
    for path in ("/_mfa/methods/add", "/_mfa/backup-codes"):
        refused = browser.get(path)  # ...but changing methods asks for a real second factor
        assert refused.status_code == 403 and "Verify again" in refused.text, path
