"""PostgreSQL ``LISTEN``: revocations pushed to every process instead of waiting for its next poll.

Every statement that writes revocation rows sends ``NOTIFY mfa_revocations`` in its own transaction (a trigger:
migration 0014), so a notification is delivered only once the rows are committed and visible. Each process keeps
ONE dedicated connection that listens on that channel, in a daemon thread, and calls ``wake()`` (the revocation
cache's "read new rows now") when a notification arrives.

Trust model and rules:

- A notification says "look now", nothing more. Its payload is empty and never read: anyone who may connect to
  the database can send one, and the worst it can do is cause an extra read of the revocation table.
- Notifications already queued when a read starts are covered by it: they are drained before ``wake()``, so a
  burst of revocations costs each process a few reads, not one per row.
- The connection is autocommit and never inside a transaction (PostgreSQL holds notifications back until a
  listener's transaction ends). It is made from ``[store] listen_url`` when given, else from ``database``: a
  pooler in transaction mode (PgBouncer) hands each transaction another server connection, so ``LISTEN`` through
  it hears nothing; the listener must reach PostgreSQL directly. Its ``application_name`` is
  :data:`APPLICATION_NAME` followed by the process id, so operators can find it in ``pg_stat_activity``.
- When the connection fails or is closed by the server (restart, ``pg_terminate_backend``, network), the thread
  connects again after a back-off (:data:`FIRST_BACKOFF` doubling up to :data:`MAX_BACKOFF`), listens, and then
  calls ``wake()`` once: rows committed while nobody listened are read then. Meanwhile, and always, the cache's
  interval poll goes on, so a dead listener makes revocation slower (the interval), never lost.
- A dead host is found by TCP keepalives; a frozen server (which still acknowledges packets) keeps the listener
  waiting until it resumes, while the poll (bounded by the store's time limits) fails closed as usual.
- The thread holds the listener only weakly between waits: a runtime that is dropped without ``close()`` lets its
  listener stop within :data:`TICK` seconds and close its connection.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

from .sql import _shut_down

log = logging.getLogger("mfa_middleware.store.notify")

#: the channel migration 0014's trigger notifies
CHANNEL = "mfa_revocations"
#: the listening connection's ``application_name`` (then ``:`` and the process id)
APPLICATION_NAME = "mfa-revocation-listener"
#: longest a wait for notifications lasts before the thread checks whether it should stop (seconds)
TICK = 1.0
#: first wait before connecting again after a failure; doubles up to :data:`MAX_BACKOFF` (seconds)
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: connect timeout of the listening connection unless its URL says otherwise (seconds, libpq's minimum is 2)
CONNECT_TIMEOUT = 5

Wake = Callable[[], object]


def connect_params(url: str) -> dict[str, Any]:
    """psycopg ``connect()`` keyword arguments for a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://...`` or
    ``postgresql://...``): what the store's own engine would use, plus the listener's defaults (keepalives, a
    connect timeout, its ``application_name``). Settings in the URL's query string win, except the name."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "keepalives": 1, "keepalives_idle": 10,
                              "keepalives_interval": 2, "keepalives_count": 3}
    params.update(parsed.translate_connect_args(username="user", database="dbname"))
    for key, value in parsed.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    params["application_name"] = f"{APPLICATION_NAME}:{os.getpid()}"
    params["autocommit"] = True
    return params


class NotificationListener:
    """One listening connection in one daemon thread, calling ``wake()`` per notification burst (module
    docstring). :meth:`start` is called again in a forked child (the parent's thread does not exist there)."""

    def __init__(self, url: str, wake: Wake, *, channel: str = CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self._wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd_lock = threading.Lock()
        self._fd: int | None = None  # the listening connection's socket while it is open (see stop())
        #: whether the connection is up and listening (for health and metrics; a fact of the moment)
        self.connected = False
        #: times the connection was made, the first included
        self.connections = 0

    def start(self) -> None:
        """Start the thread (in this process: a forked child gets its own)."""
        self._stop = threading.Event()  # a fresh one: a forked child must not inherit a lock held at the fork
        self.connected = False
        self._thread = threading.Thread(target=_listen, args=(weakref.ref(self),), daemon=True,
                                        name="mfa-revocation-listener")
        self._thread.start()

    def stop(self) -> None:
        """Make the thread close its connection and end: its wait is cut at once (the socket is shut down, as the
        store's watchdog does); a read it is making finishes first. Does not wait: see :meth:`join`."""
        self._stop.set()
        with self._fd_lock:
            if self._fd is not None:
                _shut_down(self._fd)

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


def _stopped(ref: weakref.ref[NotificationListener]) -> bool:
    listener = ref()
    return listener is None or listener._stop.is_set()


def _wake(ref: weakref.ref[NotificationListener]) -> None:
    listener = ref()
    if listener is not None and not listener._stop.is_set():
        listener._wake()


def _listen(ref: weakref.ref[NotificationListener]) -> None:
    """The thread: connect, LISTEN, catch up, wait for notifications; again after a failure."""
    import psycopg

    listener = ref()
    if listener is None:
        return
    stop, channel = listener._stop, listener.channel
    try:
        params = connect_params(listener.url)
    except ValueError:
        log.exception("revocation listener: bad URL; revocations are polled only")
        return
    del listener  # held weakly from here on, so that a runtime dropped without close() lets it go
    backoff = FIRST_BACKOFF
    while not _stopped(ref):
        try:
            conn = psycopg.connect(**params)
            try:
                if not _set_socket(ref, conn.pgconn.socket):
                    return
                conn.execute(f'LISTEN "{channel}"')
                _set_connected(ref, True)
                backoff = FIRST_BACKOFF
                _wake(ref)  # rows committed before LISTEN took effect (start-up, or while disconnected)
                while not _stopped(ref):
                    if any(True for _ in conn.notifies(timeout=TICK, stop_after=1)):
                        for _ in conn.notifies(timeout=0):
                            pass  # already queued: committed before the read below starts, so it covers them
                        _wake(ref)
            finally:
                _set_socket(ref, None)
                conn.close()
        except psycopg.Error as exc:
            if not _stopped(ref):
                log.warning("revocation listener: connection lost or refused (%s); again in %.1f s, polling "
                            "meanwhile", type(exc).__name__, backoff)
        except Exception:  # a failing wake() is a bug, but must not end the pushes for good
            log.exception("revocation listener: unexpected error; again in %.1f s", backoff)
        finally:
            _set_connected(ref, False)
        if stop.wait(backoff * random.uniform(0.8, 1.2)):
            return
        backoff = min(MAX_BACKOFF, backoff * 2)


def _set_socket(ref: weakref.ref[NotificationListener], fd: int | None) -> bool:
    """Record the open connection's socket for :meth:`NotificationListener.stop` (False: stopped meanwhile)."""
    listener = ref()
    if listener is None:
        return False
    with listener._fd_lock:
        listener._fd = fd
        return not listener._stop.is_set()


def _set_connected(ref: weakref.ref[NotificationListener], value: bool) -> None:
    listener = ref()
    if listener is not None:
        listener.connected = value
        if value:
            listener.connections += 1
