"""Regulation (issue 12): failure windows per account and per client address with ban times, a success from an
address clearing only that address's failures for that user, the 100-consecutive-failures lock whatever the
settings, and the 429 a banned address gets. Counters are exact across threads and processes (see also
tests/test_lockout_race.py). Every test runs on a real SQLite file and a real PostgreSQL server.
"""

from __future__ import annotations

import multiprocessing
from base64 import b64encode
from typing import Any

import pytest
from werkzeug.test import Client

from mfa_middleware import MFAMiddleware
from mfa_middleware.store.sql import LOCKED_FOR_GOOD
from tests.support.lockout import run_together
from tests.support.mfa import Browser, Clock, make_middleware

PASSWORD = "correct horse battery staple"
ATTACKER = "203.0.113.9"
HOME = "198.51.100.20"
RULES = [{"path": "/mail/*", "policy": "one_factor", "basic": True}, {"path": "/*", "policy": "one_factor"}]


def regulation(user: dict[str, Any] | None = None, address: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"regulation": {"user": {"max_failures": 5, "find_time": "10m", "ban_time": "15m", **(user or {})},
                           "address": {"max_failures": 0, "find_time": "10m", "ban_time": "30m", **(address or {})}},
            "rules": RULES}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def site(database_url: str, clock: Clock, **overrides: Any) -> MFAMiddleware:
    mw = make_middleware(database_url, clock, **overrides)
    for name in ("alice", "bob"):
        mw.runtime.accounts.add(name, actor="test", password=PASSWORD, state="disabled")
    return mw


def login(mw: MFAMiddleware, user: str, password: str, address: str) -> int:
    browser = Browser(mw)
    browser.remote_addr = address
    return browser.login(user, password).status_code


def failures(mw: MFAMiddleware, name: str = "alice") -> tuple[int, int]:
    user = mw.runtime.store.get_user(name)
    assert user is not None
    return user.failed_count, user.consecutive_failures


# -- attacker's tests ------------------------------------------------------------------------------------------------
def test_password_spraying_from_one_address_is_banned_with_429(database_url: str, clock: Clock) -> None:
    mw = site(database_url, clock, **regulation(address={"max_failures": 4}))
    try:
        for i in range(6):
            mw.runtime.accounts.add(f"user{i}", actor="test", password=PASSWORD)
        statuses = [login(mw, f"user{i}", "Winter2026!", ATTACKER) for i in range(5)]
        assert statuses == [401] * 4 + [429]
        browser = Browser(mw)
        browser.remote_addr = ATTACKER
        answer = browser.login("alice", PASSWORD)
        assert answer.status_code == 429 and 1 <= int(answer.headers["Retry-After"]) <= 1800
        assert "alice" not in answer.text
        api = Client(mw).get("/mail/x", headers={"Authorization": "Basic " + b64encode(b"bob:wrong").decode(),
                                                 "Accept": "application/json"},
                             environ_base={"REMOTE_ADDR": ATTACKER})
        assert api.status_code == 429 and api.json["error"] == "too_many_attempts"  # type: ignore[index]
        assert api.headers["Retry-After"].isdigit()
        assert login(mw, "alice", PASSWORD, HOME) == 303  # other addresses are not affected
        clock.advance(1801)
        assert login(mw, "bob", PASSWORD, ATTACKER) == 303  # the ban time is the address's own
    finally:
        mw.runtime.close()


def test_one_account_attacked_from_many_addresses_is_banned(database_url: str, clock: Clock) -> None:
    mw = site(database_url, clock, **regulation(address={"max_failures": 3}))
    try:
        statuses = [login(mw, "alice", "wrong", f"203.0.113.{i}") for i in range(1, 8)]
        assert statuses == [401] * 7  # a banned account looks like a wrong password: it reveals nothing
        assert failures(mw) == (5, 5)
        assert login(mw, "alice", PASSWORD, HOME) == 401  # banned: even the right password
        clock.advance(15 * 60 + 1)
        assert login(mw, "alice", PASSWORD, HOME) == 303
    finally:
        mw.runtime.close()


def test_a_success_clears_only_that_addresses_failures_for_that_user(database_url: str, clock: Clock) -> None:
    mw = site(database_url, clock, **regulation(address={"max_failures": 50}))
    try:
        for _ in range(3):
            assert login(mw, "alice", "wrong", ATTACKER) == 401
        assert login(mw, "alice", "wrong", HOME) == 401
        assert login(mw, "bob", "wrong", HOME) == 401
        assert failures(mw) == (4, 4)
        assert login(mw, "alice", PASSWORD, HOME) == 303  # alice at home
        assert failures(mw) == (3, 0)  # the attacker's three stay; the run of consecutive failures ended
        assert failures(mw, "bob") == (1, 1)  # another user's failures from that address stay
        assert mw.runtime.store.client_locked_until(ATTACKER, clock.now) is None
        # the attacker gets only what is left of the window, not a fresh one
        assert [login(mw, "alice", "wrong", ATTACKER) for _ in range(3)] == [401] * 3
        assert login(mw, "alice", PASSWORD, HOME) == 401  # banned
    finally:
        mw.runtime.close()


