"""Failed HTTP Basic attempts under concurrency (DESIGN.md section 5, issue 3).

Fifty threads, each with its own werkzeug test client on the same middleware, are released together by a
barrier and send a wrong credential to a ``basic = true`` route. Every attempt is counted exactly once on the
user's atomic failure counter; once the limit is reached no attempt counts beyond it, and the lockout holds on
every path: Basic (even with the correct app password, cached or not), the forms login with the right password,
and the second-factor page with the right code. Every test runs on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import threading
from base64 import b64encode
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyotp
import pytest
from werkzeug.test import Client, TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.store.sql import UserRecord
from tests.support.mfa import DEFAULT_RULES, Browser, Clock, csrf_of, make_middleware

USERNAME = "alice"
PASSWORD = "correct horse battery staple"
ATTEMPTS = 50
BARRIER_TIMEOUT = 60.0
DAV = "/dav/calendar.ics"
BASIC_RULES = [{"path": "/dav/*", "policy": "two_factor", "basic": True}, *DEFAULT_RULES]

WRONG_CREDENTIALS = [
    pytest.param("wrongwrongwrongw", id="app-password-shaped"),
    pytest.param("wrong main password", id="password-shaped"),
]


def basic(username: str, password: str) -> dict[str, str]:
    token = b64encode(f"{username}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def dav(mw: MFAMiddleware, password: str, client: Client | None = None) -> TestResponse:
    return (client or Client(mw)).get(DAV, headers=basic(USERNAME, password),
                                      environ_base={"REMOTE_ADDR": "192.0.2.10"})


@dataclass
class Site:
    mw: MFAMiddleware
    clock: Clock
    secret: str
    app_password: str  # used once before the attack, so the Basic cache holds it
    spare_app_password: str  # never used: nothing cached

    def user(self) -> UserRecord:
        user = self.mw.runtime.store.get_user(USERNAME)
        assert user is not None
        return user


def make_site(database_url: str, max_failures: int) -> Site:
    clock = Clock()
    mw = make_middleware(database_url, clock, lockout={"max_failures": max_failures}, rules=BASIC_RULES)
    try:
        rt = mw.runtime
        rt.accounts.add(USERNAME, actor="test", password=PASSWORD)
        secret = Browser(mw).sign_in_and_enroll(USERNAME, PASSWORD, clock)
        user = rt.accounts.get(USERNAME)
        assert user.state == "enforced"
        _, laptop = rt.app_passwords.create(user, "laptop", actor="test")
        _, phone = rt.app_passwords.create(user, "phone", actor="test")
        warm = dav(mw, laptop)
        assert warm.status_code == 200 and f"user={USERNAME}" in warm.text, warm.text
    except BaseException:
        mw.runtime.close()
        raise
    return Site(mw, clock, secret, laptop, phone)


@pytest.fixture
def site(database_url: str) -> Iterator[Site]:
    """Alice enrolled (enforced), two app passwords, a generous limit of 100 failures."""
    s = make_site(database_url, 100)
    try:
        yield s
    finally:
        s.mw.runtime.close()


@pytest.fixture
def strict_site(database_url: str) -> Iterator[Site]:
    s = make_site(database_url, 10)
    try:
        yield s
    finally:
        s.mw.runtime.close()


def attack(mw: MFAMiddleware, password: str, count: int = ATTEMPTS) -> list[TestResponse]:
    """``count`` threads, each with its own client, send the same wrong Basic credential at the same moment."""
    barrier = threading.Barrier(count)

    def one() -> TestResponse:
        client = Client(mw)
        barrier.wait(timeout=BARRIER_TIMEOUT)
        return dav(mw, password, client)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(one) for _ in range(count)]
        return [f.result() for f in futures]


def assert_basic_challenge(response: TestResponse) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Basic realm="), response.headers
    assert "app path=" not in response.text, "the app must not be reached"


# -- counting -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong", WRONG_CREDENTIALS)
def test_fifty_concurrent_wrong_attempts_count_fifty(site: Site, wrong: str) -> None:
    before = site.user()

    responses = attack(site.mw, wrong)

    for response in responses:
        assert_basic_challenge(response)
    after = site.user()
    assert after.failed_count - before.failed_count == ATTEMPTS
    assert after.consecutive_failures - before.consecutive_failures == ATTEMPTS
    assert not after.locked(site.clock.now)
    assert dav(site.mw, site.spare_app_password).status_code == 200, "below the limit nothing is locked"


@pytest.mark.parametrize("wrong", WRONG_CREDENTIALS)
def test_concurrent_attempts_stop_counting_at_the_limit(strict_site: Site, wrong: str) -> None:
    responses = attack(strict_site.mw, wrong)

    for response in responses:
        assert_basic_challenge(response)
    after = strict_site.user()
    assert after.locked(strict_site.clock.now)
    assert (after.failed_count, after.consecutive_failures) == (10, 10), (
        "attempts made while the account is locked must not be counted")
    assert any("paused" in r.text for r in responses)


# -- the lockout holds on every path --------------------------------------------------------------------------
def assert_paused_on_basic(site: Site, password: str) -> None:
    response = dav(site.mw, password)
    assert_basic_challenge(response)
    assert "paused" in response.text, response.text


def forms_login(site: Site) -> None:
    response = Browser(site.mw).login(USERNAME, PASSWORD)
    assert response.status_code == 401, response.text  # the same answer as any wrong password (no enumeration)
    assert "Incorrect username or password." in response.text and "paused" in response.text


def second_factor(site: Site, pending: Browser, token: str) -> None:
    """The code page, opened before the lockout, posts the right code during it: refused unchecked, and the
    sign-in goes no further (the page itself now says the account is paused)."""
    code = pyotp.TOTP(site.secret).at(site.clock.now + 30)  # a step enrollment has not used
    response = pending.post("/_mfa/verify", {"code": code, "csrf_token": token})
    assert response.status_code == 429, response.text
    assert "Account locked" in response.text
    assert pending.get("/").status_code == 302, "no session was started"


@pytest.mark.parametrize("path", [
    pytest.param("basic-app-password", id="basic-app-password"),
    pytest.param("basic-cached-app-password", id="basic-cached-app-password"),
    pytest.param("basic-main-password", id="basic-main-password"),
    pytest.param("forms-login", id="forms-login"),
    pytest.param("second-factor", id="second-factor"),
])
def test_lockout_holds_on_every_path(strict_site: Site, path: str) -> None:
    site = strict_site
    pending = Browser(site.mw)  # signed in with the password before the attack: waiting for the code
    first = pending.login(USERNAME, PASSWORD)
    assert first.status_code == 303 and first.headers["Location"].endswith("/_mfa/verify"), first.text
    token = csrf_of(pending.get("/_mfa/verify").text)

    attack(site.mw, "wrongwrongwrongw")
    locked = site.user()
    assert locked.locked(site.clock.now)

    if path == "basic-app-password":
        assert_paused_on_basic(site, site.spare_app_password)
    elif path == "basic-cached-app-password":
        # Verified before the lockout and cached: refused once the lock marker has reached the process's
        # revocation view, i.e. within the revocation interval (DESIGN.md section 5).
        site.clock.advance(site.mw.runtime.config.session.revocation_interval)
        assert_paused_on_basic(site, site.app_password)
    elif path == "basic-main-password":
        assert_paused_on_basic(site, PASSWORD)
    elif path == "forms-login":
        forms_login(site)
    else:
        second_factor(site, pending, token)
    after = site.user()
    assert (after.failed_count, after.consecutive_failures) == (locked.failed_count, locked.consecutive_failures), (
        "a refused attempt on a locked account counts nothing")
    assert after.locked(site.clock.now)
