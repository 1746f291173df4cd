"""Security info in Debian's Chromium: every action a person takes on ``/_mfa/settings``, the step-up prompt, axe-core
on each page state (no serious or critical violation), and screenshots at desktop and phone width under
``build/screenshots/``. One server and one browser for the module; the tests run in order as one person's visit."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.demo import demo_app
from tests.e2e.test_pwa_authenticator import assert_accessible
from tests.support.browser import sign_in
from tests.support.mfa import FAST_HASHER, make_config
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.browser

USERNAME = "erin"
PASSWORD = "correct horse battery staple"
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}


class Shifted:
    """Real time plus an offset the test moves forward (to let the step-up window pass)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Site:
    def __init__(self, base: str, mw: MFAMiddleware, clock: Shifted) -> None:
        self.base, self.mw, self.clock = base, mw, clock
        self.secret = ""
        self.last_step = 0

    def code(self) -> str:
        """A code for a step not used before (one acceptance per step)."""
        totp = pyotp.TOTP(self.secret)
        step = max(int(self.clock() // 30), self.last_step + 1)
        if step > int(self.clock() // 30):
            self.clock.offset += 30
        self.last_step = step
        return totp.at(step * 30)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path_factory.mktemp('settings') / 'mfa.db'}"
    clock = Shifted()
    mw = MFAMiddleware(demo_app, make_config(url, methods={"enabled": ["totp", "backup_codes"],
                                                           "max_authenticators": 3, "remember_device": "30d"}),
                       password_hasher=FAST_HASHER, clock=clock)
    try:
        mw.runtime.store.upgrade()
        mw.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        with serve_wsgi(mw, host="localhost") as base:
            yield Site(base, mw, clock)
    finally:
        mw.runtime.close()


@pytest.fixture(scope="module")
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def me(context: BrowserContext, site: Site) -> Page:
    """The person's tab, signed in with an authenticator app set up at the first sign-in."""
    from playwright.sync_api import expect

    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base)
    page = context.new_page()
    sign_in(page, site.base, USERNAME, PASSWORD)
    page.get_by_role("button", name="Set it up now").click()
    site.secret = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code").fill(site.code())
    page.get_by_role("button", name="Verify and finish").click()
    expect(page.get_by_role("heading", name="Backup codes")).to_be_visible()
    page.goto(site.base + "/_mfa/settings")
    expect(page.get_by_role("heading", name="Security info")).to_be_visible()
    return page


def capture(page: Page, name: str) -> None:
    """axe on the page as it is, then a full-page screenshot at each width."""
    assert_accessible(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SHOTS / f"settings-{name}-{size}.png"), full_page=True)
    page.set_viewport_size({"width": SIZES["desktop"][0], "height": SIZES["desktop"][1]})


def settings(page: Page, site: Site) -> None:
    page.goto(site.base + "/_mfa/settings")


def test_the_page_in_words_and_local_time(me: Page, site: Site) -> None:
    from playwright.sync_api import expect

    body = me.locator("body")
    expect(body).to_contain_text("Authenticator app")
    expect(body).not_to_contain_text("forms + totp")
    stamp = me.locator("#methods time").first
    # The script rewrote the UTC fallback in the browser's own zone and kept it as the title.
    expect(stamp).to_have_attribute("title", re.compile(r"UTC$"))
    assert "UTC" not in stamp.inner_text()
    expect(me.get_by_role("link", name="Back to the app")).to_have_attribute("href", "/")
    capture(me, "overview")


def test_rename_default_and_remove_a_method(me: Page, site: Site) -> None:
    from playwright.sync_api import expect

    user = site.mw.runtime.store.get_user(USERNAME)
    assert user is not None
    site.mw.runtime.store.add_method(user.id, "totp", "Authenticator app", None, now=site.clock(), confirmed=True)
    settings(me, site)
    me.get_by_label("New name for Authenticator app").last.fill("Work phone")
    me.get_by_role("button", name="Rename").last.click()
    expect(me.get_by_role("status")).to_contain_text("The method was renamed.")
    me.get_by_role("button", name="Make Work phone the default").click()
    expect(me.get_by_role("status")).to_contain_text("Your default method was changed")
    capture(me, "methods-changed")
    me.get_by_role("link", name="Remove Work phone").click()
    expect(me.get_by_role("heading", name="Remove a sign-in method")).to_be_visible()
    capture(me, "remove-confirm")
    me.get_by_role("button", name="Remove method").click()
    expect(me.get_by_role("status")).to_contain_text("The method was removed.")
    expect(me.locator("#methods")).not_to_contain_text("Work phone")