def test_the_100_consecutive_failures_lock_ignores_generous_settings(database_url: str, clock: Clock) -> None:
    mw = site(database_url, clock,
              **regulation(user={"max_failures": 1_000_000, "find_time": "1s", "ban_time": "1s"}))
    try:
        rt = mw.runtime
        alice = rt.store.get_user("alice")
        assert alice is not None
        for i in range(99):
            clock.advance(2)  # every window is new: the windowed counter never gets anywhere
            assert rt.signin.forms("alice", "wrong", _client(f"203.0.113.{i % 200}"), clock.now).reason == "invalid"
        assert failures(mw)[1] == 99
        clock.advance(2)
        rt.signin.forms("alice", "wrong", _client(ATTACKER), clock.now)
        user = rt.store.get_user("alice")
        assert user is not None and user.locked_until == LOCKED_FOR_GOOD
        clock.advance(365 * 86400)
        assert login(mw, "alice", PASSWORD, HOME) == 401  # until an administrator unlocks it
        assert [b.subject for b in rt.regulation.bans(clock.now)] == ["alice"]
        assert rt.regulation.lift_user("alice", actor="test", now=clock.now)
        assert login(mw, "alice", PASSWORD, HOME) == 303
    finally:
        mw.runtime.close()


def _client(address: str) -> Any:
    from mfa_middleware.services.lockout import Client as LockoutClient

    return LockoutClient(address, "test")


@pytest.mark.parametrize("address, same", [
    pytest.param("::ffff:203.0.113.9", ATTACKER, id="ipv4-mapped-counts-as-ipv4"),
    pytest.param("2001:db8:1:2::1", "2001:db8:1:2::ffff", id="ipv6-by-its-64"),
])
def test_addresses_count_together(database_url: str, clock: Clock, address: str, same: str) -> None:
    mw = site(database_url, clock, **regulation(address={"max_failures": 2}))
    try:
        assert login(mw, "alice", "wrong", address) == 401
        assert login(mw, "bob", "wrong", same) == 401
        assert login(mw, "bob", PASSWORD, address) == 429
        assert login(mw, "bob", PASSWORD, "2001:db8:1:3::1") == 303  # the next /64 is not banned
        assert mw.runtime.regulation.lift_address(same, actor="test", now=clock.now)
        assert login(mw, "bob", PASSWORD, address) == 303
    finally:
        mw.runtime.close()


# -- exact counting ---------------------------------------------------------------------------------------------------
def test_twenty_racing_failures_count_exactly(database_url: str, clock: Clock) -> None:
    mw = site(database_url, clock, **regulation(user={"max_failures": 1000}, address={"max_failures": 1000}))
    try:
        rt = mw.runtime
        run_together(20, lambda i: rt.signin.forms("alice", "wrong", _client(ATTACKER), clock.now))
        assert failures(mw) == (20, 20)
        bans = rt.store.page_bans(now=clock.now)
        assert bans == []
        run_together(20, lambda i: rt.signin.forms("alice", PASSWORD if i % 2 else "wrong", _client(HOME),
                                                   clock.now))
        assert failures(mw)[0] == 30  # ten more wrong; the ten correct passwords gave their reservations back
    finally:
        mw.runtime.close()


def _fail_in_process(database_url: str, count: int) -> None:
    mw = make_middleware(database_url, Clock(), **regulation(user={"max_failures": 1000},
                                                             address={"max_failures": 1000}))
    try:
        run_together(count, lambda i: mw.runtime.signin.forms("alice", "wrong", _client(ATTACKER), Clock()()))
    finally:
        mw.runtime.close()


def test_failures_from_two_processes_count_exactly(database_url: str, clock: Clock) -> None:
    mw = site(database_url, clock, **regulation())
    try:
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_fail_in_process, args=(database_url, 10)) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)  # a bound on a hang: each does ten sign-ins
            assert w.exitcode == 0
        assert failures(mw) == (20, 20)
        assert mw.runtime.store.client_locked_until(ATTACKER, clock.now) is None
    finally:
        mw.runtime.close()


def test_config_keeps_the_older_lockout_table_but_not_both(database_url: str) -> None:
    from mfa_middleware.config import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        make_middleware(database_url, Clock(), lockout={"max_failures": 3}, regulation={"user": {}})
    with pytest.raises(ConfigError, match=r"regulation\.user\.find_tme: unknown key"):
        make_middleware(database_url, Clock(), regulation={"user": {"find_tme": "1m"}})
