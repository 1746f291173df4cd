"""Failed sign-ins reveal nothing about the account (issue 7, finding 8; DESIGN.md section 5).

An unknown user, a user without a local password (Windows sign-in only), a wrong password and a locked account (with
a wrong or even the correct password) get the same answer on the password form and on HTTP Basic: the same status,
body and headers (the Date, the cookie values, the CSRF token and the echoed
username aside), after exactly one argon2 verification each (counted), in the same time within noise.

Timing uses a real argon2id hasher with a small cost (a few milliseconds per verification), interleaves the
cases round by round so that load from other processes hits them alike, and compares medians with a generous
tolerance (40 % of the fastest, or 5 ms, whichever is larger): the old code answered a user without a local
password with no verification at all (6 ms against 130 ms for an unknown user).
"""

from __future__ import annotations

import re
import statistics
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from werkzeug.test import Client, TestResponse

from mfa_middleware import MFAMiddleware
from tests.support.lockout import BASIC_RULES, CountingHasher
from tests.support.mfa import Browser, Clock, csrf_of, echo_app, make_config

PASSWORD = "correct horse battery staple"
ADDRESS = "192.0.2.10"
LOCKED_ADDRESS = "192.0.2.66"
ROUNDS = 21
RELATIVE = 0.40
ABSOLUTE = 0.005


@dataclass(frozen=True)
class Case:
    username: str
    password: str
    address: str = ADDRESS


CASES = {
    "unknown-user": Case("nobody", "some password"),
    "no-local-password": Case("winuser", "some password"),
    "wrong-password": Case("alice", "wrong password"),
    "locked-account": Case("locked", "wrong password"),
    "locked-account-correct-password": Case("locked", PASSWORD),
}

#: from a banned client address (regulation): 429, the same whatever username and password were sent
BANNED_CASES = {
    "banned-unknown-user": Case("nobody", "some password", LOCKED_ADDRESS),
    "banned-wrong-password": Case("alice", "wrong password", LOCKED_ADDRESS),
    "banned-correct-password": Case("alice", PASSWORD, LOCKED_ADDRESS),
    "banned-locked-account": Case("locked", PASSWORD, LOCKED_ADDRESS),
}


@dataclass
class Site:
    mw: MFAMiddleware
    hasher: CountingHasher
    clock: Clock


@contextmanager
def make_site(database_url: str) -> Iterator[Site]:
    """Alice (local password), winuser (none), locked (locked account), and a locked client address."""
    clock = Clock()
    # A small but real argon2id cost: the verification dominates the answer time as it does in production.
    hasher = CountingHasher(time_cost=2, memory_cost=8192)
    config = make_config(database_url, rules=BASIC_RULES,
                         lockout={"max_failures": 100, "max_failures_per_client": 1_000_000})
    mw = MFAMiddleware(echo_app, config, clock=clock, password_hasher=hasher)
    rt = mw.runtime
    try:
        rt.store.upgrade()
        rt.accounts.add("alice", actor="test", password=PASSWORD)
        rt.accounts.add("winuser", actor="test")  # Windows sign-in only: no local password
        locked = rt.accounts.add("locked", actor="test", password=PASSWORD)
        rt.store.record_failure(locked.id, now=clock.now, max_failures=1, reset_after=3600, lock_for=3600)
        rt.store.record_client_failure(LOCKED_ADDRESS, now=clock.now, max_failures=1, reset_after=3600,
                                       lock_for=3600)
        yield Site(mw, hasher, clock)
    finally:
        rt.close()


@pytest.fixture
def site(database_url: str) -> Iterator[Site]:
    with make_site(database_url) as s:
        yield s


def forms_attempt(site: Site, case: Case) -> TestResponse:
    client = Client(site.mw)
    page = client.get("/_mfa/login", environ_base={"REMOTE_ADDR": case.address})
    form = {"username": case.username, "password": case.password, "next": "/", "csrf_token": csrf_of(page.text)}
    return client.post("/_mfa/login", data=form, environ_base={"REMOTE_ADDR": case.address})


def basic_attempt(site: Site, case: Case) -> TestResponse:
    token = b64encode(f"{case.username}:{case.password}".encode()).decode()
    return Client(site.mw).get("/mail/x", headers={"Authorization": f"Basic {token}"},
                               environ_base={"REMOTE_ADDR": case.address})


