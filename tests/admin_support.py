"""Helpers for the admin portal tests: a signed-in administrator (with the authenticator app) on the test client."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from html import unescape

import pyotp
from werkzeug.test import TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.pages.app import FRESH_MFA
from tests.support.mfa import Browser, Clock, csrf_of

PASSWORD = "correct horse battery"


def token_of(html: str) -> str:
    match = re.search(r'name="token" value="([^"]+)"', html)
    assert match, "no confirmation token on the page"
    return unescape(match.group(1))


class Admin:
    """An administrator signed in with password and authenticator app (a fresh second factor)."""

    def __init__(self, mw: MFAMiddleware, clock: Clock, username: str = "root") -> None:
        self.mw, self.clock, self.username = mw, clock, username
        self.browser = Browser(mw)
        self.secret = self.browser.sign_in_and_enroll(username, PASSWORD, clock)

    def get(self, path: str) -> TestResponse:
        return self.browser.get("/_mfa/admin" + path)

    def csrf(self) -> str:
        return csrf_of(self.get("").text)

    def post(self, path: str, data: Mapping[str, Any], **kw: Any) -> TestResponse:
        return self.browser.post("/_mfa/admin" + path, data, **kw)  # type: ignore[arg-type]

    def confirm_page(self, action: str, name: str, **form: str) -> TestResponse:
        return self.post("/action", {"action": action, "name": name, "csrf_token": self.csrf(), **form})

    def act(self, action: str, name: str, **form: str) -> TestResponse:
        page = self.confirm_page(action, name, **form)
        assert page.status_code == 200, page.text
        return self.post("/confirm", {"token": token_of(page.text), "csrf_token": csrf_of(page.text)})

    def step_up(self) -> None:
        """A new second factor (the step-up page), after the last one grew old."""
        self.clock.advance(FRESH_MFA + 30)
        r = self.browser.get("/_mfa/step-up?fresh=1&next=/_mfa/admin")
        assert r.status_code == 303, r.text
        page = self.browser.get("/_mfa/verify")
        done = self.browser.post("/_mfa/verify", {"code": pyotp.TOTP(self.secret).at(self.clock.now),
                                                  "csrf_token": csrf_of(page.text)})
        assert done.status_code == 303 and done.headers["Location"] == "/_mfa/admin", done.text
