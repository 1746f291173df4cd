"""The admin portal in Chromium: an administrator's actions (bulk state change with "select all", user actions with
their confirmation, the step-up prompt once the second factor is old, the CSV import preview, audit and usage), the
refusals (a non-admin, an app password sent as Basic credentials, a remembered device alone), axe-core on every
admin page, and screenshots at desktop and phone width under ``build/screenshots/``.

Debian's Chromium (Playwright) against the demo app behind the middleware, served by werkzeug on ``localhost``; the
middleware's clock is a test clock that starts at the real time, so the test can make a second factor old.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.demo import demo_app
from mfa_middleware.pages.app import FRESH_MFA
from tests.support.browser import sign_in, sign_out
from tests.support.components import require_component
from tests.support.mfa import FAST_HASHER, Clock, make_config
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
WIDTHS: dict[str, ViewportSize] = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@dataclass
class Site:
    base: str
    mw: MFAMiddleware
    clock: Clock


@pytest.fixture
def site(sqlite_url: str) -> Iterator[Site]:
    import time

    clock = Clock(float(int(time.time()) // 30 * 30))
    mw = MFAMiddleware(demo_app, make_config(sqlite_url, methods={"enabled": ["totp"], "remember_device": "14d"},
                                             basic={"admins_may_create": True}),
                       clock=clock, password_hasher=FAST_HASHER)
    try:
        mw.runtime.store.upgrade()
        rt = mw.runtime
        rt.accounts.add("root", actor="test", password=PASSWORD, is_admin=True)
        rt.accounts.add("bob", actor="test", password=PASSWORD, email="bob@example.com",
                        display_name="Bob <b>Builder</b>")
        rt.accounts.add("carol", actor="test", password=PASSWORD, state="disabled")
        with serve_wsgi(mw, host="localhost") as base:
            yield Site(base, mw, clock)
    finally:
        mw.runtime.close()


def enroll(page: Page, site: Site, username: str) -> str:
    """Sign in for the first time and set up the authenticator app; returns its key."""
    from playwright.sync_api import expect

    sign_in(page, site.base, username, PASSWORD)
    page.get_by_role("button", name="Set it up now").click()
    key = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code").fill(pyotp.TOTP(key).at(site.clock.now))
    page.get_by_role("button", name="Verify and finish").click()
    expect(page).to_have_url(site.base + "/")
    return key


def verify(page: Page, site: Site, key: str, *, remember: bool = False) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    site.clock.advance(30)
    page.get_by_label("Code").fill(pyotp.TOTP(key).at(site.clock.now))
    if remember:
        page.get_by_label("Don't ask again on this device for 14 days").check()
    page.get_by_role("button", name="Verify", exact=True).click()


def confirm(page: Page, button: str) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name=button, exact=True).click()
    expect(page.get_by_role("heading", name="Change applied").or_(
        page.get_by_role("heading", name="Changes applied"))).to_be_visible()


def assert_accessible(page: Page) -> None:
    """axe-core finds no serious or critical violation on the page as it is now."""
    try:
        from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
    except ImportError as error:
        require_component("axe-playwright-python", f"cannot import it ({error})")
    results = Axe().run(page)
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in results.response["violations"]
           if v["impact"] in ("serious", "critical")]
    assert bad == [], (page.url, bad)


def test_an_administrator_manages_users(page: Page, site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    key = enroll(page, site, "root")
    page.goto(site.base + "/_mfa/admin")
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    expect(page.get_by_text("Bob <b>Builder</b>")).to_be_visible()  # shown as text

    # Select all (a few lines of JavaScript), then enforce every user on the page.
    page.get_by_label("Select all users on this page").check()
    expect(page.get_by_label("Select carol")).to_be_checked()
    page.get_by_label("Change to").select_option("enforced")
    page.get_by_role("button", name="Review change").click()
    expect(page.get_by_role("heading", name="Enforce 3 user(s)")).to_be_visible()
    confirm(page, "Enforce")
    assert site.mw.runtime.store.get_user("carol").state == "enforced"  # type: ignore[union-attr]

    # Search, open a user, block with a reason.
    page.goto(site.base + "/_mfa/admin")
    page.get_by_label("Name or email").fill("bob@")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_text("1 user match.")).to_be_visible()
    page.get_by_role("link", name="bob", exact=True).click()
    page.locator("#block-reason").fill("Phished <script>")
    page.get_by_role("button", name="Block…").click()
    expect(page.get_by_text("Phished <script>")).to_be_visible()
    confirm(page, "Block")
    page.get_by_role("link", name="Back to the user").click()
    expect(page.get_by_text("blocked until")).to_be_visible()

    # Ten minutes on, the second factor is old: the portal asks for a new one before the next change.
    site.clock.advance(FRESH_MFA + 60)
    page.get_by_role("button", name="Unblock").click()
    expect(page.get_by_role("heading", name="Verify again first")).to_be_visible()
    page.get_by_role("link", name="Verify again").click()
    verify(page, site, key)
    expect(page).to_have_url(site.base + "/_mfa/admin/user?name=bob")
    page.get_by_role("button", name="Unblock").click()
    confirm(page, "Unblock")

    # One-time bypass with a reason and a duration.
    page.get_by_role("link", name="Back to the user").click()
    page.locator("#bypass-reason").fill("lost phone")
    page.locator("#bypass-minutes").fill("30")
    page.get_by_role("button", name="Grant bypass…").click()
    confirm(page, "Grant bypass")

    # Bulk update from a file: the preview first.
    upload = tmp_path / "users.csv"
    upload.write_bytes("\ufeffusername,state\r\nbob,disabled\r\nnobody,enabled\r\ncarol,sideways\r\n".encode())
    page.goto(site.base + "/_mfa/admin/import")
    page.get_by_label("CSV file").set_input_files(str(upload))
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#changes")).to_contain_text("bob")
    expect(page.locator("#unknown")).to_contain_text("nobody")
    expect(page.locator("#bad")).to_contain_text("sideways")
    confirm(page, "Apply 1 change")
    assert site.mw.runtime.store.get_user("bob").state == "disabled"  # type: ignore[union-attr]

    # The audit log names the acting administrator; the usage report counts.
    page.goto(site.base + "/_mfa/admin/audit")
    page.get_by_label("User").fill("bob")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table")).to_contain_text("admin:root")
    page.goto(site.base + "/_mfa/admin/usage")
    expect(page.locator("#enabled-users")).to_have_text("3")  # bob counts: enabled earlier this month


def test_refusals(browser: Browser, site: Site) -> None:
    from playwright.sync_api import expect

    # A user who is not an administrator: a page with a way on.
    context = browser.new_context()
    page = context.new_page()
    enroll(page, site, "bob")
    page.goto(site.base + "/_mfa/admin")
    expect(page.get_by_role("heading", name="This page is for administrators")).to_be_visible()
    page.get_by_role("link", name="Go to security info").click()
    expect(page).to_have_url(site.base + "/_mfa/settings")
    context.close()

    # An app password sent as Basic credentials opens nothing: the sign-in page.
    root = site.mw.runtime.store.get_user("root")
    assert root is not None
    _, app_password = site.mw.runtime.app_passwords.create(root, "script", actor="test")
    basic = base64.b64encode(f"root:{app_password}".encode()).decode()
    context = browser.new_context(extra_http_headers={"Authorization": f"Basic {basic}"})
    page = context.new_page()
    page.goto(site.base + "/_mfa/admin")
    expect(page.get_by_label("Password")).to_be_visible()
    assert "/_mfa/login" in page.url
    context.close()

    # A remembered device alone: asked to verify now, and then in.
    context = browser.new_context()
    page = context.new_page()
    key = enroll(page, site, "root")
    sign_out(page, site.base)
    sign_in(page, site.base, "root", PASSWORD)
    verify(page, site, key, remember=True)
    sign_out(page, site.base)
    sign_in(page, site.base, "root", PASSWORD)
    expect(page).to_have_url(site.base + "/")
    page.goto(site.base + "/_mfa/admin")
    expect(page.get_by_role("heading", name="Verify with your second factor")).to_be_visible()
    page.get_by_role("link", name="Verify now").click()
    verify(page, site, key)
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    context.close()


def test_every_admin_page_is_accessible_at_both_widths(browser: Browser, site: Site) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=WIDTHS["desktop"])
    page = context.new_page()
    enroll(page, site, "root")
    site.mw.runtime.fraud.report(site.mw.runtime.store.get_user("bob"), "voice",  # type: ignore[arg-type]
                                 now=site.clock.now, client_ip="10.0.0.7", user_agent="Phone <x>", reference="r")
    pages: dict[str, str] = {
        "users": "/_mfa/admin", "user": "/_mfa/admin/user?name=bob", "import": "/_mfa/admin/import",
        "fraud": "/_mfa/admin/fraud", "audit": "/_mfa/admin/audit", "usage": "/_mfa/admin/usage",
    }
    for width, size in WIDTHS.items():
        page.set_viewport_size(size)
        for name, path in pages.items():
            page.goto(site.base + path)
            expect(page.locator("main h1")).to_be_visible()
            assert_accessible(page)
            page.screenshot(path=str(SCREENSHOTS / f"admin-{name}-{width}.png"), full_page=True)
        # The confirmation page and the result page.
        page.goto(site.base + "/_mfa/admin/user?name=bob")
        page.get_by_role("button", name="Unlock").click()
        expect(page.get_by_role("heading", name="Unlock: bob")).to_be_visible()
        assert_accessible(page)
        page.screenshot(path=str(SCREENSHOTS / f"admin-confirm-{width}.png"), full_page=True)
        confirm(page, "Unlock")
        assert_accessible(page)
        page.screenshot(path=str(SCREENSHOTS / f"admin-done-{width}.png"), full_page=True)
    context.close()
    # The refusal a non-admin sees.
    context = browser.new_context(viewport=WIDTHS["phone"])
    page = context.new_page()
    # carol is MFA-exempt (disabled): she signs in with the password alone
    sign_in(page, site.base, "carol", PASSWORD)
    page.goto(site.base + "/_mfa/admin")
    expect(page.locator("main h1")).to_be_visible()
    assert_accessible(page)
    page.screenshot(path=str(SCREENSHOTS / "admin-refused-phone.png"), full_page=True)
    context.close()
