"""Passwordless sign-in with a passkey against an attacker who writes the authenticator's answers himself.

No browser: the pages are driven through werkzeug's test client as a browser would drive them (the sign-in page
for the pre-sign-in cookie and CSRF token, ``POST /_mfa/login/passkey/options`` for a ceremony, ``POST
/_mfa/login/passkey`` with the assertion), and the assertions are built by hand (see ``test_webauthn_ceremony``).
Each refused case is the valid sign-in with one thing changed, and the valid one is in the same table.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest
from werkzeug.test import TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.web.cookies import cookie_names
from mfa_middleware.factors.webauthn.passwordless import LOGIN_TTL, user_handle
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware
from tests.test_webauthn_ceremony import ORIGIN, UP, Assertion, Authenticator, Site



@dataclass
class Passwordless:
    """The site with passwordless sign-in, and a browser-less browser on it."""

    site: Site

    @property
    def mw(self) -> MFAMiddleware:
        return self.site.mw

    def browser(self) -> Browser:
        return Browser(self.mw, base=ORIGIN)

    def enrolled(self, username: str, auth: Authenticator, name: str = "Laptop") -> int:
        user = self.site.user(username)
        self.site.register(user, name, auth)
        return user.id

    @staticmethod
    def begin(browser: Browser, next_path: str = "/") -> tuple[str, str]:
        """The sign-in page (pre-sign-in cookie, CSRF token), then a ceremony: (csrf, challenge)."""
        page = browser.get(f"/_mfa/login?next={next_path}")
        assert page.status_code == 200 and 'id="passkey-sign-in"' in page.text
        csrf = csrf_of(page.text)
        options = browser.post("/_mfa/login/passkey/options", {"csrf_token": csrf})
        assert options.status_code == 200, options.text
        data = json.loads(options.text)
        assert data["allowCredentials"] == [] and data["userVerification"] == "required"
        return csrf, str(data["challenge"])

    @staticmethod
    def post(browser: Browser, csrf: str, credential: str, next_path: str = "/") -> TestResponse:
        return browser.post("/_mfa/login/passkey", {"csrf_token": csrf, "credential": credential,
                                                    "next": next_path})

    @staticmethod
    def signed_in_as(browser: Browser) -> str:
        return browser.get("/").text


@pytest.fixture
def make_pl(sqlite_url: str) -> Iterator[Callable[..., Passwordless]]:
    built: list[MFAMiddleware] = []

    def build(url: str = sqlite_url, passwordless: bool = True, **overrides: Any) -> Passwordless:
        clock = Clock()
        webauthn = {"origins": [ORIGIN], "passwordless": passwordless, **overrides.pop("webauthn", {})}
        mw = make_middleware(url, clock, methods={"enabled": ["webauthn"], "webauthn": webauthn}, **overrides)
        built.append(mw)
        return Passwordless(Site(mw, clock))

    yield build
    for mw in built:
        mw.runtime.close()


def audit(pl: Passwordless, username: str | None) -> list[tuple[str, str]]:
    return [(r.event, r.result) for r in pl.mw.runtime.store.list_audit(username=username)]


def failures(pl: Passwordless, username: str) -> int:
    user = pl.mw.runtime.store.get_user(username)
    assert user is not None
    return user.failed_count


# -- the one-thing-changed table -------------------------------------------------------------------------------------
OWN = "own"  # the credential owner's user handle


@pytest.mark.parametrize(("case", "handle", "ok"), [
    pytest.param(Assertion(), OWN, True, id="valid"),
    pytest.param(Assertion(flags=UP), OWN, False, id="no-user-verification"),
    pytest.param(Assertion(), None, False, id="no-user-handle"),
    pytest.param(Assertion(), "erin", False, id="user-handle-of-another-user"),
    pytest.param(Assertion(origin="https://evil.example"), OWN, False, id="wrong-origin"),
    pytest.param(Assertion(rp_id="evil.example"), OWN, False, id="wrong-rp-id-hash"),
    pytest.param(Assertion(foreign_key=True), OWN, False, id="another-key"),
    pytest.param(Assertion(tamper_signature=True), OWN, False, id="flipped-signature-bit"),
    pytest.param(Assertion(ceremony="webauthn.create"), OWN, False, id="registration-type"),
])
def test_passwordless_with_one_thing_wrong(make_pl: Callable[..., Passwordless], case: Assertion,
                                           handle: str | None, ok: bool) -> None:
    pl = make_pl()
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    erin_id = pl.enrolled("erin", Authenticator())
    browser = pl.browser()
    csrf, challenge = pl.begin(browser, "/docs")
    who = {OWN: user_handle(dana_id), "erin": user_handle(erin_id), None: None}[handle]
    answer = pl.post(browser, csrf, Assertion(**{**case.__dict__, "user_handle": who}).build(auth, challenge),
                     "/docs")
    if ok:
        assert answer.status_code == 303 and answer.headers["Location"] == "/docs", answer.text
        assert "user=dana level=2" in pl.signed_in_as(browser)
        assert ("passwordless", "success") in audit(pl, "dana")
        assert failures(pl, "dana") == 0
        return
    assert answer.status_code == 401
    assert "Incorrect username or password" in answer.text  # the forms page's one failure message
    assert "user=dana" not in pl.signed_in_as(browser)
    assert ("passwordless", "failure") in audit(pl, "dana")
    assert failures(pl, "dana") == 1  # counted like a wrong password


def test_registered_without_user_verification_is_a_second_factor_only(
        make_pl: Callable[..., Passwordless]) -> None:
    """A security key registered with presence only: it can never answer with UV, so never signs in alone."""
    pl = make_pl()
    auth = Authenticator()
    user = pl.site.user("dana")
    method_id, challenge, route = pl.site.enroll_begin(user, "Key")
    assert pl.site.post_registration(route, auth.register(challenge, flags=UP)) == 200
    assert pl.site.enroll_finish(user, method_id) == "accepted"
    browser = pl.browser()
    csrf, challenge = pl.begin(browser)
    answer = pl.post(browser, csrf, Assertion(flags=UP, user_handle=user_handle(user.id)).build(auth, challenge))
    assert answer.status_code == 401
    assert "user=dana" not in pl.signed_in_as(browser)


def test_unknown_and_removed_credentials(make_pl: Callable[..., Passwordless]) -> None:
    pl = make_pl()
    laptop, yubikey, stranger = Authenticator(), Authenticator(), Authenticator()
    dana_id = pl.enrolled("dana", laptop)
    pl.enrolled("dana", yubikey, "YubiKey")
    dana = pl.mw.runtime.store.get_user("dana")
    assert dana is not None
    removed = pl.site.method(dana, "YubiKey")
    assert pl.mw.runtime.store.delete_method(dana_id, removed.id, keep_one=True)
    browser = pl.browser()
    for auth in (stranger, yubikey):
        csrf, challenge = pl.begin(browser)
        answer = pl.post(browser, csrf, Assertion(user_handle=user_handle(dana_id)).build(auth, challenge))
        assert answer.status_code == 401 and "Incorrect username or password" in answer.text
    assert "user=dana" not in pl.signed_in_as(browser)
    # Counted against the client address, not against Dana (nobody's credential was checked).
    assert failures(pl, "dana") == 0
    assert audit(pl, None).count(("passwordless", "failure")) == 2
    # "Require re-registration" deletes the user's methods: the laptop is unknown now too.
    pl.mw.runtime.store.delete_methods(dana_id)
    csrf, challenge = pl.begin(browser)
    answer = pl.post(browser, csrf, Assertion(user_handle=user_handle(dana_id)).build(laptop, challenge))
    assert answer.status_code == 401


def test_challenge_of_another_browser_is_refused(make_pl: Callable[..., Passwordless]) -> None:
    """Login CSRF: an attacker's ceremony (and his own valid assertion) cannot sign in a victim's browser."""
    pl = make_pl()
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    attacker, victim = pl.browser(), pl.browser()
    _, attacker_challenge = pl.begin(attacker)
    victim_csrf, _ = pl.begin(victim)
    raw = Assertion(user_handle=user_handle(dana_id)).build(auth, attacker_challenge)
    answer = pl.post(victim, victim_csrf, raw)
    assert answer.status_code == 401 and "expired or was used" in answer.text
    assert "user=dana" not in pl.signed_in_as(victim)
    # The attacker's own CSRF token is bound to his cookie: refused in the victim's browser before anything else.
    attacker_page = attacker.get("/_mfa/login")
    assert pl.post(victim, csrf_of(attacker_page.text), raw).status_code == 403
    # The refusal was the binding: the same assertion signs in the browser that asked for the challenge.
    attacker_csrf = csrf_of(attacker.get("/_mfa/login").text)
    assert pl.post(attacker, attacker_csrf, raw).status_code == 303
    assert "user=dana level=2" in pl.signed_in_as(attacker)


def test_options_need_the_pages_cookie_and_csrf_token(make_pl: Callable[..., Passwordless]) -> None:
    pl = make_pl()
    browser = pl.browser()
    assert browser.post("/_mfa/login/passkey/options", {"csrf_token": "x"}).status_code == 403
    page = browser.get("/_mfa/login")
    assert browser.post("/_mfa/login/passkey/options", {"csrf_token": "forged"}).status_code == 403
    assert browser.post("/_mfa/login/passkey/options", {"csrf_token": csrf_of(page.text)}).status_code == 200
    assert browser.get("/_mfa/login/passkey/options").status_code in (404, 405)


def test_replayed_and_expired_assertions_are_refused(make_pl: Callable[..., Passwordless]) -> None:
    pl = make_pl()
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    browser = pl.browser()
    csrf, challenge = pl.begin(browser)
    raw = Assertion(user_handle=user_handle(dana_id)).build(auth, challenge)
    assert pl.post(browser, csrf, raw).status_code == 303
    # The same answer again (another browser's session would not matter: this one's ceremony is used).
    again = pl.browser()
    csrf_again, _ = pl.begin(again)
    assert pl.post(again, csrf_again, raw).status_code == 401
    # Asking again drops the browser's earlier challenge; a challenge answered after LOGIN_TTL is refused.
    late = pl.browser()
    csrf_late, first = pl.begin(late)
    _, second = pl.begin(late)
    assert pl.post(late, csrf_late, Assertion(user_handle=user_handle(dana_id)).build(auth, first)).status_code == 401
    pl.site.clock.advance(LOGIN_TTL + 1)
    assert pl.post(late, csrf_late, Assertion(user_handle=user_handle(dana_id)).build(auth, second)).status_code \
        == 401


def test_counter_regression_is_refused_and_audited(make_pl: Callable[..., Passwordless]) -> None:
    pl = make_pl()
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    for _ in range(2):
        browser = pl.browser()
        csrf, challenge = pl.begin(browser)
        assert pl.post(browser, csrf, Assertion(user_handle=user_handle(dana_id)).build(auth, challenge)) \
            .status_code == 303
    clone = Authenticator(key=auth.key, credential_id=auth.credential_id, sign_count=0)
    browser = pl.browser()
    csrf, challenge = pl.begin(browser)
    answer = pl.post(browser, csrf, Assertion(user_handle=user_handle(dana_id)).build(clone, challenge))
    assert answer.status_code == 401
    assert ("webauthn", "counter_regression") in audit(pl, "dana")
    assert failures(pl, "dana") == 1


@pytest.mark.parametrize(("change", "status", "text"), [
    pytest.param(lambda rt, u: rt.store.set_block(u.id, now=rt.clock(), until=rt.clock() + 3600, reason="test"),
                 403, "has been blocked", id="blocked"),
    pytest.param(lambda rt, u: [rt.lockout.fail(u, rt.clock()) for _ in range(rt.config.lockout.max_failures)],
                 401, "Incorrect username or password", id="locked"),
    pytest.param(lambda rt, u: rt.store.update_user(u.id, now=rt.clock(), state="disabled"), 401,
                 "Incorrect username or password", id="mfa-exempt"),
    pytest.param(lambda rt, u: rt.store.add_revocation(u.username, now=rt.clock()), 401,
                 "Incorrect username or password", id="revoked-during-the-ceremony"),
])
def test_only_a_user_who_may_sign_in(make_pl: Callable[..., Passwordless],
                                     change: Callable[[Any, Any], object], status: int, text: str) -> None:
    pl = make_pl()
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    browser = pl.browser()
    csrf, challenge = pl.begin(browser)
    dana = pl.mw.runtime.store.get_user("dana")
    change(pl.mw.runtime, dana)
    answer = pl.post(browser, csrf, Assertion(user_handle=user_handle(dana_id)).build(auth, challenge))
    assert answer.status_code == status and text in answer.text
    assert "user=dana" not in pl.signed_in_as(browser)


def test_failures_lock_the_account(make_pl: Callable[..., Passwordless]) -> None:
    pl = make_pl(lockout={"max_failures": 3})
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    for _ in range(3):
        browser = pl.browser()
        csrf, challenge = pl.begin(browser)
        assert pl.post(browser, csrf, Assertion(flags=UP, user_handle=user_handle(dana_id)).build(auth, challenge)) \
            .status_code == 401
    # Locked: now even the right passkey fails, unchecked, with the same answer.
    browser = pl.browser()
    csrf, challenge = pl.begin(browser)
    answer = pl.post(browser, csrf, Assertion(user_handle=user_handle(dana_id)).build(auth, challenge))
    assert answer.status_code == 401 and "Incorrect username or password" in answer.text
    assert ("passwordless", "locked") in audit(pl, "dana")
    assert pl.site.sign_count(pl.site.method(pl.mw.runtime.store.get_user("dana"), "Laptop")) == 0  # type: ignore[arg-type]


def test_success_clears_only_that_addresses_failures(make_pl: Callable[..., Passwordless]) -> None:
    """Regulation, as for the forms sign-in: a passkey sign-in from address A takes A's failures on the user off
    the counters; an attacker's failures from address B on the same account stay counted (otherwise the owner's
    sign-in would wipe a sprayer's record, and the sprayer could go on for ever)."""
    pl = make_pl(lockout={"max_failures": 6})
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)

    def attempt(address: str, assertion: Assertion) -> int:
        browser = pl.browser()
        browser.remote_addr = address
        csrf, challenge = pl.begin(browser)
        return pl.post(browser, csrf, assertion.build(auth, challenge)).status_code

    wrong = Assertion(flags=UP, user_handle=user_handle(dana_id))
    assert [attempt("203.0.113.9", wrong) for _ in range(3)] == [401, 401, 401]  # the attacker, address B
    assert attempt("198.51.100.7", wrong) == 401  # the owner's own slip, address A
    assert failures(pl, "dana") == 4
    assert attempt("198.51.100.7", Assertion(user_handle=user_handle(dana_id))) == 303
    assert failures(pl, "dana") == 3  # B's three stay; A's one is gone
    # B's next three failures lock the account: its record was not wiped by the owner's sign-in.
    assert [attempt("203.0.113.9", wrong) for _ in range(3)] == [401, 401, 401]
    user = pl.mw.runtime.store.get_user("dana")
    assert user is not None and user.locked(pl.site.clock.now)


