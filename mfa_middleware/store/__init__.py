"""The user store: SQLAlchemy Core over SQLite (default) or PostgreSQL."""

from __future__ import annotations

from .sql import MethodRecord, SchemaOutOfDate, Store, StoreUnavailable, UserRecord

__all__ = ["MethodRecord", "SchemaOutOfDate", "Store", "StoreUnavailable", "UserRecord"]
