"""A person in a real browser: sign in, set up the authenticator app, sign out, sign in again with a code.

Debian's Chromium (Playwright) against the demo app wrapped by the middleware, served by werkzeug on
``localhost`` with the real clock. The codes come from pyotp at the current time; the second sign-in uses the
next step's code (``time.time() + 30``), because enrollment consumed the current step and the verifier accepts
one step of drift.

Screenshots of the login and enrollment pages go to the test's own temporary folder, or to the folder named by
``MFA_TEST_SHOTS`` for people who want to look at them; they are not compared with anything.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.demo import demo_app
from tests.support.mfa import FAST_HASHER, make_config
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request

pytestmark = pytest.mark.browser

USERNAME = "alice"
PASSWORD = "correct horse battery staple"
LOCAL_SCHEMES = ("data", "about", "blob")  # no network behind these


@pytest.fixture
def site(sqlite_url: str) -> Iterator[str]:
    """The demo app behind the middleware, real clock, one user; yields ``http://localhost:PORT``."""
    mw = MFAMiddleware(demo_app, make_config(sqlite_url), password_hasher=FAST_HASHER)
    try:
        mw.runtime.store.upgrade()
        mw.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD, groups=["admins"])
        with serve_wsgi(mw, host="localhost") as base:
            yield base
    finally:
        mw.runtime.close()


def focused(page: Page) -> str:
    """``tag#id`` (or ``tag:text``) of the element that has the keyboard focus."""
    result: str = page.evaluate(
        "() => { const e = document.activeElement;"
        " return e.tagName.toLowerCase() + (e.id ? '#' + e.id : ':' + e.textContent.trim()); }")
    return result


def shots_folder(tmp_path: Path) -> Path:
    """Where screenshots go: ``MFA_TEST_SHOTS`` when set (kept), else inside the test's tmp_path (cleaned up)."""
    folder = Path(os.environ["MFA_TEST_SHOTS"]) if os.environ.get("MFA_TEST_SHOTS") else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_sign_in_enroll_sign_out_and_sign_in_again(page: Page, site: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    requested: list[str] = []
    problems: list[str] = []

    def on_request(request: Request) -> None:
        requested.append(request.url)

    page.on("request", on_request)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    shots = shots_folder(tmp_path)

    # Anonymous: the app sends the browser to the login page.
    page.goto(site + "/")
    expect(page).to_have_url(re.compile(r"/_mfa/login\?next=(/|%2F)$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=str(shots / "login.png"), full_page=True)

    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    # First sign-in: enrollment.
    expect(page.get_by_role("heading", name="More information required")).to_be_visible()
    page.get_by_role("button", name="Set it up now").click()
    expect(page.get_by_role("heading", name="Set up your authenticator app")).to_be_visible()
    expect(page.locator("figure.qr svg")).to_be_visible()
    key = page.locator("#secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{4})+", key), key
    page.screenshot(path=str(shots / "enroll.png"), full_page=True)

    page.get_by_label("Code").fill(pyotp.TOTP(key.replace(" ", "")).at(time.time()))
    page.get_by_role("button", name="Verify and finish").click()

    expect(page).to_have_url(site + "/")
    expect(page.get_by_role("heading", name="Contoso intranet")).to_be_visible()
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")

    # Sign out: a confirmation page, then the POST.
    page.goto(site + "/_mfa/logout")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Signed out")).to_be_visible()
    expect(page.locator("main")).to_contain_text("You have signed out")
    page.goto(site + "/")
    expect(page).to_have_url(re.compile(r"/_mfa/login\?next=(/|%2F)$"))

    # Second sign-in with the keyboard only: Tab goes username -> password -> button, Enter submits.
    page.get_by_label("Username").focus()
    page.keyboard.type(USERNAME)
    page.keyboard.press("Tab")
    assert focused(page) == "input#password"
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    assert focused(page) == "button:Sign in"
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    next_code = pyotp.TOTP(key.replace(" ", "")).at(time.time() + 30)  # enrollment consumed the current step
    page.get_by_label("Code").fill(next_code)
    page.get_by_role("button", name="Verify", exact=True).click()

    expect(page).to_have_url(site + "/")
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")

    foreign = [url for url in requested
               if urlsplit(url).scheme not in LOCAL_SCHEMES and urlsplit(url).hostname != "localhost"]
    assert not foreign, f"requests to other hosts: {foreign}"
    assert any(urlsplit(url).path == "/_mfa/static/mfa.css" for url in requested)
    assert not problems, problems
