"""In Chromium: a person sets up a text message and a phone call through the console phone gateway and the demo's
outbox page, signs in by text, then by a call answered ``#`` on the outbox keypad (the verify page continues by
itself, through its polling script), and a call answered ``0#`` blocks them: the next sign-in says so.

Debian's Chromium (Playwright) against the demo app behind the middleware, served by werkzeug on ``localhost``
with the real clock. The outbox is a second tab of the same browser, as a person trying the demo would use it;
the keypad there settles the call exactly as a provider's signed callback would. Every request the browser makes
is recorded: none may leave for another host (the pages load no third-party script, font or image).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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
MOBILE = "+44 7400 123456"
OFFICE = "+44 20 7946 0958"
#: a bound on a hang, not a timing assertion: the page polls every 2 s and must have moved on well within this
CONTINUES_WITHIN_MS = 15_000
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})


@pytest.fixture
def site(sqlite_url: str) -> Iterator[str]:
    config = make_config(sqlite_url, dev_outbox=True,
                         # Seven texts and calls within a minute: more than a user's default hourly cap (5), which
                         # [methods.sms] sets for calls too, as it sets the wait before the next text or call of a
                         # sign-in (the shortest: the calls of steps 4 and 5 are more than one poll apart).
                         methods={"enabled": ["totp", "sms", "voice"],
                                  "sms": {"per_user_per_hour": 10, "resend_after": "1s"}},
                         phone={"gateway": "console", "allowed_countries": ["GB"]})
    mw = MFAMiddleware(demo_app, config, password_hasher=FAST_HASHER)
    try:
        mw.runtime.store.upgrade()
        mw.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        with serve_wsgi(mw, host="localhost") as base:
            yield base
    finally:
        mw.runtime.close()


def newest_text_code(outbox: Page, site: str) -> str:
    """The code of the newest text message on the outbox page (newest first)."""
    outbox.goto(site + "/_mfa/dev/outbox")
    body = outbox.get_by_role("region", name=re.compile(r"^Text message to ")).first.locator("pre").inner_text()
    found = re.search(r"\b(\d{6}) is your", body)
    assert found, body
    return found.group(1)


def answer_ringing_call(outbox: Page, site: str, keys: str) -> None:
    """Answer the one ringing call on the outbox page's keypad ("Press #" or "Press 0 then #")."""
    from playwright.sync_api import expect

    outbox.goto(site + "/_mfa/dev/outbox")
    ringing = outbox.get_by_role("region", name=re.compile(r"^Call to ")).filter(
        has=outbox.get_by_role("button", name="Press #"))
    expect(ringing).to_have_count(1)
    ringing.get_by_role("button", name=keys, exact=True).click()
    expect(outbox.get_by_role("status")).to_contain_text(
        "reported fraud" if keys.startswith("Press 0") else "approved the sign-in")


def choose_phone_call(page: Page) -> None:
    """From the default method, the text message: "Sign in another way", then the call.

    The sign-in texts a code first. Within a second of the text before, it is not sent: the page says so and
    links to the other methods, the verify page's button otherwise; either way the person can choose."""
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name=re.compile("^(Verify your identity|Code not sent)$"))).to_be_visible()
    another = page.get_by_role("button", name="Sign in another way").or_(
        page.get_by_role("link", name="Sign in another way"))
    another.click()
    expect(page.get_by_role("heading", name="Sign in another way")).to_be_visible()
    page.get_by_role("radio", name=re.compile(r"^Phone \+44 .*0958 We call your office phone")).check()
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("p.lead")).to_contain_text(re.compile(r"We're calling \+44 [•\s]+ 0958\."))


def test_text_then_calls_answered_on_the_outbox_keypad(page: Page, site: str) -> None:
    from playwright.sync_api import expect

    requested: list[str] = []

    def record(request: Request) -> None:
        requested.append(request.url)

    page.context.on("request", record)
    outbox = page.context.new_page()

    # 1. A new user sets up "Text message"; the code is read on the outbox page.
    sign_in(page, site, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="More information required")).to_be_visible()
    page.get_by_role("radio", name=re.compile("Text message")).check()
    page.get_by_label("Mobile phone number").fill(MOBILE)
    page.get_by_role("button", name="Set it up now").click()
    expect(page.get_by_role("heading", name="Check your phone")).to_be_visible()
    expect(page.locator("p.lead")).to_contain_text("+44 •••• ••3456")
    expect(page.locator("p.lead")).not_to_contain_text("7400")  # masked after entry
    page.get_by_label("Code").fill(newest_text_code(outbox, site))
    page.get_by_role("button", name="Verify and finish").click()
    expect(page).to_have_url(site + "/")
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")

    # 2. A phone call too, from the security info page (the sign-in was a fresh second factor).
    page.goto(site + "/_mfa/")
    page.get_by_role("link", name="Add a method").click()
    expect(page.get_by_role("heading", name="Add a sign-in method")).to_be_visible()
    page.get_by_role("radio", name=re.compile("Office phone call")).check()
    page.get_by_label("Phone number", exact=True).fill(OFFICE)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Answer the call")).to_be_visible()
    expect(page.locator("p.lead")).to_contain_text("press the pound key (#) to confirm that the number is yours")
    expect(page.locator("p.lead")).to_contain_text(re.compile(r"We're calling \+44 [•\s]+ 0958\."))
    answer_ringing_call(outbox, site, "Press #")
    page.get_by_role("button", name="I answered the call").click()
    page.goto(site + "/_mfa/")
    expect(page.locator("body")).to_contain_text("Office phone call")
    expect(page.locator("body")).to_contain_text("Text message")
    sign_out(page, site)

    # 3. The default method, the text message: its code from the outbox.
    sign_in(page, site, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    expect(page.locator("p.lead")).to_contain_text("We texted a code to")
    page.get_by_label("Code").fill(newest_text_code(outbox, site))
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page).to_have_url(site + "/")
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")
    sign_out(page, site)

    # 4. The phone call, answered with # in the other tab: the verify page continues by itself.
    sign_in(page, site, USERNAME, PASSWORD)
    choose_phone_call(page)
    status = page.get_by_role("status")
    expect(status).to_contain_text("press the pound key (#)")
    expect(status).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("button", name="I answered the call")).to_be_visible()
    verify_url = page.url
    answer_ringing_call(outbox, site, "Press #")
    page.wait_for_url(site + "/", timeout=CONTINUES_WITHIN_MS)  # no click on this tab: poll.js submitted the form
    assert page.url != verify_url
    expect(page.locator("body")).to_contain_text(f"Signed in as {USERNAME}")
    sign_out(page, site)

    # 5. Another call, answered 0# (fraud): the user is blocked, and the next sign-in says so.
    sign_in(page, site, USERNAME, PASSWORD)
    choose_phone_call(page)
    answer_ringing_call(outbox, site, "Press 0 then #")
    # Again without a click here: the waiting page moves on by itself (the report ended every sign-in of the
    # user, so it says the sign-in has ended), and nobody is signed in.
    expect(page.get_by_role("heading", name="Verify your identity")).to_have_count(0, timeout=CONTINUES_WITHIN_MS)
    expect(page.locator("main")).to_contain_text("Sign in again")
    sign_in(page, site, USERNAME, PASSWORD)
    expect(page.get_by_role("heading", name="Account blocked")).to_be_visible()
    page.goto(site + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(f"Signed in as {USERNAME}")

    assert requested
    elsewhere = sorted({url for url in requested if urlsplit(url).hostname not in LOCAL_HOSTS})
    assert elsewhere == [], elsewhere
