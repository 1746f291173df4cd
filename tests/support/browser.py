"""Debian's Chromium driven by Playwright's sync API (DESIGN.md section 6).

Never run ``playwright install``: the browser is the distribution's ``/usr/bin/chromium``
(``apt-get install chromium``), launched with :data:`CHROMIUM_ARGS`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests.support.components import require_component

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)
LAUNCH_TIMEOUT_MS = 60_000
EXPECT_TIMEOUT_MS = 15_000


def require_chromium() -> str:
    """The Chromium executable path; skip/fail via :func:`require_component` if it is missing."""
    if not os.access(CHROMIUM_PATH, os.X_OK):
        require_component("chromium", f"{CHROMIUM_PATH} not found (apt-get install chromium)")
    return CHROMIUM_PATH


@contextmanager
def playwright_session() -> Iterator[Playwright]:
    """Start Playwright's sync API (its driver subprocess) and stop it on exit."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError as error:
        require_component("playwright", f"cannot import playwright ({error}); pip install playwright")
    # The assertions retry until they hold; the default 5 s is short for a page drawn while the other test
    # worker keeps both cores busy. A wrong page still fails, only later.
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    manager = sync_playwright()
    playwright = manager.start()
    try:
        yield playwright
    finally:
        playwright.stop()


def launch_chromium(playwright: Playwright) -> Browser:
    """Launch Debian's Chromium headless through ``playwright``; the caller closes it."""
    executable = require_chromium()
    return playwright.chromium.launch(
        executable_path=executable,
        headless=True,
        args=list(CHROMIUM_ARGS),
        timeout=LAUNCH_TIMEOUT_MS,
    )


@contextmanager
def chromium_browser() -> Iterator[Browser]:
    """Playwright + Chromium for a ``with`` block; everything is closed on exit."""
    require_chromium()  # check before starting Playwright's driver for nothing
    with playwright_session() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Page, site: str, username: str, password: str) -> None:
    """From the app's front page, through our sign-in form (whatever comes next is the caller's)."""
    page.goto(site + "/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def sign_out(page: Page, site: str) -> None:
    """The sign-out confirmation page, then its POST."""
    from playwright.sync_api import expect

    page.goto(site + "/_mfa/logout")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Signed out")).to_be_visible()
