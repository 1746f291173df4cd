"""Passkeys in Chromium with CDP virtual authenticators, against a real server on ``http://localhost:<port>``
(an IP address cannot be an RP id): register two passkeys (the first at the enrollment of a sign-in, the second
from the security-info page), sign in with each, remove one, and a cloned authenticator, whose copy of the
credential has a lower sign count, is refused and audited as ``webauthn``/``counter_regression``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.demo import demo_app
from tests.support.browser import sign_in, sign_out
from tests.support.mfa import FAST_HASHER, make_config
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import CDPSession, Page

pytestmark = pytest.mark.browser

USERNAME = "dana"
PASSWORD = "correct horse battery staple"


@pytest.fixture(params=[pytest.param(False, id="second-factor")])
def site(sqlite_url: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, MFAMiddleware]]:
    # The origin (with its port) is part of the configuration, so the server starts first and the middleware
    # is built for the address it got. ``request.param``: passwordless sign-in on.
    holder: list[Callable[..., Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return holder[0](environ, start_response)

    with serve_wsgi(app, host="localhost") as base:
        mw = MFAMiddleware(demo_app, make_config(sqlite_url, methods={
            "enabled": ["webauthn"], "webauthn": {"origins": [base], "user_verification": "required",
                                                  "passwordless": request.param}}),
            password_hasher=FAST_HASHER)
        try:
            mw.runtime.store.upgrade()
            mw.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
            holder.append(mw)
            yield base, mw
        finally:
            mw.runtime.close()


def add_authenticator(cdp: CDPSession, credentials: tuple[dict[str, Any], ...] = (),
                      transport: str = "internal") -> str:
    """A virtual authenticator (Chromium allows one ``internal`` one: a security key is ``usb``)."""
    found = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": transport, "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    authenticator_id = str(found["authenticatorId"])
    for credential in credentials:
        cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator_id, "credential": credential})
    return authenticator_id


def take_out(cdp: CDPSession, authenticator_id: str) -> tuple[dict[str, Any], ...]:
    """Remove an authenticator, keeping its credentials (with their private keys and sign counts)."""
    credentials = tuple(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})["credentials"])
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator_id})
    return credentials


def use_passkey(page: Page, name: str) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    if name not in (page.locator("p.lead").inner_text()):
        page.get_by_role("button", name="Sign in another way").click()
        page.get_by_label(re.compile(re.escape(name))).check()
        page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Use passkey").click()


def test_two_passkeys_sign_in_remove_and_clone(page: Page, site: tuple[str, MFAMiddleware]) -> None:
    from playwright.sync_api import expect

    base, mw = site
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    laptop = add_authenticator(cdp)

    # Enrollment at the first sign-in: the first passkey.
    sign_in(page, base, USERNAME, PASSWORD)
    page.get_by_label("Name for this passkey").fill("Laptop")
    page.get_by_role("button", name="Set it up now").click()
    expect(page.get_by_role("heading", name="Create your passkey")).to_be_visible()
    page.get_by_role("button", name="Create passkey").click()
    expect(page).to_have_url(base + "/")

    # The second passkey on another authenticator (the first is set aside, so the browser cannot pick it).
    kept = take_out(cdp, laptop)
    add_authenticator(cdp, transport="usb")
    page.goto(base + "/_mfa/methods/add")
    page.get_by_label("Name for this passkey").fill("YubiKey 5")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Create passkey").click()
    expect(page.get_by_role("heading", name="Security info")).to_be_visible()
    laptop = add_authenticator(cdp, kept)
    user = mw.runtime.store.get_user(USERNAME)
    assert user is not None
    assert sorted(m.label for m in mw.runtime.store.list_methods(user.id)) == ["Laptop", "YubiKey 5"]
    sign_out(page, base)

    # Sign in with each.
    for name in ("Laptop", "YubiKey 5"):
        sign_in(page, base, USERNAME, PASSWORD)
        use_passkey(page, name)
        expect(page).to_have_url(base + "/")
        sign_out(page, base)

    # A clone of the laptop's credential with a lower sign count: refused, audited, nothing signed in.
    kept = take_out(cdp, laptop)
    assert kept[0]["signCount"] >= 1
    clone = add_authenticator(cdp, ({**kept[0], "signCount": 0},))
    sign_in(page, base, USERNAME, PASSWORD)
    use_passkey(page, "Laptop")
    expect(page.get_by_role("alert")).to_be_visible()
    assert page.url.startswith(base + "/_mfa/verify")
    rows = mw.runtime.store.list_audit(username=USERNAME)
    assert any(r.event == "webauthn" and r.result == "counter_regression" for r in rows)
    sign_out(page, base)
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": clone})
    add_authenticator(cdp, kept)

    # Remove the YubiKey from the security-info page; the laptop still signs in, the YubiKey is gone.
    sign_in(page, base, USERNAME, PASSWORD)
    use_passkey(page, "Laptop")
    expect(page).to_have_url(base + "/")
    page.goto(base + "/_mfa/settings")
    page.get_by_role("link", name="Remove YubiKey 5").click()
    page.get_by_role("button", name="Remove method").click()  # the confirmation page
    page.wait_for_url("**/_mfa/settings?done=removed*")
    methods = mw.runtime.store.list_methods(user.id)
    assert [m.label for m in methods] == ["Laptop"]
    assert len(mw.runtime.store.webauthn_credentials_of_user(user.id)) == 1


@pytest.mark.parametrize("site", [pytest.param(True, id="passwordless")], indirect=True)
def test_passwordless_sign_in_from_a_fresh_context(page: Page, site: tuple[str, MFAMiddleware]) -> None:
    """Register a passkey (a resident key with user verification), then, in a fresh browser context that holds
    only that authenticator, sign in with no password at all."""
    from playwright.sync_api import expect

    base, mw = site
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    laptop = add_authenticator(cdp)
    sign_in(page, base, USERNAME, PASSWORD)
    page.get_by_label("Name for this passkey").fill("Laptop")
    page.get_by_role("button", name="Set it up now").click()
    page.get_by_role("button", name="Create passkey").click()
    expect(page).to_have_url(base + "/")
    kept = take_out(cdp, laptop)
    assert kept[0]["isResidentCredential"] and kept[0].get("userHandle")

    # A fresh context: no cookies, the same authenticator (its resident credential), no password typed.
    assert page.context.browser is not None
    fresh = page.context.browser.new_context()
    try:
        other = fresh.new_page()
        other_cdp = fresh.new_cdp_session(other)
        other_cdp.send("WebAuthn.enable", {"enableUI": False})
        add_authenticator(other_cdp, kept)
        other.goto(base + "/")
        expect(other.get_by_role("heading", name="Sign in")).to_be_visible()
        other.get_by_role("button", name="Sign in with a passkey").click()
        expect(other).to_have_url(base + "/")
        assert other.get_by_label("Password").count() == 0
    finally:
        fresh.close()
    rows = mw.runtime.store.list_audit(username=USERNAME)
    assert any(r.event == "passwordless" and r.result == "success" for r in rows)