def test_app_password_created_copied_listed_and_revoked(me: Page, site: Site) -> None:
    from playwright.sync_api import expect

    settings(me, site)
    me.get_by_label("Device name").fill("Outlook on my laptop")
    me.get_by_role("button", name="Create app password").click()
    expect(me.get_by_role("heading", name="Your new app password")).to_be_visible()
    secret = me.locator("#app-password").inner_text()
    assert re.fullmatch(r"[a-z]{4}( [a-z]{4}){3}", secret), secret
    me.get_by_role("button", name="Copy").click()
    expect(me.locator(".settings-copied")).to_have_text("Copied.")
    assert me.evaluate("navigator.clipboard.readText()") == secret
    capture(me, "app-password-created")
    me.get_by_role("link", name="Done").click()
    expect(me.locator("#app-passwords")).to_contain_text("Outlook on my laptop")
    expect(me.locator("body")).not_to_contain_text(secret)
    me.get_by_label("Device name").fill("Outlook on my laptop")
    me.get_by_role("button", name="Create app password").click()
    expect(me.get_by_role("alert")).to_have_text(re.compile("You already have an app password named "
                                                            "“Outlook on my laptop”"))
    expect(me.get_by_label("Device name")).to_be_focused()
    capture(me, "app-password-duplicate")
    me.get_by_role("link", name="Revoke Outlook on my laptop").click()
    capture(me, "revoke-confirm")
    me.get_by_role("button", name="Revoke app password").click()
    expect(me.get_by_role("status")).to_contain_text("The app password was revoked.")
    expect(me.locator("#app-passwords")).to_contain_text("No app passwords yet.")


def test_backup_codes_regenerated_and_shown_once(me: Page, site: Site) -> None:
    from playwright.sync_api import expect

    settings(me, site)
    me.get_by_role("link", name="Make new backup codes").click()
    capture(me, "backup-codes-confirm")
    me.get_by_role("button", name="Make new codes").click()
    expect(me.locator("#backup-code-list code")).to_have_count(10)  # the click does not wait for the new page
    codes = me.locator("#backup-code-list code").all_inner_texts()
    assert len(codes) == 10
    capture(me, "backup-codes-shown")
    me.get_by_role("link", name="Done").click()
    expect(me.locator("#backup-remaining")).to_have_text("10 unused codes left.")


def test_other_sessions_and_remembered_devices(me: Page, site: Site, browser: Browser) -> None:
    from playwright.sync_api import expect

    other = browser.new_context()
    try:
        phone = other.new_page()
        sign_in(phone, site.base, USERNAME, PASSWORD)
        phone.get_by_label("Code").fill(site.code())
        phone.get_by_label(re.compile("Don't ask again")).check()
        phone.get_by_role("button", name="Verify", exact=True).click()
        expect(phone).to_have_url(site.base + "/")
        settings(me, site)
        expect(me.locator("#sessions li")).to_have_count(2)
        expect(me.locator("#devices")).to_contain_text("Chrom")
        capture(me, "sessions-and-devices")
        me.get_by_role("button", name="Sign out all other sessions").click()
        expect(me.get_by_role("status")).to_contain_text("Your other sessions were signed out.")
        expect(me.locator("#sessions li")).to_have_count(1)
        phone.goto(site.base + "/")
        expect(phone.get_by_label("Password")).to_be_visible()  # back at the sign-in page
        me.get_by_role("button", name=re.compile("^Forget ")).first.click()
        expect(me.get_by_role("status")).to_contain_text("The device was forgotten.")
        expect(me.locator("#devices")).to_contain_text("No remembered devices.")
        capture(me, "after-sign-out-others")
    finally:
        other.close()


def test_step_up_prompt_then_back_to_the_same_place(me: Page, site: Site) -> None:
    from playwright.sync_api import expect

    user = site.mw.runtime.store.get_user(USERNAME)
    assert user is not None
    site.mw.runtime.store.add_method(user.id, "totp", "Spare phone", None, now=site.clock(), confirmed=True)
    site.clock.offset += 11 * 60  # the second factor is no longer recent
    settings(me, site)
    expect(me.locator("#verify-again")).to_be_visible()
    capture(me, "stale")
    me.get_by_role("link", name="Remove Spare phone").click()
    expect(me.get_by_role("heading", name="Verify your identity again")).to_be_visible()
    capture(me, "step-up-prompt")
    me.get_by_role("link", name="Verify your identity").click()
    me.get_by_label("Code").fill(site.code())
    me.get_by_role("button", name="Verify", exact=True).click()
    expect(me.get_by_role("heading", name="Remove a sign-in method")).to_be_visible()
    expect(me.locator("body")).to_contain_text("Remove “Spare phone”")
    me.get_by_role("button", name="Remove method").click()
    expect(me.get_by_role("status")).to_contain_text("The method was removed.")
    expect(me.locator("#activity")).to_contain_text("Method removed: Spare phone")
    capture(me, "activity")
