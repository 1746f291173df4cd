"""Fixtures shared by the store's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mfa_middleware.store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A store on this test's database (SQLite, or PostgreSQL for the ``postgresql`` parameter), migrated."""
    store = Store(database_url)
    try:
        store.upgrade()
        yield store
    finally:
        store.close()
