"""In Chromium: a person sets up push approval with the console authenticator (``mfa-authenticator enroll`` with
the address the enrollment page shows), then signs in three times. Each time the test reads the number from the
sign-in page and answers with the real ``mfa-authenticator`` in a subprocess: approve with that number (the page
continues by itself, through its polling script), deny (the sign-in fails), report fraud (the user is blocked).

Debian's Chromium (Playwright) against the demo app behind the middleware, served by werkzeug on ``localhost`` with
the real clock. Every request the browser makes is recorded: none may leave for another host.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.demo import demo_app
from tests.support.browser import sign_in, sign_out
from tests.support.mfa import FAST_HASHER, make_config
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request

pytestmark = pytest.mark.browser

USERNAME = "erin"
PASSWORD = "correct horse battery staple"
#: a bound on a hang, not a timing assertion: the page polls every second and must have moved on well within this
CONTINUES_WITHIN_MS = 15_000
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})


@pytest.fixture
def site(sqlite_url: str) -> Iterator[str]:
    config = make_config(sqlite_url, methods={"enabled": ["push", "totp"]})
    mw = MFAMiddleware(demo_app, config, password_hasher=FAST_HASHER)
    try:
        mw.runtime.store.upgrade()
        mw.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        with serve_wsgi(mw, host="localhost") as base:
            yield base
    finally:
        mw.runtime.close()


def authenticator(store: Path, *args: str) -> str:
    """The installed console script's code, run as a separate process (``python -m`` of its entry point)."""
    done = subprocess.run([sys.executable, "-c", "from mfa_middleware.authenticator.cli import main; main()",
                           "--store", str(store), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "error"})
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout)


def the_request(store: Path, number: str) -> str:
    """The one pending request's id; the device lists the page's number among its three choices."""
    listing = authenticator(store, "pending")
    found = re.findall(r"^(\S+)  .*numbers: ([\d ]+)$", listing, re.MULTILINE)
    assert len(found) == 1, listing
    request_id, numbers = found[0]
    assert number in numbers.split(), listing
    return str(request_id)


def waiting_number(page: Page) -> str:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    shown = page.locator("#push-number")
    expect(shown).to_have_text(re.compile(r"^\d\d$"))
    return shown.inner_text()


def test_push_approve_deny_and_report_fraud(page: Page, site: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    requested: list[str] = []

    def record(request: Request) -> None:
        requested.append(request.url)

    page.context.on("request", record)
    store = tmp_path / "authenticator" / "accounts.json"

    # 1. First sign-in: set up push with the console authenticator.
    sign_in(page, site, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="More information required")).to_be_visible()
    page.get_by_role("radio", name=re.compile("Authenticator app notification")).check()
    page.get_by_role("button", name="Set it up now").click()
    expect(page.get_by_role("heading", name="Add your authenticator")).to_be_visible()
    expect(page.locator("figure.qr svg")).to_be_visible()
    url = page.locator("#registration-url").inner_text()
    assert "added erin@" in authenticator(store, "enroll", url, "--name", "Erin's terminal")
    page.get_by_role("button", name="I added the device").click()
    expect(page).to_have_url(site + "/")
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")
    sign_out(page, site)

    # 2. Approve with the number the page shows: the page continues by itself.
    sign_in(page, site, USERNAME, PASSWORD)
    number = waiting_number(page)
    expect(page.get_by_role("status")).to_have_attribute("aria-live", "polite")
    verify_url = page.url
    authenticator(store, "approve", the_request(store, number), "--number", number)
    page.wait_for_url(site + "/", timeout=CONTINUES_WITHIN_MS)  # no click: poll.js submitted the form
    assert page.url != verify_url
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")
    sign_out(page, site)

    # 3. Deny: the page moves on by itself to "not approved", and nobody is signed in.
    sign_in(page, site, USERNAME, PASSWORD)
    number = waiting_number(page)
    authenticator(store, "deny", the_request(store, number))
    expect(page.get_by_role("heading", name="Sign-in not approved")).to_be_visible(timeout=CONTINUES_WITHIN_MS)
    page.goto(site + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # 4. Report fraud: the waiting page moves on, and the next sign-in says the account is blocked.
    sign_in(page, site, USERNAME, PASSWORD)
    number = waiting_number(page)
    assert "blocked" in authenticator(store, "report", the_request(store, number)).lower()
    expect(page.get_by_role("heading", name="Verify your identity")).to_have_count(0, timeout=CONTINUES_WITHIN_MS)
    sign_in(page, site, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="Account blocked")).to_be_visible()
    page.goto(site + "/")
    expect(page.locator("body")).not_to_contain_text(f"Signed in as {USERNAME}")

    assert requested
    elsewhere = sorted({u for u in requested if urlsplit(u).hostname not in LOCAL_HOSTS})
    assert elsewhere == [], elsewhere
