"""Revocation ids committed out of order are not lost: on PostgreSQL a transaction that took id N can commit
after one that took N+1 was read, and the per-process cache must still see N at a later refresh."""

from __future__ import annotations


import pytest
from sqlalchemy import insert

from mfa_middleware.services.revocation import RevocationCache
from mfa_middleware.store import Store
from mfa_middleware.store.schema import revocations

NOW = 1_800_000_000.0


def test_a_revocation_committed_late_is_seen_at_the_next_refresh(store: Store) -> None:
    cache = RevocationCache(store, interval=5, horizon=3600)
    store.add_revocation("alice", now=NOW, session_id="s1")
    assert "s1" in cache.refresh(NOW).revoked_sessions
    first = store.last_revocation_id()
    # id first+2 commits while first+1 is still open elsewhere
    with store.engine.begin() as conn:
        conn.execute(insert(revocations).values(id=first + 2, username="bob", session_id="s3", not_before=NOW,
                                                created_at=NOW))
    view = cache.refresh(NOW + 1)
    assert "s3" in view.revoked_sessions
    with store.engine.begin() as conn:  # ... and now the one that took id first+1 commits
        conn.execute(insert(revocations).values(id=first + 1, username="carol", session_id=None, not_before=NOW,
                                                created_at=NOW))
    view = cache.refresh(NOW + 2)
    assert view.not_before.get("carol") == NOW, "the late commit was skipped for good"


@pytest.mark.postgres
def test_uncommitted_revocation_on_postgres_is_not_lost(postgres_url: str) -> None:
    """The real thing: two PostgreSQL transactions take ids from the sequence; the later one commits first."""
    store = Store(postgres_url)
    store.upgrade()
    try:
        cache = RevocationCache(store, interval=5, horizon=3600)
        cache.refresh(NOW)
        slow = store.engine.connect()
        tx = slow.begin()
        slow.execute(insert(revocations).values(username="carol", session_id=None, not_before=NOW, created_at=NOW))
        store.add_revocation("bob", now=NOW, session_id="s-bob")  # takes the next id and commits at once
        assert "s-bob" in cache.refresh(NOW + 1).revoked_sessions
        assert "carol" not in cache.refresh(NOW + 1).not_before
        tx.commit()
        slow.close()
        assert cache.refresh(NOW + 2).not_before.get("carol") == NOW
    finally:
        store.close()


def test_skipped_ids_are_forgotten_after_the_window(store: Store) -> None:
    """A rolled-back id never appears: it is asked for only for a bounded time."""
    from mfa_middleware.services import revocation

    cache = RevocationCache(store, interval=5, horizon=3600)
    store.add_revocation("alice", now=NOW, session_id="s1")
    cache.refresh(NOW)
    first = store.last_revocation_id()
    with store.engine.begin() as conn:
        conn.execute(insert(revocations).values(id=first + 5, username="bob", session_id="s5", not_before=NOW,
                                                created_at=NOW))
    cache.refresh(NOW + 1)
    assert set(cache._gaps) == {first + 1, first + 2, first + 3, first + 4}
    cache.refresh(NOW + 1 + revocation.GAP_WINDOW + 1)
    assert cache._gaps == {}
