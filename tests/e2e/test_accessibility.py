"""Every page that exists today, in Debian's Chromium: axe-core finds no serious or critical violation at desktop and
phone width, no page scrolls sideways at 360 px, and screenshots of each land in ``build/screenshots/``
(tests/support/pages_audit.py). Also: keyboard-only sign-in (Tab order, skip link, a visible focus ring read from
the computed style), the focus on the field to fix after a failed sign-in, and the copy button and app link of the
authenticator enrollment.

The site is the demo's own configuration (``prepare_demo``: every method the demo enables, console gateways, the
outbox page), served by werkzeug on ``localhost``. The demo user enrolls the authenticator app in the browser;
its other methods are added to the store directly, so each method's verify page can be shown.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.demo import TOKEN_SERIAL, prepare_demo
from tests.support.pages_audit import audit_page
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

VISITOR = "visitor"  # MFA-exempt, not in the admins group
VISITOR_PASSWORD = "visitor password 1"
#: one number per phone method: a second call to a number within half a minute is refused ("Code not sent")
NUMBERS = {"sms": "+447911123456", "voice": "+447911123457", "mobile_voice": "+447911123458"}


@dataclass
class Site:
    base: str
    mw: MFAMiddleware
    password: str  # the demo user's


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder: Path = tmp_path_factory.mktemp("demo")
    mw, password = prepare_demo(folder)
    try:
        mw.runtime.accounts.add(VISITOR, actor="test", password=VISITOR_PASSWORD, state="disabled")
        with serve_wsgi(mw, host="localhost") as base:
            yield Site(base, mw, password)
    finally:
        mw.runtime.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


def focused(page: Page) -> str:
    """``tag#id`` (or ``tag:text``) of the element with the keyboard focus."""
    result: str = page.evaluate(
        "() => { const e = document.activeElement;"
        " return e.tagName.toLowerCase() + (e.id ? '#' + e.id : ':' + e.textContent.trim()); }")
    return result


def focus_ring(page: Page) -> tuple[str, float]:
    """The computed outline style and width (px) of the focused element."""
    style: list[str] = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; }")
    return style[0], float(style[1].removesuffix("px") or 0)


def assert_focus_visible(page: Page) -> None:
    style, width = focus_ring(page)
    assert style != "none" and width >= 2, (focused(page), style, width)


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(base + "/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def test_every_page_passes_axe_and_fits_a_phone(page: Page, site: Site) -> None:
    from playwright.sync_api import expect

    rt = site.mw.runtime
    base = site.base
    page.goto(base + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    audit_page(page, "login")

    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#form-error")).to_be_visible()
    audit_page(page, "login-failed")

    # First sign-in: enrollment with the authenticator app, then backup codes.
    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="More information required")).to_be_visible()
    audit_page(page, "enroll-start")
    page.get_by_role("button", name="Set it up now").click()
    expect(page.get_by_role("heading", name="Set up your authenticator app")).to_be_visible()
    link = page.get_by_role("link", name="Open your authenticator app to add this account")
    assert (link.get_attribute("href") or "").startswith("otpauth://totp/")
    expect(page.get_by_role("button", name="Copy key")).to_be_visible()  # copy.js showed it
    audit_page(page, "enroll-totp")
    key = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code").fill(pyotp.TOTP(key).at(time.time()))
    page.get_by_role("button", name="Verify and finish").click()
    expect(page.get_by_role("heading", name="Backup codes")).to_be_visible()
    audit_page(page, "backup-codes-offer")
    page.get_by_role("button", name="Make my backup codes").click()
    expect(page.get_by_role("heading", name="Your backup codes")).to_be_visible()
    expect(page.get_by_role("button", name="Copy all codes")).to_be_visible()
    audit_page(page, "backup-codes")
    page.get_by_role("link", name="I have saved my codes, continue").click()
    expect(page.locator("body")).to_contain_text("Signed in as demo")

    # The account's own pages, with a fresh second factor.
    page.goto(base + "/_mfa/settings")
    expect(page.get_by_role("heading", name="Security info")).to_be_visible()
    audit_page(page, "account")
    page.goto(base + "/_mfa/methods/add")
    expect(page.get_by_role("heading", name="Add a sign-in method")).to_be_visible()
    audit_page(page, "add-method")
    page.goto(base + "/_mfa/settings#app-passwords")
    page.get_by_label("Device name").fill("Mail on my laptop")
    page.get_by_role("button", name="Create app password").click()
    expect(page.locator("#app-password")).to_be_visible()
    expect(page.get_by_role("button", name="Copy password")).to_be_visible()
    audit_page(page, "app-password-created")
    page.goto(base + "/_mfa/dev/outbox")
    audit_page(page, "outbox")

    # Every other method the demo enables, added to the store: each verify page, through "Sign in another way".
    user = rt.store.get_user("demo")
    assert user is not None
    box, now = rt.box, time.time()
    details = {"email": box.encrypt("demo@contoso.example"), "sms": box.encrypt(NUMBERS["sms"]),
               "voice": box.encrypt(json.dumps({"e164": NUMBERS["voice"], "extension": None})),
               "mobile_voice": box.encrypt(json.dumps({"e164": NUMBERS["mobile_voice"], "extension": None})),
               "oath": box.encrypt(TOKEN_SERIAL)}
    ids = {kind: rt.store.add_method(user.id, kind, f"My {kind.replace('_', ' ')}", None, now=now, confirmed=True,
                                     detail=detail) for kind, detail in details.items()}
    ids.update({m.kind: m.id for m in rt.store.list_methods(user.id) if m.kind in ("totp", "backup_codes")})
    assert sorted(ids) == sorted(rt.config.methods.enabled), "a method the demo enables has no verify page here"

    page.goto(base + "/_mfa/logout")
    expect(page.get_by_role("heading", name="Sign out")).to_be_visible()
    audit_page(page, "logout")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Signed out")).to_be_visible()
    audit_page(page, "signed-out")

    sign_in(page, base, "demo", site.password)
    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    audit_page(page, "verify-totp")
    page.get_by_role("button", name="Sign in another way").click()
    expect(page.get_by_role("heading", name="Sign in another way")).to_be_visible()
    audit_page(page, "choose")
    for kind in [k for k in ids if k != "totp"]:
        # A sign-in of its own for each: one attempt sends at most one code or call every half minute.
        page.context.clear_cookies()
        sign_in(page, base, "demo", site.password)
        page.get_by_role("button", name="Sign in another way").click()
        page.locator(f"input[name=method_id][value='{ids[kind]}']").check()
        page.get_by_role("button", name="Continue").click()
        shown = page.get_by_role("heading", name="Verify your identity").or_(
            page.get_by_role("heading", name="Code not sent"))
        expect(shown).to_be_visible()
        if shown.inner_text() == "Code not sent":
            # A second phone call within the half minute the phone limits ask between calls to one user: the
            # refusal is a page of its own (mobile_voice shares the voice method's screens, shown just before).
            audit_page(page, "code-not-sent")
        else:
            audit_page(page, f"verify-{kind.replace('_', '-')}")
    page.context.clear_cookies()
    sign_in(page, base, "demo", site.password)
    page.get_by_label("Code").fill(pyotp.TOTP(key).at(time.time() + 30))  # enrollment used the current step
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("body")).to_contain_text("Signed in as demo")

    # The step-up prompt (a fresh second factor before changing methods), as a message page.
    page.goto(base + "/_mfa/nowhere")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    audit_page(page, "not-found")
    page.goto(base + "/_mfa/verify")  # the sign-in is over: nothing to verify
    expect(page.get_by_role("heading", name="Sign-in expired")).to_be_visible()
    audit_page(page, "error")