def test_session_is_a_full_one(make_pl: Callable[..., Passwordless]) -> None:
    """The same session a password and a second factor make: two_factor routes and the fresh-MFA pages open."""
    pl = make_pl()
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    browser = pl.browser()
    csrf, challenge = pl.begin(browser)
    assert pl.post(browser, csrf, Assertion(user_handle=user_handle(dana_id)).build(auth, challenge)).status_code \
        == 303
    assert "user=dana level=2" in browser.get("/strict/page").text
    assert browser.get("/_mfa/methods/add").status_code == 200  # a second factor from the last few minutes


@pytest.mark.parametrize(("passwordless", "primary", "remote_user", "status"), [
    pytest.param(False, None, None, 404, id="config-off"),
    pytest.param(True, {"methods": ["remote_user"]}, None, 404, id="primary-not-forms"),
    pytest.param(True, {"methods": ["remote_user", "forms"]}, "dana", 403, id="server-named-the-user"),
])
def test_not_offered(make_pl: Callable[..., Passwordless], passwordless: bool, primary: dict[str, Any] | None,
                     remote_user: str | None, status: int) -> None:
    pl = make_pl(passwordless=passwordless, **({"primary": primary} if primary else {}))
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    browser = pl.browser()
    environ = {"REMOTE_ADDR": "127.0.0.1", **({"REMOTE_USER": remote_user} if remote_user else {})}
    page = browser.get("/_mfa/login", environ_base=environ)
    assert "passkey-sign-in" not in page.text
    assert browser.get("/_mfa/webauthn/passwordless.js").status_code == (200 if passwordless else 404)
    form = {"csrf_token": csrf_of(page.text) if 'name="csrf_token"' in page.text else "x"}
    assert browser.post("/_mfa/login/passkey/options", form, environ_base=environ).status_code == status
    answer = browser.post("/_mfa/login/passkey", {**form, "credential": Assertion(
        user_handle=user_handle(dana_id)).build(auth, "A" * 43)}, environ_base=environ)
    assert answer.status_code == status
    assert ("passwordless", "success") not in audit(pl, "dana")


