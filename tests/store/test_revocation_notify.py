"""Revocations pushed by NOTIFY (migration 0014, ``mfa_middleware/store/notify.py``), one store at a time.

The three-server tests are in ``tests/test_multi_server.py``; here: the trigger announces committed revocations
only, the listener makes the cache read at once and reconnects, SQLite has neither, and ``[store] listen_url``.
Waits are bounded (at most :data:`WITHIN` seconds, generous); nothing is timed.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert

from mfa_middleware.config import ConfigError, config_from_dict
from mfa_middleware.runtime import Runtime
from mfa_middleware.services.revocation import RevocationCache
from mfa_middleware.store import Store
from mfa_middleware.store.notify import APPLICATION_NAME, CHANNEL, NotificationListener, connect_params
from mfa_middleware.store.schema import revocations
from tests.support.mfa import ENCRYPTION_KEY, SECRET_KEY

WITHIN = 5.0


def dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def wait_for(condition: Any, within: float = WITHIN) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.postgres
def test_only_a_committed_revocation_is_announced(postgres_url: str) -> None:
    store = Store(postgres_url)
    store.upgrade()
    with psycopg.connect(dsn(postgres_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        listener.execute("LISTEN probe")

        class Rollback(Exception):
            pass

        with pytest.raises(Rollback):  # a revocation written and rolled back: no notification
            with store.engine.begin() as conn:
                conn.execute(insert(revocations).values(username="bob", session_id=None, not_before=1.0,
                                                        created_at=time.time()))
                raise Rollback
        with psycopg.connect(dsn(postgres_url), autocommit=True) as other:
            other.execute("NOTIFY probe")  # committed after the rollback: delivered after anything it sent
        seen = [n.channel for n in listener.notifies(timeout=WITHIN, stop_after=1)]
        assert seen == ["probe"], "a rolled-back revocation was announced"

        store.add_revocation("bob", now=time.time())  # one user-wide revocation (a row, devices forgotten)
        seen = [n.channel for n in listener.notifies(timeout=WITHIN, stop_after=1)]
        assert seen == [CHANNEL]
        payloads = [n.payload for n in listener.notifies(timeout=0)]
        assert payloads == [], "one notification per transaction"
    store.close()


@pytest.mark.postgres
def test_a_notification_makes_the_cache_read_at_once_and_a_dropped_listener_comes_back(postgres_url: str) -> None:
    store = Store(postgres_url)
    store.upgrade()
    cache = RevocationCache(store, interval=3600, horizon=86400,
                            listener=lambda wake: NotificationListener(postgres_url, wake))
    listener = cache.listener
    assert isinstance(listener, NotificationListener)
    try:
        now = time.time()
        cache.view(now)  # the first read starts the listener
        assert wait_for(lambda: listener.connected)
        store.add_revocation("bob", now=now, session_id="s1")  # written by "another server": no refresh() here
        assert wait_for(lambda: "s1" in cache._view.revoked_sessions), "the notification was not acted on"

        with psycopg.connect(dsn(postgres_url), autocommit=True) as admin:
            pids = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
                                 (f"{APPLICATION_NAME}:%",)).fetchall()
            assert len(pids) == 1
            admin.execute("SELECT pg_terminate_backend(%s)", pids[0])
        store.add_revocation("bob", now=now, session_id="s2")  # while it is down or coming back: caught up
        assert wait_for(lambda: listener.connections >= 2 and listener.connected), "no reconnection"
        assert wait_for(lambda: "s2" in cache._view.revoked_sessions), "not caught up after reconnecting"
        store.add_revocation("bob", now=now, session_id="s3")
        assert wait_for(lambda: "s3" in cache._view.revoked_sessions), "not pushed after reconnecting"
    finally:
        cache.close()
        listener.join(WITHIN)
        store.close()
    assert not listener.connected


def test_sqlite_keeps_polling(tmp_path: Any) -> None:
    config = config_from_dict({"secret_keys": [SECRET_KEY], "encryption_key": ENCRYPTION_KEY,
                               "database": f"sqlite:///{tmp_path / 'mfa.db'}"})
    rt = Runtime(config)
    try:
        assert rt.revocations.listener is None
    finally:
        rt.close()


def base(**store: Any) -> dict[str, Any]:
    return {"secret_keys": [SECRET_KEY], "encryption_key": ENCRYPTION_KEY,
            "database": "postgresql+psycopg://mfa@pgbouncer:6432/mfa", "store": store}


def test_listen_url_is_read_from_the_environment() -> None:
    config = config_from_dict(base(listen_url="env:MFA_LISTEN_URL"),
                              environ={"MFA_LISTEN_URL": "postgresql+psycopg://mfa:pw@db:5432/mfa"})
    assert config.store.listen_url == "postgresql+psycopg://mfa:pw@db:5432/mfa"
    params = connect_params(config.store.listen_url)
    assert (params["host"], params["port"], params["user"], params["password"], params["dbname"]) == \
        ("db", 5432, "mfa", "pw", "mfa")
    assert params["autocommit"] is True and params["application_name"].startswith(f"{APPLICATION_NAME}:")


@pytest.mark.parametrize("data", [
    pytest.param({**base(listen_url="postgresql+psycopg://db/mfa"), "database": "sqlite:///mfa.db"},
                 id="with-sqlite"),
    pytest.param(base(listen_url="mysql://db/mfa"), id="not-postgresql"),
    pytest.param(base(listen_url=5), id="not-a-string"),
])
def test_bad_listen_url_is_refused_by_name(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"store\.listen_url"):
        config_from_dict(data, environ={})
