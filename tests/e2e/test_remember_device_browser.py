"""In Chromium: a person ticks "Don't ask again on this device", signs out, signs in with the password alone, sees
the device on the security info page; after ``mfa-admin user revoke-sessions`` the same browser is asked for the
code again.

Debian's Chromium (Playwright) against the demo app behind the middleware, served by werkzeug on ``localhost``
with the real clock; codes from pyotp (each sign-in uses a later step than the one before).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
import pytest
from click.testing import CliRunner

from mfa_middleware import MFAMiddleware
from mfa_middleware.cli import admin
from mfa_middleware.demo import demo_app
from tests.support.mfa import ENCRYPTION_KEY, FAST_HASHER, SECRET_KEY, make_config
from tests.support.browser import sign_in, sign_out
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

USERNAME = "alice"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def site(sqlite_url: str) -> Iterator[str]:
    mw = MFAMiddleware(demo_app, make_config(sqlite_url, methods={"remember_device": "14d"}),
                       password_hasher=FAST_HASHER)
    try:
        mw.runtime.store.upgrade()
        mw.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        with serve_wsgi(mw, host="localhost") as base:
            yield base
    finally:
        mw.runtime.close()



def test_a_remembered_device_until_revoke_sessions(page: Page, site: str, sqlite_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    sign_in(page, site, USERNAME, PASSWORD)
    page.get_by_role("button", name="Set it up now").click()
    key = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code").fill(pyotp.TOTP(key).at(time.time()))
    page.get_by_role("button", name="Verify and finish").click()
    expect(page).to_have_url(site + "/")
    sign_out(page, site)

    # Second sign-in: the code, and "Don't ask again on this device".
    sign_in(page, site, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    page.get_by_label("Code").fill(pyotp.TOTP(key).at(time.time() + 30))
    page.get_by_label("Don't ask again on this device for 14 days").check()
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page).to_have_url(site + "/")
    sign_out(page, site)

    # Third: the password alone; the device is listed on the security info page.
    sign_in(page, site, USERNAME, PASSWORD)
    expect(page).to_have_url(site + "/")
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")
    page.goto(site + "/_mfa/")
    expect(page.locator("#devices")).to_contain_text(re.compile(r"Chrom\w* on Linux"))
    sign_out(page, site)

    # The helpdesk ends every session of the user: the device is asked for the code again.
    config = tmp_path / "mfa.toml"
    config.write_text(f'secret_keys = ["{SECRET_KEY}"]\nencryption_key = "{ENCRYPTION_KEY}"\n'
                      f'database = "{sqlite_url}"\n')
    result = CliRunner(env={"MFA_CONFIG": None}).invoke(
        admin, ["--config", str(config), "user", "revoke-sessions", USERNAME], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sign_in(page, site, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