def test_basic_path_never_takes_a_passkey(make_pl: Callable[..., Passwordless]) -> None:
    """The Basic path checks app passwords (or a password) only: an assertion as the password is refused."""
    import base64

    pl = make_pl(rules=[{"path": "/*", "policy": "two_factor", "basic": True}])
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    raw = Assertion(user_handle=user_handle(dana_id)).build(auth, "A" * 43)
    token = base64.b64encode(f"dana:{raw}".encode()).decode()
    answer = pl.browser().get("/", headers={"Authorization": f"Basic {token}"})
    assert answer.status_code == 401


# -- concurrency -----------------------------------------------------------------------------------------------------
def test_concurrent_uses_of_one_assertion_sign_in_once(make_pl: Callable[..., Passwordless],
                                                       database_url: str) -> None:
    pl = make_pl(database_url)
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    browser = pl.browser()
    csrf, challenge = pl.begin(browser)
    raw = Assertion(user_handle=user_handle(dana_id)).build(auth, challenge)
    name = cookie_names(pl.mw.runtime.config.session, True).anonymous
    anon = browser.client.get_cookie(name, domain="sso.example.com")
    assert anon is not None
    cookie = f"{name}={anon.value}"
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        from werkzeug.test import Client as WsgiClient

        barrier.wait(timeout=30)
        answer = WsgiClient(pl.mw, use_cookies=False).post(
            "/_mfa/login/passkey", base_url=ORIGIN, headers={"Cookie": cookie},
            data={"csrf_token": csrf, "credential": raw, "next": "/"})
        with lock:
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(statuses) == 20, "a sign-in hung for more than 60 s"
    assert statuses.count(303) == 1, statuses
    assert audit(pl, "dana").count(("passwordless", "success")) == 1


