"""The revocation cache: how logout, "revoke sessions", reset and delete reach every process.

Each process keeps a snapshot of recent revocations (per-user "not before" times and revoked session ids) and
refreshes it from the store at most once per ``interval`` seconds, reading only rows newer than the last one it
has seen. The authenticated hot path therefore costs a dictionary lookup; a revocation written by any process
is seen by all of them within ``interval`` seconds (while the store answers).

Rules (a store that hangs must never hang the requests that only read this cache):

- A refresh runs in a background thread, one at a time. No request ever waits on the store itself.
- The request that finds the snapshot due starts the refresh and waits for it at most :data:`REFRESH_WAIT`
  seconds (a healthy store answers in milliseconds, so it sees the fresh view, as before). Requests that
  arrive while it runs use the snapshot they have if it is within the grace period (three intervals); past the
  grace (at start-up, or after an idle spell) they wait for the same refresh, again at most until
  :data:`REFRESH_WAIT` after it started. The process's first read is the exception: with no view at all to
  fall back on, the alternative to waiting is a 503, so requests wait for it up to the store's own ``timeout``
  (a freshly started server on a loaded machine answers its first requests instead of refusing them).
- Once a refresh has failed, nobody waits any more until one succeeds: within the grace requests use the old
  snapshot, past it the core answers 503 at once (fail closed). A failed store is asked again after
  ``min(1 s, interval)``, by one background refresh.
- :meth:`RevocationCache.refresh` (after this process wrote a revocation itself) reads in the caller's thread,
  bounded by the store's own time limits, without waiting for a background refresh that may be stuck.
- A revocation the store cannot take right now (:meth:`RevocationCache.revoke` during an outage: a logout) is
  queued in this process: it is part of this process's view at once (the session is refused here from that
  moment), and every refresh first writes the queued rows, oldest first, until the store takes them. Other
  servers see it once the store is back and their next refresh has run; the queue lives in memory, so a restart
  before the store returns loses it (the browser's cookie was cleared all the same). At most :data:`MAX_QUEUED`
  rows wait; past that the oldest are dropped with an error in the log.
- Ids are not committed in order on PostgreSQL: a revocation can become visible after a higher id was read. An
  id skipped between two ids that were read is asked for again at every refresh for :data:`GAP_WINDOW` seconds
  (far longer than any transaction may stay open), so a late commit is never lost.

Pushed revocations (PostgreSQL): with a ``listener`` (:mod:`mfa_middleware.store.notify`), a notification sent
when a revocation commits makes :meth:`RevocationCache.pushed` read the new rows at once, in the listener's
thread, exactly as :meth:`RevocationCache.refresh` does; the notification carries nothing and is trusted for
nothing. The interval poll goes on unchanged beside it: it is what still holds when the listening connection is
down. The listener is started by the first read in this process (a :meth:`RevocationCache.view` that finds the
snapshot due, or :meth:`RevocationCache.refresh`), so a command-line tool that never serves a request opens no
listening connection, and a worker forked from a pre-loaded application starts its own. The hot path (a
snapshot within the interval) does not change.
"""

from __future__ import annotations

import os
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from ..core.decision import RevocationView
from ..store import Store, StoreUnavailable
from ..store.sql import RevocationRecord

PRUNE_EVERY = 3600.0
#: longest a request waits for a refresh it needs (seconds, real time from the start of that refresh); the
#: process's first read, which has no earlier view to fall back on, may take up to the store's own ``timeout``
REFRESH_WAIT = 1.0
#: ``fetched_at`` of the view before the first read
NEVER = -1e18
#: how long an id skipped by a refresh (not committed yet, or rolled back) is asked for again
GAP_WINDOW = 120.0
#: at most this many skipped ids are remembered (a burst of rollbacks cannot grow the cache without bound)
MAX_GAPS = 10_000
#: at most this many revocations wait in memory for a store that is down (see the module docstring)
MAX_QUEUED = 10_000

log = logging.getLogger("mfa_middleware.revocation")


@dataclass(frozen=True, slots=True)
class QueuedRevocation:
    username: str
    session_id: str | None  # None: every session and sign-in of the user up to ``not_before``
    not_before: float