def test_message_pages(browser: Browser, site: Site) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(site.base + "/_mfa/login?next=/&reason=expired")
        expect(page.get_by_role("status")).to_have_text("Your session expired; sign in again.")
        audit_page(page, "session-expired")
        sign_in(page, site.base, VISITOR, VISITOR_PASSWORD)
        expect(page.locator("body")).to_contain_text(f"Signed in as {VISITOR}")
        page.goto(site.base + "/admin/")
        expect(page.get_by_role("heading", name="Access denied")).to_be_visible()
        audit_page(page, "access-denied")
        page.get_by_role("link", name="Sign in as someone else").click()
        expect(page.get_by_role("heading", name="Sign out")).to_be_visible()
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("link", name="Sign in again").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        context.close()


def test_keyboard_only_sign_in_with_visible_focus(page: Page, site: Site) -> None:
    from playwright.sync_api import expect

    page.goto(site.base + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # The skip link comes first and takes the focus to the main content.
    page.mouse.click(1, 1)  # the page's top corner: Tab goes on from the start of the page
    page.keyboard.press("Tab")
    assert focused(page) == "a:Skip to content"
    assert_focus_visible(page)
    box = page.get_by_role("link", name="Skip to content").bounding_box()
    assert box is not None and box["x"] >= 0 and box["y"] >= 0  # on screen when focused
    page.keyboard.press("Enter")
    assert focused(page) == "main#main"
    # Username (focused on arrival) -> password -> the button, each with a visible ring; Enter submits.
    page.goto(site.base + "/_mfa/login")
    expect(page.locator("input#username")).to_be_focused()  # autofocus lands once the page has rendered
    assert_focus_visible(page)
    page.keyboard.type(VISITOR)
    page.keyboard.press("Tab")
    assert focused(page) == "input#password"
    assert_focus_visible(page)
    page.keyboard.type(VISITOR_PASSWORD)
    page.keyboard.press("Tab")
    assert focused(page) == "button:Sign in"
    assert_focus_visible(page)
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_contain_text(f"Signed in as {VISITOR}")


@pytest.mark.parametrize(("username", "password", "field"), [
    pytest.param(VISITOR, "wrong password", "password", id="wrong-password"),
    pytest.param("", "some password", "username", id="username-missing"),
])
def test_focus_lands_on_the_field_to_fix(page: Page, site: Site, username: str, password: str, field: str) -> None:
    from playwright.sync_api import expect

    page.goto(site.base + "/_mfa/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#form-error")).to_be_visible()
    expect(page.locator(f"input#{field}")).to_be_focused()
    assert_focus_visible(page)
    to_fix = page.locator(f"#{field}")
    expect(to_fix).to_have_attribute("aria-invalid", "true")
    expect(to_fix).to_have_attribute("aria-describedby", re.compile(r"\bform-error\b"))
