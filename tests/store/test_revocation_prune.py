"""The revocation cache's hourly pruning never holds up a refresh: pruning deletes (writes), and a write can wait
out the busy timeout on an SQLite file whose write lock is held elsewhere, while reads still answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mfa_middleware.services.revocation import PRUNE_EVERY, RevocationCache
from mfa_middleware.store import Store

NOW = 1_800_000_000.0
INTERVAL = 5.0


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(database_url)
    s.upgrade()
    yield s
    s.close()


class Blocking:
    """A housekeeping step that blocks until released, and says when it started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[float] = []
        self._changed = threading.Condition()

    def __call__(self, now: float) -> None:
        with self._changed:
            self.calls.append(now)
            self._changed.notify_all()
        assert self.release.wait(30), "never released"

    def wait_calls(self, n: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.calls) >= n, timeout=30), self.calls


def wait_for_refresh(cache: RevocationCache) -> None:
    """The background refresh has finished (its lock is free)."""
    assert cache._lock.acquire(timeout=30)
    cache._lock.release()


def test_a_stuck_prune_does_not_hold_up_the_next_refresh(store: Store) -> None:
    step = Blocking()
    cache = RevocationCache(store, interval=INTERVAL, horizon=3600, housekeeping=(step,), clock=lambda: NOW)
    try:
        first = cache.view(NOW)
        assert first.fetched_at == NOW
        step.wait_calls(1)  # the first refresh is now pruning, stuck on a (simulated) locked file
        store.add_revocation("alice", now=NOW + 1)  # written by another process: this cache learns it by reading
        later = NOW + cache.grace + 1  # past the grace: a request must wait for a fresh view, and gets one
        view = cache.view(later)
        assert view.fetched_at == later, "the refresh queued behind the pruning"
        assert view.not_before.get("alice") == NOW + 1
        assert step.calls == [NOW], "pruned again within the hour, or twice at once"
    finally:
        step.release.set()


def test_pruning_is_hourly_and_runs_in_the_background(store: Store) -> None:
    step = Blocking()
    step.release.set()
    cache = RevocationCache(store, interval=INTERVAL, horizon=3600, housekeeping=(step,), clock=lambda: NOW)
    store.add_revocation("old", now=NOW - 7200)
    # refresh() (a caller that just wrote a revocation) reads only: it never waits for the deletes
    cache.refresh(NOW)
    assert step.calls == []
    cache.view(NOW + INTERVAL)
    wait_for_refresh(cache)
    step.wait_calls(1)  # prune_revocations ran before it
    assert store.revocations_since(0, newer_than=0) == [], "the revocation older than the horizon stayed"
    for at in (NOW + 2 * INTERVAL, NOW + PRUNE_EVERY):  # due for a refresh, not for pruning
        cache.view(at)
        wait_for_refresh(cache)
    assert step.calls == [NOW + INTERVAL]
    cache.view(NOW + INTERVAL + PRUNE_EVERY + 1)
    wait_for_refresh(cache)
    step.wait_calls(2)
    assert step.calls == [NOW + INTERVAL, NOW + INTERVAL + PRUNE_EVERY + 1]
