"""Concurrent guesses never check more than the lockout limit (issue 7, finding 7; DESIGN.md section 5).

The attacker sends many wrong secrets at the same moment, from 50 threads in this process or from 4 spawned
processes x 50 threads on one store (SQLite file and real PostgreSQL), on every path: the password form, HTTP
Basic with the main password, HTTP Basic with an app password, the second-factor step (holding a pending sign-in
made with the stolen password), and one client address spraying over many accounts. Every attempt is reserved
in the store before its secret is checked, so:

- at most ``max_failures`` secrets are checked (counted by a password hasher that counts its verifications of
  real hashes, or by a counter around the authenticator-app factor);
- the correct secret sent right after is refused while the lock holds, and is not even checked.

Old code read the user, checked the lock on that copy, verified, and counted after: 188 checks out of 200.
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from base64 import b64encode
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest
from werkzeug.test import Client

from mfa_middleware import MFAMiddleware
from mfa_middleware.factors import Verification
from mfa_middleware.store import MethodRecord, UserRecord
from tests.support.lockout import (
    BARRIER_TIMEOUT,
    BASIC_RULES,
    MAX_FAILURES,
    CountingHasher,
    Path,
    cookie_header,
    run_together,
)
from tests.support.mfa import (
    ENCRYPTION_KEY,
    Browser,
    Clock,
    csrf_of,
    echo_app,
    make_config,
)

THREADS = 50
PROCESSES = 4
CORRECT_AFTER = 12
ADDRESS = "192.0.2.77"
SPRAYED_ACCOUNTS = 60
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Attack:
    """What the attacker holds (picklable: sent to spawned processes)."""

    path: Path
    cookie: str = ""  # Cookie header: the anonymous cookie (forms) or the pending sign-in (second factor)
    csrf: str = ""
    correct: str = PASSWORD  # the right secret, sent after the attack
    encryption_key: str = ENCRYPTION_KEY  # this process's: a spawned process would make another at import


def overrides(path: Path) -> dict[str, Any]:
    if path == "client-address":  # the per-address counter is the one that must hold
        return {"lockout": {"max_failures": 100, "max_failures_per_client": MAX_FAILURES}, "rules": BASIC_RULES}
    return {"lockout": {"max_failures": MAX_FAILURES, "max_failures_per_client": 0}, "rules": BASIC_RULES}


class Site:
    """A middleware on the shared store whose password and authenticator-app checks are counted."""

    def __init__(self, database_url: str, path: Path, encryption_key: str = ENCRYPTION_KEY) -> None:
        self.path = path
        self.clock = Clock()
        self.hasher = CountingHasher()
        config = make_config(database_url, encryption_key=encryption_key, **overrides(path))
        self.mw = MFAMiddleware(echo_app, config, clock=self.clock, password_hasher=self.hasher)
        self.hasher.ignored.add(self.mw.runtime.passwords.dummy_hash)
        self.factor_checks = 0
        self._lock = threading.Lock()
        factor = self.mw.runtime.factors.get("totp")
        assert factor is not None
        original = factor.verify

        def counted(user: UserRecord, method: MethodRecord, response: Mapping[str, str], ctx: Any) -> Verification:
            with self._lock:
                self.factor_checks += 1
            return original(user, method, response, ctx)

        factor.verify = counted  # type: ignore[method-assign]

    def checks(self) -> int:
        return self.factor_checks if self.path == "second-factor" else self.hasher.real_checks

    def send(self, attack: Attack, secret: str, i: int) -> int:
        """One attempt with ``secret``; returns the HTTP status."""
        client = Client(self.mw, use_cookies=False)
        environ = {"REMOTE_ADDR": ADDRESS}
        headers = {"Cookie": attack.cookie} if attack.cookie else {}
        if attack.path in ("forms", "client-address"):
            username = f"user{i % SPRAYED_ACCOUNTS}" if attack.path == "client-address" else "alice"
            form = {"username": username, "password": secret, "next": "/", "csrf_token": attack.csrf}
            return client.post("/_mfa/login", data=form, headers=headers, environ_base=environ).status_code
        if attack.path == "second-factor":
            form = {"code": secret, "csrf_token": attack.csrf}
            return client.post("/_mfa/verify", data=form, headers=headers, environ_base=environ).status_code
        user, where = ("alice", "/mail/x") if attack.path == "basic-primary" else ("bob", "/dav/x")
        token = b64encode(f"{user}:{secret}".encode()).decode()
        return client.get(where, headers={"Authorization": f"Basic {token}"}, environ_base=environ).status_code

    def close(self) -> None:
        self.mw.runtime.close()


def wrong(attack: Attack, i: int) -> str:
    if attack.path == "second-factor":
        return f"{(int(attack.correct) + 1 + i) % 1_000_000:06d}"
    if attack.path == "basic-app-password":
        return "wrongwrongwrong" + "abcdefghijklmnopqrstuvwxyz"[i % 26]  # app-password shaped: 16 letters
    return f"wrong password {i}"


def prepare(site: Site) -> Attack:
    """The accounts under attack, and what the attacker holds before the attack starts."""
    rt = site.mw.runtime
    rt.store.upgrade()
    rt.accounts.add("alice", actor="test", password=PASSWORD)  # enabled, no method yet
    if site.path == "client-address":
        for n in range(SPRAYED_ACCOUNTS):
            rt.accounts.add(f"user{n}", actor="test", password=PASSWORD)
    if site.path == "basic-app-password":
        rt.accounts.add("bob", actor="test", password=PASSWORD)
        Browser(site.mw).sign_in_and_enroll("bob", PASSWORD, site.clock)
        _, app_password = rt.app_passwords.create(rt.accounts.get("bob"), "phone", actor="test")
        return Attack(site.path, correct=app_password)
    if site.path == "second-factor":
        rt.accounts.add("carol", actor="test", password=PASSWORD)
        secret = Browser(site.mw).sign_in_and_enroll("carol", PASSWORD, site.clock)
        thief = Browser(site.mw)
        signed = thief.login("carol", PASSWORD)  # the stolen password: a pending sign-in waiting for the code
        assert signed.status_code == 303 and signed.headers["Location"].endswith("/_mfa/verify"), signed.text
        cookies = cookie_header(signed.headers.getlist("Set-Cookie"))
        page = thief.get("/_mfa/verify")
        site.clock.advance(30)  # the code of a step enrollment has not used: the right one after the attack
        return Attack(site.path, cookies, csrf_of(page.text), pyotp.TOTP(secret).at(site.clock.now))
    page = Client(site.mw, use_cookies=False).get("/_mfa/login")
    return Attack(site.path, cookie_header(page.headers.getlist("Set-Cookie")), csrf_of(page.text))


def attacked_user(site: Site) -> UserRecord:
    name = {"basic-app-password": "bob", "second-factor": "carol"}.get(site.path, "alice")
    user = site.mw.runtime.store.get_user(name)
    assert user is not None
    return user


def refused_status(path: Path) -> int:
    # after the password, the second factor may say "locked"; a banned client address gets 429 (regulation: it
    # names no account, so it says nothing about which exist)
    return 429 if path in ("second-factor", "client-address") else 401


def assert_locked_and_correct_refused(site: Site, attack: Attack, checked: int) -> None:
    if site.path == "client-address":
        assert site.mw.runtime.store.client_locked_until(ADDRESS, site.clock.now) is not None
    else:
        user = attacked_user(site)
        assert user.locked(site.clock.now)
        assert (user.failed_count, user.consecutive_failures) == (MAX_FAILURES, MAX_FAILURES)
    before = site.checks()
    statuses = run_together(CORRECT_AFTER, lambda i: site.send(attack, attack.correct, i + 1000))
    assert statuses == [refused_status(site.path)] * CORRECT_AFTER, "a correct secret was accepted while locked"
    assert site.checks() == before, "a secret was checked while the account was locked"
    assert checked == MAX_FAILURES


@pytest.fixture(params=["forms", "basic-primary", "basic-app-password", "second-factor", "client-address"])
def site(request: pytest.FixtureRequest, database_url: str) -> Iterator[Site]:
    s = Site(database_url, request.param)
    try:
        yield s
    finally:
        s.close()


# -- threads ----------------------------------------------------------------------------------------------------
def test_fifty_threads_check_at_most_the_limit(site: Site) -> None:
    attack = prepare(site)
    before = site.checks()

    statuses = run_together(THREADS, lambda i: site.send(attack, wrong(attack, i), i))

    checked = site.checks() - before
    assert checked <= MAX_FAILURES, f"{checked} secrets checked with max_failures = {MAX_FAILURES}"
    assert set(statuses) <= {401, refused_status(site.path)}, statuses
    assert_locked_and_correct_refused(site, attack, checked)


# -- processes --------------------------------------------------------------------------------------------------
def attack_in_process(database_url: str, attack: Attack, barrier: Any, results: Any) -> None:
    """Worker (spawned process): its own middleware on the shared store; 50 threads after the process barrier.
    Puts ``(checks, statuses, errors)`` on ``results``; errors are formatted, never raised."""
    errors: list[str] = []
    checks, statuses = 0, []
    site = Site(database_url, attack.path, attack.encryption_key)
    try:
        barrier.wait(timeout=BARRIER_TIMEOUT)
        statuses = run_together(THREADS, lambda i: site.send(attack, wrong(attack, i), i))
        checks = site.checks()
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the test with it
        errors.append(traceback.format_exc())
    finally:
        site.close()
        results.put((checks, statuses, errors))


@pytest.mark.parametrize("path", ["forms", "basic-app-password", "second-factor"])
def test_four_processes_check_at_most_the_limit(database_url: str, path: Path) -> None:
    site = Site(database_url, path)
    try:
        attack = prepare(site)
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(PROCESSES)
        results = ctx.Queue()
        workers = [ctx.Process(target=attack_in_process, args=(database_url, attack, barrier, results))
                   for _ in range(PROCESSES)]
        for w in workers:
            w.start()
        try:
            outcomes = [results.get(timeout=300) for _ in workers]
        finally:
            for w in workers:
                w.join(timeout=60)
        errors = [e for _, _, errs in outcomes for e in errs]
        assert not errors, "\n".join(errors)
        checked = sum(c for c, _, _ in outcomes)
        assert checked <= MAX_FAILURES, f"{checked} secrets checked by {PROCESSES} x {THREADS} attempts"
        assert_locked_and_correct_refused(site, attack, checked)
    finally:
        site.close()

