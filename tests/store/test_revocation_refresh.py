"""How long requests wait for the revocation cache's reads, and what never makes them wait.

- The hourly pruning never holds up a refresh: pruning deletes (writes), and a write can wait out the busy
  timeout on an SQLite file whose write lock is held elsewhere, while reads still answer.
- The process's first read may take up to the store's own timeout: with no view to fall back on, the alternative
  to waiting for it is a 503 (a freshly started server on a loaded machine). Later refreshes keep their 1 s."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mfa_middleware.services import revocation
from mfa_middleware.services.revocation import PRUNE_EVERY, RevocationCache
from mfa_middleware.store import Store

NOW = 1_800_000_000.0
INTERVAL = 5.0
Caches = Callable[..., RevocationCache]


@pytest.fixture
def caches() -> Iterator[Caches]:
    """Makes caches, and closes them at the end (close() waits for their background refreshes and pruning)."""
    made: list[RevocationCache] = []

    def make(store: Any, **kwargs: Any) -> RevocationCache:
        made.append(RevocationCache(store, interval=INTERVAL, horizon=3600, clock=lambda: NOW, **kwargs))
        return made[-1]

    yield make
    for cache in made:
        cache.close()


class Blocking:
    """A housekeeping step that blocks until released, and records when it was called."""

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


def test_a_stuck_prune_does_not_hold_up_the_next_refresh(store: Store, caches: Caches) -> None:
    step = Blocking()
    cache = caches(store, housekeeping=(step,))
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


def test_pruning_is_hourly_and_runs_in_the_background(store: Store, caches: Caches) -> None:
    step = Blocking()
    cache = caches(store, housekeeping=(step,))
    store.add_revocation("old", now=NOW - 7200)
    try:
        # refresh() (a caller that just wrote a revocation) waits for its read only, never for the deletes: it
        # returns while the pruning it started is stuck
        assert cache.refresh(NOW).fetched_at == NOW
        step.wait_calls(1)
        assert store.revocations_since(0, newer_than=0) == [], "the revocation older than the horizon stayed"
    finally:
        step.release.set()
    cache.wait_idle()
    for at in (NOW + INTERVAL, NOW + PRUNE_EVERY):  # due for a refresh, not for pruning
        cache.view(at)
        cache.wait_idle()
    cache.refresh(NOW + PRUNE_EVERY)
    cache.wait_idle()
    assert step.calls == [NOW]
    cache.view(NOW + PRUNE_EVERY + INTERVAL)  # the background refresh prunes too
    cache.wait_idle()
    assert step.calls == [NOW, NOW + PRUNE_EVERY + INTERVAL]


def test_no_pruning_starts_once_closed(store: Store, caches: Caches) -> None:
    step = Blocking()
    step.release.set()
    cache = caches(store, housekeeping=(step,))
    cache.close()
    cache.refresh(NOW)
    cache.view(NOW + INTERVAL)
    cache.wait_idle()
    assert step.calls == []


class SlowReads:
    """The real store, whose revocation reads block until released (a loaded machine, a slow disk)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.timeout = 30.0
        self.reading = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def revocations_since(self, *args: object, **kwargs: object) -> object:
        self.reading.set()
        assert self.release.wait(30), "never released"
        return self.store.revocations_since(*args, **kwargs)  # type: ignore[arg-type]


def test_the_first_read_is_waited_for_up_to_the_store_timeout(store: Store, caches: Caches,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With the usual wait cut to nothing, a request still waits for the first read, and gets its view."""
    monkeypatch.setattr(revocation, "REFRESH_WAIT", 0.0)
    slow = SlowReads(store)
    store.add_revocation("alice", now=NOW - 1)
    cache = caches(slow)
    views: list[float] = []
    request = threading.Thread(target=lambda: views.append(cache.view(NOW).fetched_at))
    request.start()
    try:
        assert slow.reading.wait(30)
        request.join(0.5)
        assert request.is_alive(), "the first request gave up on the first read (it would answer 503)"
    finally:
        slow.release.set()
        request.join(30)
    assert views == [NOW]
    assert cache.view(NOW).not_before == {"alice": NOW - 1}


def test_later_refreshes_are_waited_for_one_second_at_most(store: Store, caches: Caches,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a view exists, a request past the grace waits at most ``REFRESH_WAIT`` (here: not at all) and then
    gets the old view (the core answers 503: fail closed), while the read goes on in the background."""
    monkeypatch.setattr(revocation, "REFRESH_WAIT", 0.0)
    slow = SlowReads(store)
    slow.release.set()
    cache = caches(slow)
    assert cache.view(NOW).fetched_at == NOW
    slow.release.clear()
    slow.reading.clear()
    later = NOW + cache.grace + 1
    try:
        assert cache.view(later).fetched_at == NOW  # returned without the read it started
        assert slow.reading.wait(30)
    finally:
        slow.release.set()
    cache.wait_idle()
    assert cache.view(later).fetched_at == later