class Listener(Protocol):
    """What pushes revocations: :class:`mfa_middleware.store.notify.NotificationListener`."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float) -> None: ...


class RevocationCache:
    def __init__(self, store: Store, *, interval: float, horizon: float,
                 housekeeping: tuple[Callable[[float], object], ...] = (), clock: Callable[[], float] = time.time,
                 listener: Callable[[Callable[[], object]], Listener] | None = None) -> None:
        self.store = store
        #: the time of the reads that notifications cause (requests pass their own ``now``)
        self.clock = clock
        #: pushes notifications to :meth:`pushed` (None: polling only, as on SQLite); built with that method
        self.listener: Listener | None = listener(self.pushed) if listener is not None else None
        self._listener_pid = 0  # the process the listener runs in (0: not started)
        self._listener_lock = threading.Lock()
        #: other hourly clean-ups that ride on this refresh (each gets ``now``; a store error skips it until the
        #: next hour), such as deleting phone sends older than the longest send cap
        self.housekeeping = housekeeping
        self.interval = interval
        self.horizon = horizon  # revocations older than the absolute session timeout cannot matter
        # Held by the background refresh while it runs (acquired by the request that starts it, released by
        # the refresh thread); waiting requests acquire it with a timeout to learn that it finished.
        self._lock = threading.Lock()
        self._apply_lock = threading.Lock()  # guards the dictionaries below while rows are merged in
        self._not_before: dict[str, float] = {}
        self._sessions: dict[str, float] = {}
        self._last_id = 0
        self._gaps: dict[int, float] = {}  # id skipped by a refresh -> when it was first missed
        self._gap_floor: int | None = None  # the newest id committed before the first read (see _fetch)
        self._view = RevocationView(MappingProxyType({}), MappingProxyType({}), fetched_at=NEVER)
        self._failed_at: float | None = None
        self._pruned_at = -1e18
        self._prune_lock = threading.Lock()  # one pruning at a time, apart from the refresh lock
        self._workers: set[threading.Thread] = set()  # background refreshes running (close() waits for them)
        self._closed = False
        self._started = -1e18  # time.monotonic() when the running (or last) background refresh started
        self._refreshing = False
        self._queued: deque[QueuedRevocation] = deque()  # written to the store by the next refresh that can
        self._queue_lock = threading.Lock()  # one writer of the queue at a time (the rows keep their order)

    @property
    def grace(self) -> float:
        return self.interval * 3

    def _retry_after(self) -> float:
        return min(1.0, self.interval)

    def due(self, now: float) -> bool:
        """Whether :meth:`view` might wait now (async adapters then call it in a thread)."""
        age = now - self._view.fetched_at
        if age < self.interval:
            return False
        if self._failed_at is not None:
            return False  # nobody waits for a failing store (a refresh may start, but in the background)
        return not self._refreshing or (age > self.grace and time.monotonic() < self._started + self._wait_limit())

    def _wait_limit(self) -> float:
        """How long after a refresh started a request may wait for it: :data:`REFRESH_WAIT`, or for the first
        read (no view yet: the alternative is a 503, not an older view) up to the store's own time limit."""
        if self._view.fetched_at != NEVER:
            return REFRESH_WAIT
        return max(REFRESH_WAIT, self.store.timeout)

    def view(self, now: float) -> RevocationView:
        """The current snapshot; when it is older than the interval, a background refresh is started (or
        joined) as the module docstring says. Never waits longer than :data:`REFRESH_WAIT` (the first read: the
        store's ``timeout``)."""
        view = self._view
        age = now - view.fetched_at
        if age < self.interval:
            return view
        self._ensure_listener()
        failed_at = self._failed_at
        if failed_at is not None and now - failed_at < self._retry_after():
            return view
        if self._lock.acquire(blocking=False):
            self._started = time.monotonic()
            self._refreshing = True
            self._start_worker(self._refresh_in_background, now)
        elif age <= self.grace:
            return view  # another request started the refresh and our snapshot is still good enough
        if failed_at is not None:
            return self._view  # the store failed last time: do not make a request wait for it again
        remaining = self._started + self._wait_limit() - time.monotonic()
        if remaining > 0 and self._lock.acquire(timeout=remaining):
            self._lock.release()
        return self._view

    def revoke(self, username: str, *, now: float, session_id: str | None = None) -> bool:
        """Revoke one session (``session_id``) or every session of the user up to ``now``, and see it at once.

        Written to the store when it answers (True); otherwise (the store is down, slow or locked: within its own
        time limits) queued as the module docstring says and part of this process's view at once (False). Either
        way this process refuses the session from now on; never raises :class:`StoreUnavailable`."""
        if self._flush(wait=False):  # earlier ones first: the rows keep their order
            try:
                self.store.add_revocation(username, now=now, session_id=session_id)
            except StoreUnavailable:
                pass
            else:
                self.refresh(now)
                return True
        self._queue(QueuedRevocation(username, session_id, now))
        return False

    @property
    def queued(self) -> int:
        """How many revocations wait for the store (0 once it has taken them all)."""
        return len(self._queued)

    def _queue(self, item: QueuedRevocation) -> None:
        with self._apply_lock:
            self._queued.append(item)
            while len(self._queued) > MAX_QUEUED:
                lost = self._queued.popleft()
                log.error("revocation_dropped: too many revocations wait for the store; the oldest (user %s) is "
                          "no longer kept", lost.username)
            self._merge_local(item)
            self._view = RevocationView(MappingProxyType(dict(self._not_before)),
                                        MappingProxyType(dict(self._sessions)), fetched_at=self._view.fetched_at)
        log.error("revocation_queued: the store is unavailable; the revocation for user %s holds in this process "
                  "and is written when the store is back", item.username)

    def _merge_local(self, item: QueuedRevocation) -> None:
        if item.session_id is not None:
            self._sessions[item.session_id] = max(item.not_before, self._sessions.get(item.session_id, -1.0))
        elif item.not_before > self._not_before.get(item.username, -1.0):
            self._not_before[item.username] = item.not_before

    def _flush(self, *, wait: bool = True) -> bool:
        """Write the queued revocations, oldest first; False when the store refused one (it stays queued), or,
        with ``wait=False``, when another thread is writing them right now (a request never queues behind it)."""
        if not self._queued:
            return True
        if not self._queue_lock.acquire(blocking=wait):
            return False
        try:
            while self._queued:
                item = self._queued[0]
                try:
                    self.store.add_revocation(item.username, now=item.not_before, session_id=item.session_id)
                except StoreUnavailable:
                    return False
                with self._apply_lock:
                    if self._queued and self._queued[0] is item:
                        self._queued.popleft()
                log.info("revocation_written: a queued revocation for user %s reached the store", item.username)
        finally:
            self._queue_lock.release()
        return True

    def refresh(self, now: float) -> RevocationView:
        """Read new revocations now, in this thread (the caller just wrote one and must see it at once). When
        the hourly pruning is due it runs in a background thread: the caller waits for the read only."""
        self._ensure_listener()
        if self._fetch(now) and self._prune_due(now):
            self._start_worker(self._prune, now)
        return self._view

    def pushed(self) -> None:
        """A revocation was committed somewhere (a notification, or the listener's catch-up after it
        connected): read the new rows now, in the caller's (the listener's) thread."""
        self.refresh(self.clock())

    def _ensure_listener(self) -> None:
        """Start the listener in this process if it does not run here yet (see the module docstring)."""
        if self.listener is not None and self._listener_pid != os.getpid():
            self._start_listener()

    def _start_listener(self) -> None:
        with self._listener_lock:
            if self.listener is not None and self._listener_pid != os.getpid():
                self._listener_pid = os.getpid()
                self.listener.start()

    def close(self) -> None:
        """Stop the listener, if one runs, and wait for a read it is making and for a background refresh and its
        pruning (each bounded by the store's time limits), so that nothing is left using a store being closed.
        No pruning starts after this; the poll itself needs no stopping."""
        self._closed = True
        if self.listener is not None:
            self.listener.stop()
            self.listener.join(self.store.timeout + 2.0)
        self.wait_idle()

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait for the background refreshes running now, and their pruning, to finish (each at most
        ``timeout``, default the store's time limit and two seconds)."""
        for worker in list(self._workers):
            worker.join(self.store.timeout + 2.0 if timeout is None else timeout)

    def _start_worker(self, work: Callable[[float], None], now: float) -> None:
        """Run ``work(now)`` in a background thread that :meth:`wait_idle` (and :meth:`close`) waits for."""
        def run() -> None:
            try:
                work(now)
            finally:
                self._workers.discard(threading.current_thread())

        worker = threading.Thread(target=run, name="mfa-revocation-refresh", daemon=True)
        self._workers.add(worker)
        worker.start()

    def _refresh_in_background(self, now: float) -> None:
        try:
            fetched = self._fetch(now)
        finally:
            self._refreshing = False
            self._lock.release()
        if fetched:
            self._prune(now)

    def _prune_due(self, now: float) -> bool:
        return now - self._pruned_at > PRUNE_EVERY and not self._closed

    def _prune(self, now: float) -> None:
        """Delete rows older than the longest session (they cannot end anything any more), hourly.

        Runs after the refresh has released its lock, under a lock of its own that nobody waits for: the
        deletes are writes, and on a store whose write lock is held elsewhere each one waits out the busy
        timeout. Reads go on meanwhile, so the next refresh (and every request past the grace period that
        needs it) never queues behind the pruning."""
        if not self._prune_due(now) or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._pruned_at = now
            for prune in (lambda at: self.store.prune_revocations(at - self.horizon), *self.housekeeping):
                if self._closed:
                    return
                try:
                    prune(now)
                except StoreUnavailable:
                    pass
        finally:
            self._prune_lock.release()

    def _fetch(self, now: float) -> bool:
        if not self._flush():
            self._failed_at = now
            return False
        try:
            # Before the first read, the newest id committed now: every id above it that a read skips is a gap
            # to ask for again (ids below it were committed before this process started reading).
            floor = self.store.last_revocation_id() if self._gap_floor is None else self._gap_floor
            rows = self.store.revocations_since(self._last_id, newer_than=now - self.horizon,
                                                also_ids=tuple(self._gaps))
        except StoreUnavailable:
            self._failed_at = now
            return False
        self._gap_floor = floor
        self._apply(rows, now)
        self._failed_at = None
        return True

    def _apply(self, rows: list[RevocationRecord], now: float) -> None:
        with self._apply_lock:
            previous = max(self._last_id, self._gap_floor or 0)
            for row in rows:
                self._gaps.pop(row.id, None)
                if row.id > previous:
                    if row.id > previous + 1:
                        for missing in range(previous + 1, min(row.id, previous + 1 + MAX_GAPS)):
                            self._gaps.setdefault(missing, now)
                    previous = row.id
            self._last_id = max(self._last_id, previous)
            if self._gaps:
                self._gaps = {i: t for i, t in self._gaps.items() if now - t <= GAP_WINDOW}
                if len(self._gaps) > MAX_GAPS:
                    self._gaps = dict(sorted(self._gaps.items())[-MAX_GAPS:])
            for row in rows:
                if row.session_id:
                    self._sessions[row.session_id] = max(row.not_before, self._sessions.get(row.session_id, -1.0))
                elif row.not_before > self._not_before.get(row.username, -1.0):
                    self._not_before[row.username] = row.not_before
            cutoff = now - self.horizon
            if any(t < cutoff for t in self._not_before.values()):
                self._not_before = {u: t for u, t in self._not_before.items() if t >= cutoff}
            if any(t < cutoff for t in self._sessions.values()):
                self._sessions = {s: t for s, t in self._sessions.items() if t >= cutoff}
            # Two reads may finish out of order (a background refresh and refresh()): the rows merge either
            # way, and the view never claims to be older than the newest read that went into it.
            fetched_at = max(now, self._view.fetched_at)
            self._view = RevocationView(MappingProxyType(dict(self._not_before)),
                                        MappingProxyType(dict(self._sessions)), fetched_at=fetched_at)
