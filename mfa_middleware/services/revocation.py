"""The revocation cache: how logout, "revoke sessions", reset and delete reach every process.

Each process keeps a snapshot of recent revocations (per-user "not before" times and revoked session ids) and
refreshes it from the store at most once per ``interval`` seconds, reading only rows newer than the last one it
has seen. The authenticated hot path therefore costs a dictionary lookup; a revocation written by any process
is seen by all of them within ``interval`` seconds.

If the store cannot be read, the old snapshot stays in use for a grace period (three intervals); after that
the core answers 503 instead of trusting a view it can no longer refresh (fail closed).
"""

from __future__ import annotations

import threading
from types import MappingProxyType

from ..core.decision import RevocationView
from ..store import Store, StoreUnavailable


PRUNE_EVERY = 3600.0


class RevocationCache:
    def __init__(self, store: Store, *, interval: float, horizon: float) -> None:
        self.store = store
        self.interval = interval
        self.horizon = horizon  # revocations older than the absolute session timeout cannot matter
        self._lock = threading.Lock()
        self._not_before: dict[str, float] = {}
        self._sessions: dict[str, float] = {}
        self._last_id = 0
        self._view = RevocationView(MappingProxyType({}), MappingProxyType({}), fetched_at=-1e18)
        self._failed_at: float | None = None
        self._pruned_at = -1e18

    @property
    def grace(self) -> float:
        return self.interval * 3

    def due(self, now: float) -> bool:
        """Whether :meth:`view` would query the store now (async adapters then call it in a thread)."""
        age = now - self._view.fetched_at
        if age < self.interval:
            return False
        return self._failed_at is None or now - self._failed_at >= min(1.0, self.interval)

    def view(self, now: float) -> RevocationView:
        """The current snapshot, refreshed first when it is older than the interval.

        While one thread refreshes, the others keep using the snapshot they have, as long as it is within the
        grace period; past it (at start-up, or after an idle spell) they wait for the refresh rather than
        answer 503 for a store that is fine. A store that just failed is not asked again for a second.
        """
        view = self._view
        age = now - view.fetched_at
        if age < self.interval:
            return view
        if self._failed_at is not None and now - self._failed_at < min(1.0, self.interval):
            return view
        if not self._lock.acquire(blocking=age > self.grace):
            return view  # another thread is refreshing and our snapshot is still good enough
        try:
            if now - self._view.fetched_at >= self.interval:
                self._refresh(now)
            return self._view
        finally:
            self._lock.release()

    def refresh(self, now: float) -> RevocationView:
        with self._lock:
            self._refresh(now)
            return self._view

    def _refresh(self, now: float) -> None:
        try:
            rows = self.store.revocations_since(self._last_id, newer_than=now - self.horizon)
        except StoreUnavailable:
            self._failed_at = now
            return
        self._failed_at = None
        if now - self._pruned_at > PRUNE_EVERY:
            # Rows older than the longest session cannot end anything any more.
            self._pruned_at = now
            try:
                self.store.prune_revocations(now - self.horizon)
            except StoreUnavailable:
                pass
        for row in rows:
            self._last_id = max(self._last_id, row.id)
            if row.session_id:
                self._sessions[row.session_id] = max(row.not_before, self._sessions.get(row.session_id, -1.0))
            elif row.not_before > self._not_before.get(row.username, -1.0):
                self._not_before[row.username] = row.not_before
        cutoff = now - self.horizon
        if any(t < cutoff for t in self._not_before.values()):
            self._not_before = {u: t for u, t in self._not_before.items() if t >= cutoff}
        if any(t < cutoff for t in self._sessions.values()):
            self._sessions = {s: t for s, t in self._sessions.items() if t >= cutoff}
        self._view = RevocationView(MappingProxyType(dict(self._not_before)), MappingProxyType(dict(self._sessions)),
                                    fetched_at=now)