# -- the other adapters: ASGI and forward auth -----------------------------------------------------------------------
def test_through_asgi(make_pl: Callable[..., Passwordless], sqlite_url: str) -> None:
    """The same flow through the ASGI adapter (the pages in its thread pool), on the same user store."""
    import asyncio

    import httpx

    from mfa_middleware import ASGIMFAMiddleware

    pl = make_pl()
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)

    async def echo(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                   send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        identity = scope.get("state", {}).get("mfa.identity") or scope.get("mfa.identity")
        body = f"user={getattr(identity, 'username', '-')} level={getattr(identity, 'level', '-')}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    mw = ASGIMFAMiddleware(echo, pl.mw.runtime.config, clock=pl.site.clock)

    async def go() -> tuple[int, str]:
        transport = httpx.ASGITransport(app=mw, client=("192.0.2.10", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            page = await client.get("/_mfa/login")
            csrf = csrf_of(page.text)
            options = (await client.post("/_mfa/login/passkey/options", data={"csrf_token": csrf})).json()
            raw = Assertion(user_handle=user_handle(dana_id)).build(auth, options["challenge"])
            answer = await client.post("/_mfa/login/passkey", data={"csrf_token": csrf, "credential": raw,
                                                                    "next": "/"})
            return answer.status_code, (await client.get("/")).text

    try:
        status, text = asyncio.run(go())
    finally:
        mw.runtime.close()
    assert status == 303
    assert "user=dana level=2" in text


def test_through_forward_auth(make_pl: Callable[..., Passwordless], sqlite_url: str) -> None:
    """The forward-auth server serves the same sign-in page (behind the proxy, on the original host): a passkey
    signs in there, and the authorization endpoint then passes the original request as the user."""
    from werkzeug.test import Client as WsgiClient

    from mfa_middleware.middleware import ForwardAuthApp
    from mfa_middleware.runtime import Runtime
    from tests.support.mfa import FAST_HASHER

    pl = make_pl(trusted_proxies=["127.0.0.1"])
    auth = Authenticator()
    dana_id = pl.enrolled("dana", auth)
    rt = Runtime(pl.mw.runtime.config, clock=pl.site.clock, password_hasher=FAST_HASHER)
    app = ForwardAuthApp(rt)
    try:
        client = WsgiClient(app)
        proxied = {"REMOTE_ADDR": "127.0.0.1"}
        headers = {"X-Forwarded-For": "192.0.2.10", "X-Forwarded-Proto": "https"}
        page = client.get("/_mfa/login", base_url=ORIGIN, headers=headers, environ_base=proxied)
        assert 'id="passkey-sign-in"' in page.text
        csrf = csrf_of(page.text)
        options = client.post("/_mfa/login/passkey/options", base_url=ORIGIN, headers=headers,
                              environ_base=proxied, data={"csrf_token": csrf})
        raw = Assertion(user_handle=user_handle(dana_id)).build(auth, json.loads(options.text)["challenge"])
        answer = client.post("/_mfa/login/passkey", base_url=ORIGIN, headers=headers, environ_base=proxied,
                             data={"csrf_token": csrf, "credential": raw, "next": "/docs"})
        assert answer.status_code == 303 and answer.headers["Location"] == "/docs", answer.text
        authorized = client.get("/_mfa/auth/forward", base_url=ORIGIN, environ_base=proxied, headers={
            **headers, "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/docs", "X-Forwarded-Host": "sso.example.com"})
        assert authorized.status_code == 200 and authorized.headers["Remote-User"] == "dana"
    finally:
        rt.close()
