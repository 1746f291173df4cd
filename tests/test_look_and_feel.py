"""The pages' look and feel without a browser: branding from the configuration (and its errors at start-up), the
operator's template folder, why a sign-in starts again (fixed codes only: text from a link never reaches the
page), no dead ends (every message page offers a way on), messages written for people, and the focus after a
failed sign-in. The browser side (axe, keyboard, phone width, screenshots) is tests/e2e/test_accessibility.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.config import ConfigError, contrast_ratio
from tests.support.mfa import Browser, Clock, csrf_of, make_config, make_middleware

PASSWORD = "correct horse battery"
#: a 1x1 transparent PNG
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8"
                    "ffff3f0005fe02fea7d6a4ea0000000049454e44ae426082")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = make_middleware(sqlite_url, clock)
    middleware.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    middleware.runtime.accounts.add("erin", actor="test", password=PASSWORD, state="disabled")
    yield middleware
    middleware.runtime.close()


def main_of(html: str) -> str:
    match = re.search(r"<main\b.*?</main>", html, re.S)
    assert match, "no <main> on the page"
    return match.group(0)


def ways_on(html: str) -> list[str]:
    """The links and buttons in the page's main content: what a person can do next."""
    main = main_of(html)
    return re.findall(r'<a [^>]*href="([^"]+)"', main) + re.findall(r"<button\b[^>]*>([^<]*)</button>", main)


# -- branding ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("branding", "pages", "message"), [
    pytest.param({"primary": "0b5cad"}, {}, r"branding\.primary: must be a colour written #rrggbb", id="not-hex"),
    pytest.param({"primary": "#0b5cadff"}, {}, r"branding\.primary: must be a colour", id="hex-with-alpha"),
    pytest.param({"primary": "#ffcc00"}, {}, r"branding\.primary: #ffcc00 against white has a contrast ratio of "
                 r"1\.\d\d:1; WCAG AA needs at least 4\.5:1", id="primary-low-contrast"),
    pytest.param({"accent": "#3b82f6"}, {}, r"branding\.accent: #3b82f6 against white has a contrast ratio of 3\.68",
                 id="accent-low-contrast"),
    pytest.param({"logo": "missing.png"}, {}, r"branding\.logo: no such file: .*missing\.png", id="logo-missing"),
    pytest.param({"logo": "logo.exe"}, {}, r"branding\.logo: must be an image file", id="logo-not-an-image"),
    pytest.param({"home": "//evil.example/"}, {}, r"branding\.home: must be a path on this site", id="home-other-host"),
    pytest.param({"home": "javascript:alert(1)"}, {}, r"branding\.home: must be a path", id="home-script"),
    pytest.param({"colour": "#000000"}, {}, r"branding\.colour: unknown key", id="unknown-key"),
    pytest.param({}, {"templates": "no-such-folder"}, r"pages\.templates: no such folder: .*no-such-folder",
                 id="templates-missing"),
])
def test_branding_errors_name_the_key(tmp_path: Path, branding: dict[str, Any], pages: dict[str, Any],
                                      message: str) -> None:
    (tmp_path / "logo.exe").write_bytes(b"MZ")
    from mfa_middleware.config import config_from_dict

    data = {"secret_keys": ["k" * 40], "encryption_key": make_config("sqlite://").encryption_keys[0],
            "database": "sqlite://", "branding": branding, "pages": pages}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, source="mfa.toml", base_dir=tmp_path)


@pytest.mark.parametrize(("colour", "ratio"), [
    pytest.param("#ffffff", 1.0, id="white"),
    pytest.param("#000000", 21.0, id="black"),
    pytest.param("#767676", 4.54, id="lightest-aa-grey"),
    pytest.param("#0b5cad", 6.67, id="example-blue"),
])
def test_contrast_ratio_follows_wcag(colour: str, ratio: float) -> None:
    assert contrast_ratio(colour, "#ffffff") == pytest.approx(ratio, abs=0.01)


