"""A person in Chromium with more than one method: after setting up the authenticator app they make backup codes,
then sign in with "Sign in another way" and a backup code, and the same code is refused the second time."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.demo import demo_app
from tests.support.mfa import FAST_HASHER, make_config
from tests.support.browser import sign_in, sign_out
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

USERNAME = "dana"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def site(sqlite_url: str) -> Iterator[str]:
    mw = MFAMiddleware(demo_app, make_config(sqlite_url, methods={"enabled": ["totp", "backup_codes"]}),
                       password_hasher=FAST_HASHER)
    try:
        mw.runtime.store.upgrade()
        mw.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        with serve_wsgi(mw, host="localhost") as base:
            yield base
    finally:
        mw.runtime.close()



def use_backup_code(page: Page, code: str) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    page.get_by_role("button", name="Sign in another way").click()
    expect(page.get_by_role("heading", name="Sign in another way")).to_be_visible()
    page.get_by_label(re.compile("I can't use my other methods")).check()
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Backup code").fill(code)
    page.get_by_role("button", name="Verify", exact=True).click()


def test_backup_code_through_sign_in_another_way(page: Page, site: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, site, USERNAME, PASSWORD)
    page.get_by_role("button", name="Set it up now").click()
    key = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code").fill(pyotp.TOTP(key).at(time.time()))
    page.get_by_role("button", name="Verify and finish").click()

    expect(page.get_by_role("heading", name="Backup codes")).to_be_visible()
    page.get_by_role("button", name="Make my backup codes").click()
    expect(page.get_by_role("heading", name="Your backup codes")).to_be_visible()
    codes = [c.strip() for c in page.locator("ol.backup-codes code").all_inner_texts()]
    assert len(codes) == 10 and all(re.fullmatch(r"[a-z0-9]{5}-[a-z0-9]{5}", c) for c in codes), codes
    download = page.get_by_role("link", name="Download as a text file")
    assert codes[0] in (download.get_attribute("href") or "")
    page.get_by_role("link", name="I have saved my codes, continue").click()
    expect(page).to_have_url(site + "/")
    sign_out(page, site)

    sign_in(page, site, USERNAME, PASSWORD)
    use_backup_code(page, codes[3])
    expect(page).to_have_url(site + "/")
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")
    sign_out(page, site)

    sign_in(page, site, USERNAME, PASSWORD)
    use_backup_code(page, codes[3])
    expect(page.get_by_role("alert")).to_contain_text("didn't work")
    expect(page).to_have_url(re.compile(r"/_mfa/verify$"))