PATHS = [pytest.param(forms_attempt, id="forms"), pytest.param(basic_attempt, id="basic")]
Attempt = Callable[[Site, Case], TestResponse]


def comparable(response: TestResponse, case: Case) -> tuple[int, list[tuple[str, str]], str]:
    """Status, headers and body with what legitimately differs per request (the date, cookie values, the CSRF
    token and the username the client typed, echoed in the form) replaced by placeholders."""
    headers = []
    for name, value in response.headers.items():
        if name == "Date":
            continue
        if name == "Content-Length":  # follows the echoed username and the token: checked, then left out
            assert int(value) == len(response.get_data())
            continue
        if name == "Set-Cookie":
            value = re.sub(r"^([^=]+)=[^;]*", r"\1=VALUE", value)
        headers.append((name, value))
    body = response.get_data(as_text=True)
    body = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value="CSRF"', body)
    body = body.replace(f'value="{case.username}"', 'value="USERNAME"')
    return response.status_code, headers, body


@pytest.mark.parametrize("attempt", PATHS)
def test_every_failure_gets_the_same_answer(site: Site, attempt: Attempt) -> None:
    answers = {}
    for name, case in CASES.items():
        before = site.hasher.calls
        response = attempt(site, case)
        assert site.hasher.calls - before == 1, f"{name}: exactly one argon2 verification per attempt"
        answers[name] = comparable(response, case)
    reference = answers["wrong-password"]
    assert reference[0] == 401
    for name, answer in answers.items():
        assert answer == reference, f"{name} differs from a wrong password"
    if attempt is forms_attempt:
        assert "Incorrect username or password." in reference[2] and "paused" in reference[2]
    else:
        assert any(k == "WWW-Authenticate" and v.startswith("Basic realm=") for k, v in reference[1])


@pytest.mark.parametrize("attempt", PATHS)
def test_a_banned_address_learns_nothing_about_accounts(site: Site, attempt: Attempt) -> None:
    answers = {}
    for name, case in BANNED_CASES.items():
        before = site.hasher.calls
        response = attempt(site, case)
        assert site.hasher.calls - before == 1, f"{name}: exactly one argon2 verification per attempt"
        assert response.headers.get("Retry-After", "").isdigit(), name
        answers[name] = comparable(response, case)
    reference = answers["banned-unknown-user"]
    assert reference[0] == 429
    for name, answer in answers.items():
        assert answer == reference, f"{name} differs from an unknown user"


@pytest.mark.parametrize("attempt", PATHS)
def test_every_failure_takes_the_same_time(sqlite_url: str, attempt: Attempt) -> None:
    """A real oracle (an argon2 skipped for unknown users: tens of milliseconds) shows in every measurement; load
    from other processes (the suite runs in parallel) may spoil one. So the medians must agree in at least one of
    three measurements, each interleaving the cases."""
    shown: list[str] = []
    with make_site(sqlite_url) as site:
        for _ in range(3):
            medians = median_times(site, attempt)
            fastest, slowest = min(medians.values()), max(medians.values())
            if slowest - fastest <= max(RELATIVE * fastest, ABSOLUTE):
                return
            shown.append(", ".join(f"{name} {m * 1000:.1f} ms" for name, m in medians.items()))
    raise AssertionError("medians differ in every measurement: " + " | ".join(shown))


def median_times(site: Site, attempt: Attempt) -> dict[str, float]:
    timings: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(ROUNDS):
        for name, case in CASES.items():  # interleaved: load from elsewhere hits every case alike
            started = time.perf_counter()
            response = attempt(site, case)
            timings[name].append(time.perf_counter() - started)
            assert response.status_code == 401
    return {name: statistics.median(values) for name, values in timings.items()}


def test_blocked_account_with_a_wrong_password_looks_like_any_wrong_password(site: Site) -> None:
    rt = site.mw.runtime
    rt.accounts.block("alice", actor="helpdesk", reason="test", days=1)
    for attempt in (forms_attempt, basic_attempt):
        blocked = comparable(attempt(site, CASES["wrong-password"]), CASES["wrong-password"])
        unknown = comparable(attempt(site, CASES["unknown-user"]), CASES["unknown-user"])
        assert blocked == unknown
    # Only the correct password of a blocked account learns that it is blocked.
    assert Browser(site.mw).login("alice", PASSWORD).status_code == 403
