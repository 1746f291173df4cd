"""Counters that guard security hold under concurrency (DESIGN.md sections 2 and 5): threads, processes, and
through the sign-in service. Every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pyotp
import pytest

from mfa_middleware.runtime import Runtime
from mfa_middleware.services.lockout import Client
from mfa_middleware.store import Store
from mfa_middleware.store.sql import Reservation
from tests.support.mfa import FAST_HASHER, START, Clock, make_config

T = TypeVar("T")
STEP = int(START // 30)
BARRIER_TIMEOUT = 60.0


@pytest.fixture
def method_id(store: Store) -> int:
    user = store.create_user("alice", now=START)
    return store.add_method(user.id, "totp", "app", b"encrypted", now=START, confirmed=True)


def run_together(count: int, fn: Callable[[], T]) -> list[T]:
    """Run ``fn`` in ``count`` threads released at the same moment by a barrier; re-raise the first error."""
    barrier = threading.Barrier(count)

    def task() -> T:
        barrier.wait(timeout=BARRIER_TIMEOUT)
        return fn()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(task) for _ in range(count)]
        return [f.result() for f in futures]


# -- threads --------------------------------------------------------------------------------------------------
def test_twenty_threads_consume_the_same_step_once(store: Store, method_id: int) -> None:
    results = run_together(20, lambda: store.consume_step(method_id, STEP, now=START))

    assert results.count(True) == 1
    assert results.count(False) == 19
    method = store.get_method(method_id)
    assert method is not None and method.last_step == STEP


def test_fifty_concurrent_failures_are_all_counted(store: Store) -> None:
    user = store.create_user("alice", now=START)

    results = run_together(50, lambda: store.record_failure(user.id, now=START, max_failures=1000,
                                                            reset_after=3600, lock_for=60))

    assert sorted(count for count, _ in results) == list(range(1, 51))
    assert all(locked_until is None for _, locked_until in results)
    fresh = store.get_user("alice")
    assert fresh is not None
    assert (fresh.failed_count, fresh.consecutive_failures) == (50, 50)
    assert fresh.locked_until is None


def test_fifty_concurrent_reservations_allow_exactly_the_limit(store: Store) -> None:
    user = store.create_user("alice", now=START)

    results = run_together(50, lambda: store.reserve_attempt(user.id, now=START, max_failures=10, reset_after=3600,
                                                             lock_for=60))

    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 10, "exactly max_failures attempts may be checked"
    assert sorted(r.count for r in allowed) == list(range(1, 11))
    assert [r.started_lock for r in allowed].count(True) == 1
    assert all(r.locked_until == START + 60 for r in results if not r.allowed)
    fresh = store.get_user("alice")
    assert fresh is not None and (fresh.failed_count, fresh.consecutive_failures) == (10, 10)


def test_released_reservation_gives_back_its_count_and_the_lock_it_started(store: Store) -> None:
    user = store.create_user("alice", now=START)

    def reserve() -> Reservation:
        return store.reserve_attempt(user.id, now=START, max_failures=3, reset_after=3600, lock_for=60)

    for _ in range(2):
        assert reserve().allowed
    last = reserve()  # reaches the limit: checked, and the account is locked meanwhile
    assert last.allowed and last.started_lock
    assert not reserve().allowed  # refused: nothing counted
    store.release_attempt(user.id, last)  # it was the correct password
    fresh = store.get_user("alice")
    assert fresh is not None and (fresh.failed_count, fresh.consecutive_failures, fresh.locked(START)) == (2, 2, False)


def test_concurrent_client_reservations_allow_exactly_the_limit(store: Store) -> None:
    results = run_together(50, lambda: store.reserve_client_attempt("192.0.2.1", now=START, max_failures=10,
                                                                    reset_after=3600, lock_for=60))

    assert sum(r.allowed for r in results) == 10
    assert store.client_locked_until("192.0.2.1", START) == START + 60


# -- processes ------------------------------------------------------------------------------------------------
PROCESSES = 4
ATTEMPTS = 25


def consume_in_process(url: str, method_id: int, step: int, attempts: int, barrier: Any, results: Any) -> None:
    """Worker (spawned process): its own Store on ``url``; tries ``step`` ``attempts`` times after the barrier.

    Puts ``(accepted, errors)`` on ``results``; errors are formatted tracebacks, never raised, so the parent
    sees every failure (a "database is locked" among them) instead of a silent exit code.
    """
    accepted = 0
    errors: list[str] = []
    store = Store(url)
    try:
        barrier.wait(timeout=BARRIER_TIMEOUT)
        for _ in range(attempts):
            try:
                if store.consume_step(method_id, step, now=START):
                    accepted += 1
            except Exception:
                errors.append(traceback.format_exc())
    except Exception:
        errors.append(traceback.format_exc())
    finally:
        store.close()
        results.put((accepted, errors))


def test_four_processes_consume_the_same_step_once(database_url: str, store: Store, method_id: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    workers = [ctx.Process(target=consume_in_process, args=(database_url, method_id, STEP, ATTEMPTS, barrier,
                                                            results))
               for _ in range(PROCESSES)]
    for w in workers:
        w.start()
    try:
        outcomes = [results.get(timeout=120) for _ in workers]
    finally:
        for w in workers:
            w.join(timeout=60)
        results.close()
        results.join_thread()

    assert [w.exitcode for w in workers] == [0] * PROCESSES
    errors = [e for _, errs in outcomes for e in errs]
    assert not [e for e in errors if "locked" in e], errors
    assert errors == []
    assert sum(accepted for accepted, _ in outcomes) == 1
    method = store.get_method(method_id)
    assert method is not None and method.last_step == STEP


# -- through the sign-in service ------------------------------------------------------------------------------
@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    # max_failures high enough that 19 replays do not lock the account, so each one reports "replayed".
    rt = Runtime(make_config(database_url, lockout={"max_failures": 100}), clock=Clock(),
                 password_hasher=FAST_HASHER)
    try:
        rt.store.upgrade()
        yield rt
    finally:
        rt.close()


def test_twenty_requests_with_the_same_code_are_accepted_once(runtime: Runtime) -> None:
    client = Client("192.0.2.10", "pytest")
    user = runtime.accounts.add("alice", actor="test", password="correct horse battery")
    view = runtime.signin.enroll_begin(user, "totp", client, START)
    method = runtime.store.get_method(view.method_id)
    assert method is not None and method.secret is not None
    totp = pyotp.TOTP(runtime.box.decrypt(method.secret))
    assert runtime.signin.enroll_finish(user, view.method_id, {"code": totp.at(START)}, client,
                                        START).accepted
    now = START + 30  # the next step: the confirming step is already used
    code = totp.at(now)
    user = runtime.accounts.get("alice")

    results = run_together(20, lambda: runtime.signin.verify(user, {"code": code}, client, now).outcome)

    assert results.count("accepted") == 1, results
    assert results.count("replayed") == 19, results
    fresh = runtime.accounts.get("alice")
    assert fresh.state == "enforced"
    assert not fresh.locked(now)
    events = runtime.store.list_audit(username="alice", limit=100)
    second = [e.result for e in events if e.event == "second_factor"]
    assert sorted(second) == ["replayed"] * 19 + ["success"]


def test_push_cap_holds_under_twenty_concurrent_requests(database_url: str) -> None:
    """The push cap (5 per user in 10 minutes) is one INSERT ... SELECT; on PostgreSQL an advisory lock on the user
    keeps two such statements from both seeing 4. 20 sign-ins racing for the last slots make exactly 5 requests."""
    import itertools

    from sqlalchemy import insert

    from mfa_middleware.store.schema import push_devices

    store = Store(database_url)
    try:
        store.upgrade()
        user = store.create_user("alice", now=START)
        method = store.add_method(user.id, "push", "Phone", None, now=START, confirmed=True)
        with store.engine.begin() as c:
            device = c.execute(insert(push_devices).values(
                user_id=user.id, method_id=method, account_id="acct-1", public_key=b"k", algorithm="ed25519",
                name="Phone", created_at=START).returning(push_devices.c.id)).scalar_one()
        ids = itertools.count()

        def ask() -> int | None:
            n = next(ids)
            return store.add_push_request(public_id=f"req-{n}", user_id=user.id, method_id=method, device_id=device,
                                          sign_in_id=f"attempt-{n}", number=42, choices=(17, 42, 88), site="Site",
                                          host="intranet.example", client_ip="192.0.2.1", user_agent="test",
                                          now=START, expires_at=START + 60, cap=5, window=600)

        made = run_together(20, ask)
        assert sum(1 for m in made if m is not None) == 5
    finally:
        store.close()