def test_company_logo_and_colours_reach_the_pages(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(PNG)
    from dataclasses import replace

    from mfa_middleware.config import config_from_dict

    base = make_config(sqlite_url)
    data = {"secret_keys": list(base.secret_keys), "encryption_key": base.encryption_keys[0], "database": sqlite_url,
            "branding": {"company": "Contoso  <Ltd>", "logo": "logo.png", "primary": "#0B5CAD", "accent": "#7a1f5c",
                         "home": "/portal/"}}
    config = replace(config_from_dict(data, source="mfa.toml", base_dir=tmp_path), rules=base.rules)
    mw = MFAMiddleware(lambda e, s: [], config)
    try:
        browser = Browser(mw)
        login = browser.get("/_mfa/login")
        assert "<title>Sign in · Contoso &lt;Ltd&gt;</title>" in login.text
        assert '<span class="site">Contoso &lt;Ltd&gt;</span>' in login.text
        assert "Use your Contoso &lt;Ltd&gt; account." in login.text
        css_link = re.search(r'href="(/_mfa/static/brand\.css\?v=\w+)"', login.text)
        logo_src = re.search(r'<img class="logo-image" src="(/_mfa/static/logo\?v=\w+)" alt="">', login.text)
        assert css_link and logo_src
        css = browser.get(css_link.group(1))
        assert css.status_code == 200 and css.mimetype == "text/css"
        assert "--primary: #0b5cad; --accent: #7a1f5c;" in css.text
        logo = browser.get(logo_src.group(1))
        assert logo.status_code == 200 and logo.mimetype == "image/png" and logo.data == PNG
        assert 'href="/portal/"' in main_of(browser.get("/_mfa/nowhere").text)  # "Back to the app"
    finally:
        mw.runtime.close()


def test_without_a_logo_the_logo_address_is_not_found(mw: MFAMiddleware) -> None:
    browser = Browser(mw)
    assert "logo-image" not in browser.get("/_mfa/login").text
    assert browser.get("/_mfa/static/logo").status_code == 404


def test_templates_folder_replaces_only_the_templates_it_holds(sqlite_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    (folder / "totp").mkdir(parents=True)
    (folder / "login.html").write_text('{% extends "base.html" %}{% block content %}<h1>Contoso sign-in</h1>'
                                       '<form method="post"><input type="hidden" name="csrf_token" value="{{ csrf }}">'
                                       '</form>{% endblock %}', encoding="utf-8")
    mw = make_middleware(sqlite_url, pages={"templates": str(folder)})
    try:
        browser = Browser(mw)
        login = browser.get("/_mfa/login")
        assert "<h1>Contoso sign-in</h1>" in login.text and "mfa.css" in login.text  # its own page, our base
        assert "<h1>Page not found</h1>" in browser.get("/_mfa/nowhere").text  # the package's own
    finally:
        mw.runtime.close()


def test_a_templates_folder_that_went_missing_stops_the_start(sqlite_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    config = make_config(sqlite_url, pages={"templates": str(folder)})
    folder.rmdir()
    with pytest.raises(ConfigError, match="pages.templates: no such folder"):
        MFAMiddleware(lambda e, s: [], config)


# -- why a sign-in starts again --------------------------------------------------------------------------------------
EXPIRED = "Your session expired; sign in again."
SIGNED_OUT = "You were signed out"


def signed_in(mw: MFAMiddleware, clock: Clock) -> Browser:
    """erin (MFA-exempt) signed in, on the app."""
    browser = Browser(mw)
    assert browser.login("erin", PASSWORD, "/hello").status_code == 303
    assert browser.get("/reports/x").status_code == 200
    return browser


def follow(browser: Browser, response: TestResponse) -> TestResponse:
    assert response.status_code in (302, 303), response.status_code
    return browser.get(response.headers["Location"])


def test_an_expired_session_says_so(mw: MFAMiddleware, clock: Clock) -> None:
    browser = signed_in(mw, clock)
    clock.advance(31 * 60)  # past the inactivity timeout
    away = browser.get("/reports/x")
    assert away.headers["Location"] == "/_mfa/login?next=/reports/x&reason=expired"
    page = follow(browser, away)
    assert EXPIRED in page.text and 'role="status"' in page.text
    # Signing in from there works as ever.
    again = browser.post("/_mfa/login", {"username": "erin", "password": PASSWORD, "next": "/reports/x",
                                         "csrf_token": csrf_of(page.text)})
    assert again.status_code == 303 and again.headers["Location"] == "/reports/x"


@pytest.mark.parametrize("operation", ["revoke_sessions", "logout_elsewhere"])
def test_a_revoked_session_says_so(mw: MFAMiddleware, clock: Clock, operation: str) -> None:
    browser = signed_in(mw, clock)
    clock.advance(1)
    if operation == "revoke_sessions":
        mw.runtime.accounts.revoke_sessions("erin", actor="helpdesk")
    else:  # the same cookie, signed out in another window
        other = Browser(mw)
        other.client.set_cookie("mfa_session", str(browser.cookie("mfa_session")), domain="localhost")
        page = other.get("/_mfa/logout")
        other.post("/_mfa/logout", {"csrf_token": csrf_of(page.text)})
    clock.advance(6)  # the revocation interval
    away = browser.get("/reports/x")
    assert away.headers["Location"].endswith("&reason=signed_out")
    assert SIGNED_OUT in follow(browser, away).text


def test_the_account_pages_say_why_too(mw: MFAMiddleware, clock: Clock) -> None:
    browser = signed_in(mw, clock)
    clock.advance(31 * 60)
    away = browser.get("/_mfa/app-passwords")
    assert away.headers["Location"] == "/_mfa/login?next=/_mfa/app-passwords&reason=expired"


def test_a_first_visit_gives_no_reason(mw: MFAMiddleware) -> None:
    browser = Browser(mw)
    away = browser.get("/hello")
    assert away.headers["Location"] == "/_mfa/login?next=/hello"
    page = follow(browser, away)
    assert EXPIRED not in page.text and SIGNED_OUT not in page.text and 'id="restart-reason"' not in page.text


@pytest.mark.parametrize("reason", [
    pytest.param("Your account was hacked. Call +1 555 0100 now", id="free-text"),
    pytest.param("<script>alert(1)</script>", id="markup"),
    pytest.param("EXPIRED", id="code-in-other-case"),
    pytest.param("expired ", id="code-with-space"),
    pytest.param("__class__", id="attribute-name"),
])
def test_an_attacker_chosen_reason_is_never_shown(mw: MFAMiddleware, reason: str) -> None:
    from urllib.parse import quote

    browser = Browser(mw)
    plain = browser.get("/_mfa/login?next=/hello")
    page = browser.get("/_mfa/login?next=/hello&reason=" + quote(reason))
    assert page.status_code == 200
    assert 'id="restart-reason"' not in page.text
    for word in ("hacked", "555", "alert", "script", "__class__"):
        assert word not in page.text
    strip = re.compile(r'value="[^"]+"')  # the CSRF token differs
    assert strip.sub("", page.text) == strip.sub("", plain.text)


# -- no dead ends ------------------------------------------------------------------------------------------------------
def access_denied(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    browser = signed_in(mw, clock)
    return browser.get("/admin/x")  # erin is not in the admins group


def deny_rule(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    return signed_in(mw, clock).get("/blocked/x")


def not_found(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    return Browser(mw).get("/_mfa/no-such-page")


def bad_path(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    return Browser(mw).get("/a/%252e")  # an encoded dot segment: refused


def form_expired(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    return Browser(mw).post("/_mfa/login", {"username": "alice", "password": PASSWORD, "csrf_token": "forged"})


def sign_in_expired(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    return Browser(mw).get("/_mfa/verify")


def logout_confirmation(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    return signed_in(mw, clock).get("/_mfa/logout")


def signed_out(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    browser = signed_in(mw, clock)
    page = browser.get("/_mfa/logout")
    return browser.post("/_mfa/logout", {"csrf_token": csrf_of(page.text)})


def not_signed_in(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    return Browser(mw).get("/_mfa/logout")


def blocked(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    user = mw.runtime.store.get_user("erin")
    assert user is not None
    mw.runtime.store.set_block(user.id, now=clock.now, until=clock.now + 3600, reason="test")
    return Browser(mw).login("erin", PASSWORD, "/hello")


def locked(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    browser = Browser(mw)
    for _ in range(mw.runtime.config.lockout.max_failures):
        browser.login("alice", "wrong password", "/hello")
    return browser.login("alice", PASSWORD, "/hello")


def wrong_method(mw: MFAMiddleware, clock: Clock) -> TestResponse:
    return Browser(mw).client.delete("/_mfa/login", base_url="http://localhost")


@pytest.mark.parametrize(("reach", "status", "title", "must_offer"), [
    pytest.param(access_denied, 403, "Access denied", ["/_mfa/logout", "/"], id="access-denied"),
    pytest.param(deny_rule, 403, "Access denied", ["/_mfa/logout", "/"], id="deny-rule"),
    pytest.param(not_found, 404, "Page not found", ["/", "/_mfa/"], id="not-found"),
    pytest.param(bad_path, 400, "Bad request", ["/"], id="bad-request"),
    pytest.param(form_expired, 403, "Form expired", ["/_mfa/login", "/"], id="form-expired"),
    pytest.param(sign_in_expired, 401, "Sign-in expired", ["/_mfa/login", "/"], id="sign-in-expired"),
    pytest.param(logout_confirmation, 200, "Sign out", ["/"], id="logout-confirmation"),
    pytest.param(signed_out, 200, "Signed out", ["/_mfa/login", "/"], id="signed-out"),
    pytest.param(not_signed_in, 200, "Signed out", ["/_mfa/login", "/"], id="not-signed-in"),
    pytest.param(blocked, 403, "Account blocked", ["/"], id="blocked"),
    pytest.param(locked, 401, "Sign in", ["Sign in"], id="locked-looks-like-a-wrong-password"),
    pytest.param(wrong_method, 405, "Page not available", ["/"], id="method-not-allowed"),
])
def test_no_dead_ends(mw: MFAMiddleware, clock: Clock, reach: Any, status: int, title: str,
                      must_offer: list[str]) -> None:
    response = reach(mw, clock)
    assert response.status_code == status, response.text
    assert f"<h1>{title}</h1>" in response.text
    offered = ways_on(response.text)
    for href in must_offer:
        assert href in offered, (href, offered)


@pytest.mark.parametrize(("reach", "text"), [
    pytest.param(access_denied, "Sign in as someone else", id="access-denied"),
    pytest.param(not_found, "Your security info", id="not-found"),
    pytest.param(signed_out, "Sign in again", id="signed-out"),
    pytest.param(logout_confirmation, "Stay signed in", id="logout-confirmation"),
])
def test_the_way_on_is_named_for_people(mw: MFAMiddleware, clock: Clock, reach: Any, text: str) -> None:
    assert text in main_of(reach(mw, clock).text)


def test_every_message_page_has_a_way_on_even_without_a_link(mw: MFAMiddleware) -> None:
    """message.html itself: a page given no link still offers the way back to the app."""
    html = mw.pages.message_html("Anything", "Something happened.")
    assert ways_on(html) == ["/"]


def test_refusals_are_written_for_people(mw: MFAMiddleware, clock: Clock) -> None:
    page = wrong_method(mw, clock)
    assert "cannot be opened that way" in page.text
    assert "method is not allowed for the requested URL" not in page.text  # werkzeug's developer text


# -- focus after a failed sign-in --------------------------------------------------------------------------------------
def field(html: str, name: str) -> str:
    match = re.search(rf'<input id="{name}"[^>]*>', html, re.S)
    assert match, name
    return match.group(0)


@pytest.mark.parametrize(("username", "password", "fix", "other"), [
    pytest.param("alice", "wrong password", "password", "username", id="wrong-password"),
    pytest.param("nobody", "wrong password", "password", "username", id="unknown-user"),
    pytest.param("alice", "", "password", "username", id="password-missing"),
    pytest.param("", "something", "username", "password", id="username-missing"),
])
def test_after_a_failed_sign_in_the_focus_is_on_the_field_to_fix(mw: MFAMiddleware, username: str, password: str,
                                                                  fix: str, other: str) -> None:
    browser = Browser(mw)
    page = browser.get("/_mfa/login")
    failed = browser.post("/_mfa/login", {"username": username, "password": password,
                                          "csrf_token": csrf_of(page.text)})
    assert failed.status_code in (400, 401)
    assert 'id="form-error"' in failed.text
    to_fix = field(failed.text, fix)
    assert " autofocus" in to_fix and 'aria-invalid="true"' in to_fix and 'aria-describedby="form-error"' in to_fix
    assert "autofocus" not in field(failed.text, other) and "aria-invalid" not in field(failed.text, other)
    assert failed.text.count("autofocus") == 1


def test_a_fresh_sign_in_page_focuses_the_username(mw: MFAMiddleware) -> None:
    page = Browser(mw).get("/_mfa/login").text
    assert " autofocus" in field(page, "username") and "aria-invalid" not in page


@pytest.mark.parametrize(("name", "autocomplete"), [
    pytest.param("username", "username", id="username"),
    pytest.param("password", "current-password", id="password"),
])
def test_sign_in_fields_have_autocomplete(mw: MFAMiddleware, name: str, autocomplete: str) -> None:
    page = Browser(mw).get("/_mfa/login").text
    assert f'autocomplete="{autocomplete}"' in field(page, name)
    assert f'<label for="{name}">' in page


# -- enrollment on a phone -------------------------------------------------------------------------------------------
def test_authenticator_enrollment_offers_the_app_link_and_a_copy_button(mw: MFAMiddleware) -> None:
    browser = Browser(mw)
    browser.login("alice", PASSWORD, "/hello")
    start = browser.get("/_mfa/enroll")
    browser.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
    page = browser.get("/_mfa/enroll").text
    link = re.search(r'<a href="(otpauth://totp/[^"]+)">Open your authenticator app', page)
    assert link and "secret=" in link.group(1)
    assert re.search(r'<button type="button" class="copy" data-copy="secret" data-copy-compact hidden>', page)
    assert '<script src="/_mfa/static/copy.js" defer></script>' in page
    script = browser.get("/_mfa/static/copy.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
