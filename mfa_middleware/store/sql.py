"""The store contract, implemented once with SQLAlchemy Core for SQLite and PostgreSQL.

Rules:

- Counters that guard security are changed by a single conditional UPDATE in SQL, never read-modify-write in
  Python: the TOTP last step (:meth:`Store.consume_step`), failed attempts (:meth:`Store.reserve_attempt`).
  Both hold across threads, processes and servers sharing the database.
- Database errors that mean "cannot reach or use the database" become :class:`StoreUnavailable`, which the
  pages and adapters turn into a 503; they never turn into a pass.
- Secrets arrive here already hashed (argon2id) or encrypted; the store never sees plaintext secrets.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import (Connection, Engine, ExceptionContext, and_, case, create_engine, delete, event, exists, func,
                        insert, literal, not_, or_, select, update)
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from . import schema
from .schema import webauthn_challenges, webauthn_credentials, webauthn_logins
from .schema import (app_passwords, audit, backup_codes, calls, challenges, client_failures, devices, fraud_reports,
                     methods, oath_tokens, phone_sends, push_devices, push_nonces, push_registrations,
                     push_requests, revocations, user_address_failures, users)
from .schema import sessions as session_rows

T = TypeVar("T")
MIGRATIONS = Path(__file__).with_name("migrations")
#: failed attempts in a row (never reset by time, only by a successful sign-in) after which an account stays
#: locked until an administrator unlocks it (NIST SP 800-63B: at most 100 consecutive failures).
HARD_FAILURE_LIMIT = 100
LOCKED_FOR_GOOD = 1e18


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or used right now."""


class SchemaOutOfDate(RuntimeError):
    """The database schema is older than this version of the package (run ``mfa-admin db upgrade``)."""


class UserExists(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Reservation:
    """One attempt counted before its secret is checked (see :meth:`Store.reserve_attempt`)."""

    allowed: bool  # counted: the secret may be checked; False: locked, nothing counted, nothing may be checked
    count: int  # failures in the window, this attempt included when allowed
    locked_until: float | None  # the lock as stored after this attempt (None or in the past: not locked)
    started_lock: bool = False  # this attempt reached the limit: a success lifts the lock it started


@dataclass(frozen=True, slots=True)
class BanRecord:
    """A ban in force (``mfa-admin bans list``): an account or a client address, with its failures and end."""

    kind: Literal["user", "address"]
    subject: str  # the username or the address
    failures: int  # in the window (user: also the consecutive count when locked for good)
    until: float  # LOCKED_FOR_GOOD: until an administrator unlocks it


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    email: str | None
    display_name: str | None
    groups: tuple[str, ...]
    is_admin: bool
    state: str
    password_hash: str | None
    failed_count: int
    last_failed_at: float | None
    locked_until: float | None
    consecutive_failures: int
    created_at: float
    updated_at: float
    blocked_until: float | None = None
    blocked_reason: str | None = None
    bypass_until: float | None = None

    def locked(self, now: float) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def blocked(self, now: float) -> bool:
        return self.blocked_until is not None and self.blocked_until > now


@dataclass(frozen=True, slots=True)
class UserFilter:
    """What a user listing keeps (every field None or empty: everyone). ``search`` is a case-insensitive part of
    the username, email or display name; ``group`` one whole group name; ``method`` a kind of confirmed method."""

    search: str | None = None
    state: str | None = None
    group: str | None = None
    blocked: bool | None = None
    locked: bool | None = None
    method: str | None = None
    admin: bool | None = None


@dataclass(frozen=True, slots=True)
class MethodRecord:
    id: int
    user_id: int
    kind: str
    label: str
    secret: bytes | None
    confirmed: bool
    last_step: int | None
    created_at: float
    last_used_at: float | None
    is_default: bool = False
    detail: bytes | None = None  # the method's own data, encrypted (an email address...)


@dataclass(frozen=True, slots=True)
class AppPasswordRecord:
    id: int
    user_id: int
    label: str
    lookup: str
    password_hash: str
    created_at: float
    last_used_at: float | None
    last_used_ip: str | None


OathKind = Literal["totp", "hotp"]


@dataclass(frozen=True, slots=True)
class OathTokenRecord:
    """One OATH hardware token of the inventory (see :mod:`mfa_middleware.factors.oath`)."""

    id: int
    serial: str
    user_id: int | None  # None: unassigned (in the pool)
    username: str | None  # of ``user_id``, read in the same query
    kind: OathKind
    secret: bytes = field(repr=False)  # the Base32 key, encrypted
    digits: int = 6
    period: int | None = None  # TOTP only
    counter: int | None = None  # HOTP only: the next counter value expected
    last_step: int | None = None  # TOTP only: the last accepted step
    manufacturer: str | None = None
    model: str | None = None
    imported_at: float = 0.0
    last_used_at: float | None = None
    method_id: int | None = None  # set once the user activated the token

    @property
    def activated(self) -> bool:
        return self.method_id is not None


class SerialTaken(ValueError):
    """A token with this serial number is in the inventory already."""


class AppPasswordLimit(ValueError):
    """The user already has the configured maximum number of app passwords."""


class LabelTaken(ValueError):
    """The user already has an app password with this label."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: float
    actor: str
    username: str | None
    event: str
    result: str
    client_ip: str | None
    user_agent: str | None
    detail: dict[str, Any]
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session cookie that was issued (migration 0015): who, when, from where, with which methods."""

    id: int
    user_id: int
    sid: str
    created_at: float
    expires_at: float
    client_ip: str | None
    user_agent: str | None
    methods: tuple[str, ...]
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A remembered device (``device_id`` is the digest of the random id its cookie holds)."""

    id: int
    user_id: int
    device_id: str
    name: str
    created_at: float
    last_used_at: float | None
    expires_at: float


@dataclass(frozen=True, slots=True)
class RevocationRecord:
    id: int
    username: str
    session_id: str | None
    not_before: float


# -- phone send caps and fraud reports (records) ------------------------------------------------------------------
PhoneChannel = Literal["text", "call"]
PHONE_CHANNELS: tuple[PhoneChannel, ...] = ("text", "call")
SendPurpose = Literal["sign_in", "enroll"]
SEND_PURPOSES: tuple[SendPurpose, ...] = ("sign_in", "enroll")
#: which cap refused a send: see :class:`SendLimits`
SendLimitName = Literal["min_interval", "user_hour", "user_day", "number_hour", "number_day", "country_hour",
                        "country_day"]
HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class SendLimits:
    """Caps on texts and calls, against SMS pumping and toll fraud (:meth:`Store.reserve_phone_send`).

    ``min_interval``: seconds between two sends to the same user for the same purpose on the same channel ("Send
    again" waits): a text after a text, a call after a call. A call right after a text (the person chose "Sign in
    another way", or adds an office phone after a mobile) is not a resend; the hourly and daily caps count both
    channels. The ``per_*`` caps count sends in a sliding hour or day, per user, per number (its keyed digest) and
    per country of the number, whoever the user; 0 means no cap. Every send counts, whether the gateway accepted
    it or not. Parsed from the configuration by
    :func:`mfa_middleware.services.phone_limits.parse_send_limits`.
    """

    min_interval: float = 30.0
    per_user_hour: int = 5
    per_user_day: int = 20
    per_number_hour: int = 5
    per_number_day: int = 20
    per_country_hour: int = 200
    per_country_day: int = 1000

    def __post_init__(self) -> None:
        if self.min_interval < 0:
            raise ValueError("min_interval must not be negative")
        for name in ("per_user_hour", "per_user_day", "per_number_hour", "per_number_day", "per_country_hour",
                     "per_country_day"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 means no cap)")


@dataclass(frozen=True, slots=True)
class SendRefusal:
    """A send the caps refused: which cap (the one that frees last when several refuse), and how many seconds
    from ``now`` until a send could pass it (it may still meet another cap then, if sends happen meanwhile)."""

    limit: SendLimitName
    retry_after: float


@dataclass(frozen=True, slots=True)
class FraudReportRecord:
    """One fraud report (see :mod:`mfa_middleware.services.fraud`)."""

    id: int
    user_id: int
    username: str
    method_kind: str
    at: float
    client_ip: str | None
    user_agent: str | None
    reference: str  # digest of the challenge or attempt the report ended
    blocked_until: float | None  # None: the report did not block the user
    notified: tuple[str, ...]  # notifications that succeeded: "email:<address>", "webhook"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call of the voice method (see ``schema.calls``)."""

    id: int
    user_id: int
    method_id: int
    sign_in_id: str
    status: str  # pending | approved | fraud | failed | used
    created_at: float
    expires_at: float
    answered_at: float | None


@dataclass(frozen=True, slots=True)
class WebAuthnCredentialRecord:
    """One passkey or security key (see ``schema.webauthn_credentials``)."""

    id: int
    user_id: int
    method_id: int
    credential_id: str  # base64url
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    aaguid: str
    name: str
    created_at: float
    last_used_at: float | None


@dataclass(frozen=True, slots=True)
class WebAuthnChallengeRecord:
    """One ceremony's server-side challenge (see ``schema.webauthn_challenges``)."""

    id: int
    user_id: int
    method_id: int
    sign_in_id: str
    purpose: str  # register | authenticate
    challenge: str  # base64url
    token: str
    status: str  # pending | answered | used
    answer: str | None
    created_at: float
    expires_at: float


class FraudReportExists(ValueError):
    """A report with this reference exists already (a replayed report); ``existing`` is that report."""

    def __init__(self, existing: FraudReportRecord) -> None:
        super().__init__(f"fraud report {existing.id} has this reference already")
        self.existing = existing


def _advisory_key(kind: str, value: str | int) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for one user, number or country of the phone send caps (or one
    user's push requests)."""
    digest = hashlib.sha256(f"mfa_phone_sends:{kind}:{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# -- bounded waits -------------------------------------------------------------------------------------------------
#: longest one store transaction may take, start to end, unless the configuration says otherwise (seconds)
DEFAULT_TIMEOUT = 3.0
#: SQLite: longest a write waits for another connection's (or process's) write lock (seconds)
DEFAULT_BUSY_TIMEOUT = 2.0
#: a failure that took at least this long means the store hangs rather than refuses: see :class:`_Breaker`
SLOW_FAILURE = 0.5
#: after such a failure, calls fail at once for this long, then one caller probes the store again
RETRY_AFTER = 1.0
#: libpq counts the connect timeout in whole seconds and enforces at least 2
MIN_CONNECT_TIMEOUT = 2



class _Transaction(threading.local):
    """What the store transaction the current thread runs may wait for: set by ``Store._begin``, read by the
    connection hooks below. Not configuration: a per-thread fact of the moment."""

    deadline: float | None = None  # time.monotonic(); None outside a transaction, math.inf: no bound
    wait_for_writers = True  # SQLite: False while another writer is known to hold the lock


_current = _Transaction()


def _current_deadline(default_timeout: float) -> float:
    at = _current.deadline
    return time.monotonic() + default_timeout if at is None else at


class _Watchdog:
    """Ends PostgreSQL round trips that outlive their deadline by shutting down the connection's socket.

    A server that is frozen (SIGSTOP) or a host that vanished never answers: the kernel still acknowledges
    our packets (or nothing does), so neither the server's ``statement_timeout`` nor TCP keepalives fire, and
    libpq would wait forever. Shutting the socket down wakes libpq at once with "server closed the connection
    unexpectedly": psycopg marks the connection broken, SQLAlchemy sees a disconnect and throws it (and the
    rest of the pool, which was opened to the same server) away. One thread per engine, started when a round
    trip is armed and gone after a quiet minute.
    """

    IDLE = 60.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, int]] = {}  # key -> (deadline, socket fd)
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._wake_at = math.inf

    def arm(self, fd: int, deadline: float) -> int:
        with self._cond:
            key = next(self._keys)
            self._armed[key] = (deadline, fd)
            if self._thread is None or self._pid != os.getpid():  # none yet, or we are a forked child
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="mfa-store-watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._wake_at:
                self._cond.notify()
            return key

    def disarm(self, key: int) -> None:
        with self._cond:
            self._armed.pop(key, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, (deadline, fd) in list(self._armed.items()):
                    if deadline <= now:
                        # Under the lock: the owner cannot disarm (and then close the fd) while we act on it.
                        del self._armed[key]
                        _shut_down(fd)
                if not self._armed:
                    self._wake_at = math.inf
                    if not self._cond.wait(self.IDLE) and not self._armed:
                        self._thread = None
                        return
                    continue
                self._wake_at = min(d for d, _ in self._armed.values())
                self._cond.wait(max(0.0, self._wake_at - now))


def _shut_down(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()  # closes our duplicate only; the connection's own descriptor stays for psycopg to close


def _bounded_connection_class(watchdog: _Watchdog, default_timeout: float) -> Any:
    """A psycopg connection whose every round trip (statement, commit, rollback, ping) ends by the deadline
    of the store transaction that runs it, or ``default_timeout`` from its start outside one."""
    import psycopg

    class BoundedConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
            deadline = _current_deadline(default_timeout)
            if deadline == math.inf:
                return super().wait(gen, *args, **kwargs)
            key = watchdog.arm(self.pgconn.socket, deadline)
            try:
                return super().wait(gen, *args, **kwargs)
            finally:
                watchdog.disarm(key)

    return BoundedConnection


def _postgres_connect(timeout: float, transaction_pooler: bool = False) -> Callable[..., Any]:
    """The ``do_connect`` hook of a PostgreSQL engine: bounded connections, with time limits on both sides.

    - ``connect_timeout``: what is left of the transaction's deadline (whole seconds, at least 2: libpq's
      rule); none is attempted once less than a second (or half the timeout, when that is shorter) is left. With
      a timeout under two seconds a connect may therefore end up to ``2 - timeout / 2`` seconds past the
      deadline; without that allowance such a store could never open a connection again once its pool was
      thrown away, and would stay down after the server came back.
    - TCP keepalives and ``tcp_user_timeout``: a connection to a host that went away (cable, firewall, VM
      paused) is found dead by the kernel instead of looking idle forever.
    - ``statement_timeout`` and ``lock_timeout`` on the server: a slow statement or a row lock held by a stuck
      client is cancelled cleanly, before our own bound cuts the connection; and
      ``idle_in_transaction_session_timeout`` ends the transactions of a client that froze.
    Settings in the URL (its query string) win over these defaults.

    With ``transaction_pooler`` (PgBouncer in ``pool_mode = transaction``: each transaction may run on another
    server connection, shared with other clients) two things change: psycopg never prepares statements on the
    server (``prepare_threshold=None``: a statement prepared on one server connection does not exist on the next,
    and its name may already be taken on another), and the server-side timeouts are not sent as the ``options``
    startup parameter, which PgBouncer refuses (set them on the role instead: README, "Behind PgBouncer"). The
    client-side bounds (connect timeout, keepalives, the watchdog) stay.
    """
    import psycopg

    watchdog = _Watchdog()
    connection_class = _bounded_connection_class(watchdog, timeout)
    ms = max(1, int(timeout * 1000))
    server_options = (f"-c statement_timeout={ms} -c lock_timeout={ms} "
                      f"-c idle_in_transaction_session_timeout={max(10_000, 10 * ms)}")
    defaults = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 2, "keepalives_count": 3,
                "tcp_user_timeout": max(1000, ms)}

    least = min(1.0, timeout / 2)

    def connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        remaining = _current_deadline(timeout) - time.monotonic()
        if remaining < least:
            raise psycopg.OperationalError("the store did not answer within the time allowed")
        params = {**defaults, **cparams}
        wanted = max(MIN_CONNECT_TIMEOUT, int(remaining)) if remaining != math.inf else None
        given = params.get("connect_timeout")
        if wanted is not None and (given is None or int(given) <= 0 or int(given) > wanted):
            params["connect_timeout"] = wanted
        if transaction_pooler:
            params["prepare_threshold"] = None
        else:
            params["options"] = f"{server_options} {params.get('options') or ''}".strip()
        return connection_class.connect(*cargs, **params)

    return connect


def _file_identity(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _sqlite_hooks(path: str | None, busy_timeout: float) -> tuple[Callable[..., None], Callable[..., None]]:
    """``connect`` and ``checkout`` hooks of an SQLite engine.

    - Each connection waits ``busy_timeout`` for another writer's lock, or not at all while ``Store._begin``
      says the lock is known to be held (see :class:`_Breaker`).
    - A pooled connection whose file was replaced (a backup restored by moving it into place) still reads and
      writes the old, unlinked file; at checkout it is found out by the file's identity and replaced.
    """
    ms = max(1, int(busy_timeout * 1000))

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={ms}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()
        record.info["file"] = _file_identity(path)
        record.info["busy_timeout"] = ms

    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if path and record.info.get("file") != _file_identity(path):
            raise DisconnectionError("the database file was replaced")
        wanted = ms if _current.wait_for_writers else 0
        if record.info.get("busy_timeout") != wanted:
            dbapi_connection.execute(f"PRAGMA busy_timeout={wanted}")
            record.info["busy_timeout"] = wanted

    return on_connect, on_checkout


def _cancelled_by_server(error: BaseException | None) -> bool:
    """PostgreSQL answered, cancelling the statement at its ``lock_timeout`` or ``statement_timeout``: the server
    is alive (SQLSTATE 55P03 lock_not_available, 57014 query_canceled)."""
    return getattr(error, "sqlstate", None) in ("55P03", "57014")


def _sqlite_busy(error: BaseException | None) -> bool:
    """SQLite's "database is locked" (another writer held on longer than the busy timeout): contention, not a
    broken connection."""
    text = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _sqlite_discard_broken(context: ExceptionContext) -> None:
    """SQLite has no "disconnect", so SQLAlchemy would put a connection that saw a corrupt or vanished file
    back into the pool, and every later request would fail on it until a restart. Every database error except
    a constraint violation and lock contention now counts as a disconnect: the connection (and the pool,
    opened on the same file) is thrown away and the next request opens the file afresh."""
    error = context.original_exception
    if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.IntegrityError) \
            and not _sqlite_busy(error):
        context.is_disconnect = True


def make_engine(url: str, *, timeout: float = DEFAULT_TIMEOUT, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                pool_size: int = 5, max_overflow: int = 10, pool_timeout: float | None = None,
                pool_recycle: float | None = None, transaction_pooler: bool = False) -> Engine:
    """An engine whose every wait is bounded (README, "When the store is slow or down").

    SQLite: a write waits at most ``busy_timeout`` for another writer; a connection that saw a database error
    is discarded. PostgreSQL: a transaction takes at most ``timeout`` (waiting for a pooled connection,
    connecting, each round trip; the server's ``statement_timeout`` and ``lock_timeout`` are set to it too),
    and at most one second more when a connection is being opened at the end of it.

    PostgreSQL pool (README, "Connections"): each process keeps up to ``pool_size`` connections open and opens
    up to ``max_overflow`` more under load (closed again when returned); a transaction waits at most
    ``pool_timeout`` (default: ``timeout``) for a free one. ``pool_recycle`` replaces connections older than that
    many seconds. ``transaction_pooler``: see :func:`_postgres_connect`. SQLite ignores the pool settings (one
    file; SQLAlchemy's own pool of file connections).
    """
    if url.startswith("sqlite"):
        # hide_parameters: statement parameters (hashes, encrypted secrets, digests) never reach a log line or an
        # exception message, even with SQLAlchemy's logging at DEBUG
        engine = create_engine(url, connect_args={"timeout": busy_timeout}, hide_parameters=True)
        database = engine.url.database
        on_connect, on_checkout = _sqlite_hooks(database if database and database != ":memory:" else None,
                                                busy_timeout)
        event.listen(engine, "connect", on_connect)
        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "handle_error", _sqlite_discard_broken)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow,
                           hide_parameters=True,
                           pool_timeout=min(timeout, pool_timeout if pool_timeout is not None else timeout),
                           pool_recycle=-1 if pool_recycle is None else int(pool_recycle))
    if engine.dialect.driver == "psycopg":
        event.listen(engine, "do_connect", _postgres_connect(timeout, transaction_pooler))
    return engine


Admission = Literal["closed", "probe", "open"]


class _Breaker:
    """Stops a store that made one caller wait from making every caller wait in turn.

    Two of them guard each store:

    - *hung*: a failure that took :data:`SLOW_FAILURE` or longer (a frozen server, an unreachable host, a
      statement cut at its deadline) opens it; a refusal (connection refused, a missing file) costs nothing and
      changes nothing. While it is open, calls raise :class:`StoreUnavailable` at once without touching the
      store.
    - *locked* (SQLite): a write that gave up waiting for another process's write lock opens it. While it is
      open, transactions run without waiting for the lock: reads work as usual (WAL), writes fail at once.

    Either stays open for :data:`RETRY_AFTER`; then ONE caller probes (waits as usual) while the others go on
    as if it were open; the probe's success closes it, its failure opens it again. So a hung or locked store
    holds at most one request thread at a time, and the server's threads stay free for everything else.
    """

    def __init__(self, probe_window: float) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0  # time.monotonic(); 0: closed
        self._probe_window = probe_window

    def admit(self) -> Admission:
        if self._open_until == 0.0:
            return "closed"
        with self._lock:
            now = time.monotonic()
            if self._open_until == 0.0:
                return "closed"
            if now < self._open_until:
                return "open"
            self._open_until = now + self._probe_window  # the others stay out while this caller probes
            return "probe"

    def close(self) -> None:
        if self._open_until != 0.0:
            with self._lock:
                self._open_until = 0.0

    def open(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + RETRY_AFTER



class Store:
    """All reads and writes of user data."""

    def __init__(self, url: str, engine: Engine | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT, **pool: Any) -> None:
        """``pool``: the PostgreSQL pool settings of :func:`make_engine` (``pool_size``, ``max_overflow``,
        ``pool_timeout``, ``pool_recycle``, ``transaction_pooler``)."""
        self.url = url
        self.timeout = timeout
        self.engine = engine if engine is not None else make_engine(url, timeout=timeout, busy_timeout=busy_timeout,
                                                                    **pool)
        self._hung = _Breaker(probe_window=timeout + 1.0 + RETRY_AFTER)
        self._locked = _Breaker(probe_window=busy_timeout + RETRY_AFTER)
        self._sqlite = self.engine.dialect.name == "sqlite"

    def close(self) -> None:
        self.engine.dispose()

    # -- plumbing ------------------------------------------------------------------------------------------
    @contextmanager
    def _begin(self, *, timeout: float | None = None, trips: bool = True) -> Iterator[Connection]:
        """One transaction, within ``timeout`` (default: the store's) on PostgreSQL; ``math.inf``: no bound.

        Database errors become :class:`StoreUnavailable` (constraint violations excepted); see
        :class:`_Breaker` for what a hung or locked store does to the calls after it. ``trips=False``: a
        statement the server itself cancelled (lock or statement timeout) does not open the *hung* breaker (an
        audit row that waited for a lock on its own table says nothing about the rest of the store); a server
        that did not answer at all still does, and an open breaker still refuses the transaction at once."""
        hung = self._hung.admit()
        if hung == "open":
            raise StoreUnavailable("the user store is not answering (not asked again for a moment)")
        locked = self._locked.admit() if self._sqlite else "closed"
        outer_deadline, outer_wait = _current.deadline, _current.wait_for_writers
        started = time.monotonic()
        limit = self.timeout if timeout is None else timeout
        _current.deadline = started + limit if outer_deadline is None else min(outer_deadline, started + limit)
        _current.wait_for_writers = locked != "open"
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            self._hung.close()
            raise
        except (OperationalError, DBAPIError) as exc:
            if _sqlite_busy(exc.orig):
                self._locked.open()
            elif (trips or not _cancelled_by_server(exc.orig)) and (
                    hung == "probe" or time.monotonic() - started >= SLOW_FAILURE):
                self._hung.open()
            raise StoreUnavailable(f"the user store is unavailable ({type(exc.orig or exc).__name__})") from exc
        except PoolTimeout as exc:  # every pooled connection is busy for longer than the timeout
            raise StoreUnavailable("the user store is unavailable (no free connection)") from exc
        except BaseException:  # raised by the caller's code: the store itself answered
            self._hung.close()
            raise
        else:
            self._hung.close()
            if locked == "probe":
                self._locked.close()
        finally:
            _current.deadline, _current.wait_for_writers = outer_deadline, outer_wait

    def _run(self, fn: Callable[[Connection], T]) -> T:
        with self._begin() as conn:
            return fn(conn)

    def ping(self, timeout: float) -> None:
        """Run one trivial query that reads the user table (so a missing or unreadable SQLite file counts too),
        within ``timeout``; raises :class:`StoreUnavailable` otherwise. For readiness probes."""
        with self._begin(timeout=timeout) as conn:
            conn.execute(select(literal(1)).select_from(users).limit(1)).all()

    # -- schema --------------------------------------------------------------------------------------------
    def _alembic_config(self, conn: Connection) -> Any:
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        return cfg

    def upgrade(self) -> list[str]:
        """Bring the schema to the newest revision; returns the revisions applied."""
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        with self._begin(timeout=math.inf) as conn:  # a migration may take long: no deadline
            before = MigrationContext.configure(conn).get_current_revision()
            command.upgrade(self._alembic_config(conn), "head")
            after = MigrationContext.configure(conn).get_current_revision()
        return [] if before == after else [r for r in (after,) if r]

    def schema_revision(self) -> tuple[str | None, str]:
        """(current revision in the database, newest revision this package knows)."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with self._begin() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            head = ScriptDirectory.from_config(self._alembic_config(conn)).get_current_head()
        return current, str(head)

    def check_schema(self) -> None:
        current, head = self.schema_revision()
        if current != head:
            raise SchemaOutOfDate(f"the database schema is at {current or 'nothing'} but this version needs {head}; "
                                  "run `mfa-admin db upgrade`")

    # -- users ---------------------------------------------------------------------------------------------
    @staticmethod
    def _user(row: Any) -> UserRecord:
        groups = tuple(g for g in (row.groups or "").split(",") if g)
        return UserRecord(id=row.id, username=row.username, email=row.email, display_name=row.display_name,
                          groups=groups, is_admin=bool(row.is_admin), state=row.state,
                          password_hash=row.password_hash, failed_count=row.failed_count,
                          last_failed_at=row.last_failed_at, locked_until=row.locked_until,
                          consecutive_failures=row.consecutive_failures, created_at=row.created_at,
                          updated_at=row.updated_at, blocked_until=row.blocked_until,
                          blocked_reason=row.blocked_reason, bypass_until=row.bypass_until)

    def create_user(self, username: str, *, now: float, email: str | None = None, display_name: str | None = None,
                    groups: Sequence[str] = (), is_admin: bool = False, state: str = "enabled",
                    password_hash: str | None = None) -> UserRecord:
        values = dict(username=username, email=email, display_name=display_name, groups=",".join(groups),
                      is_admin=is_admin, state=state, password_hash=password_hash, failed_count=0,
                      consecutive_failures=0, created_at=now, updated_at=now)
        try:
            with self._begin() as conn:
                conn.execute(insert(users).values(**values))
                row = conn.execute(select(users).where(users.c.username == username)).one()
        except IntegrityError:
            raise UserExists(username) from None
        return self._user(row)

    def get_user(self, username: str) -> UserRecord | None:
        row = self._run(lambda c: c.execute(select(users).where(users.c.username == username)).first())
        return None if row is None else self._user(row)

    def get_user_by_id(self, user_id: int) -> UserRecord | None:
        row = self._run(lambda c: c.execute(select(users).where(users.c.id == user_id)).first())
        return None if row is None else self._user(row)

    def list_users(self) -> list[UserRecord]:
        rows = self._run(lambda c: c.execute(select(users).order_by(users.c.username)).all())
        return [self._user(r) for r in rows]

    def page_users(self, filters: UserFilter, *, after: str | None = None, limit: int = 100,
                   now: float, before: str | None = None, last: bool = False) -> list[tuple[UserRecord, int]]:
        """One page of users matching ``filters``, in username order, after the username ``after`` (keyset
        pagination: each page costs the same however deep it is), each with its count of confirmed methods
        (read in the same query, for the page's rows only). ``before`` (or ``last``: from the end) reads the page
        that ends just before that username, still returned in username order (a "previous page" link)."""
        method_count = (select(func.count()).select_from(methods)
                        .where(methods.c.user_id == users.c.id, methods.c.confirmed.is_(True))
                        .scalar_subquery())
        backwards = before is not None or last
        order = users.c.username.desc() if backwards else users.c.username
        stmt = select(users, method_count.label("method_count")).order_by(order).limit(max(1, limit))
        if after is not None:
            stmt = stmt.where(users.c.username > after)
        if before is not None:
            stmt = stmt.where(users.c.username < before)
        for condition in self._user_conditions(filters, now):
            stmt = stmt.where(condition)
        rows = self._run(lambda c: c.execute(stmt).all())
        found = [(self._user(r), int(r.method_count)) for r in rows]
        return found[::-1] if backwards else found

    def count_users_matching(self, filters: UserFilter, *, now: float) -> int:
        stmt = select(func.count()).select_from(users)
        for condition in self._user_conditions(filters, now):
            stmt = stmt.where(condition)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    @staticmethod
    def _user_conditions(filters: UserFilter, now: float) -> list[Any]:
        conditions: list[Any] = []
        if filters.search:
            needle = filters.search.lower()
            conditions.append(or_(func.lower(users.c.username).contains(needle, autoescape=True),
                                  func.lower(func.coalesce(users.c.email, "")).contains(needle, autoescape=True),
                                  func.lower(func.coalesce(users.c.display_name, "")).contains(
                                      needle, autoescape=True)))
        if filters.state:
            conditions.append(users.c.state == filters.state)
        if filters.group:
            # groups are stored comma-separated: match one whole name, never a part of one (and a "name" with a
            # comma in it is no group at all)
            if "," in filters.group:
                conditions.append(literal(False))
            wrapped = literal(",") + func.lower(users.c.groups) + literal(",")
            conditions.append(wrapped.contains(f",{filters.group.lower()},", autoescape=True))
        if filters.blocked is not None:
            is_blocked = and_(users.c.blocked_until.is_not(None), users.c.blocked_until > now)
            conditions.append(is_blocked if filters.blocked else not_(is_blocked))
        if filters.locked is not None:
            is_locked = and_(users.c.locked_until.is_not(None), users.c.locked_until > now)
            conditions.append(is_locked if filters.locked else not_(is_locked))
        if filters.method:
            conditions.append(exists().where(methods.c.user_id == users.c.id, methods.c.confirmed.is_(True),
                                             methods.c.kind == filters.method))
        if filters.admin is not None:
            conditions.append(users.c.is_admin.is_(filters.admin))
        return conditions

    def count_users(self) -> int:
        return int(self._run(lambda c: c.execute(select(func.count()).select_from(users)).scalar_one()))

    def update_user(self, user_id: int, *, now: float, **values: Any) -> bool:
        allowed = {"email", "display_name", "groups", "is_admin", "state", "password_hash"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        if "groups" in values:
            values["groups"] = ",".join(values["groups"])
        stmt = update(users).where(users.c.id == user_id).values(updated_at=now, **values)
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def delete_user(self, user_id: int) -> bool:
        def run(c: Connection) -> int:
            c.execute(delete(backup_codes).where(backup_codes.c.user_id == user_id))
            c.execute(delete(challenges).where(challenges.c.user_id == user_id))
            c.execute(delete(calls).where(calls.c.user_id == user_id))
            c.execute(delete(methods).where(methods.c.user_id == user_id))
            c.execute(delete(app_passwords).where(app_passwords.c.user_id == user_id))
            c.execute(delete(devices).where(devices.c.user_id == user_id))
            c.execute(delete(phone_sends).where(phone_sends.c.user_id == user_id))
            c.execute(delete(fraud_reports).where(fraud_reports.c.user_id == user_id))
            return int(c.execute(delete(users).where(users.c.id == user_id)).rowcount)
        return self._run(run) == 1

    def set_block(self, user_id: int, *, now: float, until: float | None, reason: str | None) -> bool:
        stmt = (update(users).where(users.c.id == user_id)
                .values(blocked_until=until, blocked_reason=reason, updated_at=now))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def set_bypass(self, user_id: int, *, now: float, until: float | None) -> bool:
        stmt = update(users).where(users.c.id == user_id).values(bypass_until=until, updated_at=now)
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def consume_bypass(self, user_id: int, *, now: float) -> bool:
        """Use up a one-time bypass, if one is pending and unexpired: one conditional UPDATE, so it works once."""
        stmt = (update(users).where(users.c.id == user_id, users.c.bypass_until > now)
                .values(bypass_until=None, updated_at=now))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    # -- app passwords -----------------------------------------------------------------------------------------
    @staticmethod
    def _app_password(row: Any) -> AppPasswordRecord:
        return AppPasswordRecord(id=row.id, user_id=row.user_id, label=row.label, lookup=row.lookup,
                                 password_hash=row.password_hash, created_at=row.created_at,
                                 last_used_at=row.last_used_at, last_used_ip=row.last_used_ip)

    def add_app_password(self, user_id: int, label: str, lookup: str, password_hash: str, *, now: float,
                         limit: int) -> int:
        """Store a new app password unless the user has ``limit`` already or the label is taken."""
        count = (select(func.count()).select_from(app_passwords).where(app_passwords.c.user_id == user_id)
                 .scalar_subquery())
        row = select(literal(user_id), literal(label), literal(lookup), literal(password_hash), literal(now)).where(
            count < limit)
        # The count and the insert are one statement, so concurrent creates cannot pass the limit together
        # (on PostgreSQL the user's row is locked first, as READ COMMITTED would let two counts see the same).
        stmt = (insert(app_passwords)
                .from_select(["user_id", "label", "lookup", "password_hash", "created_at"], row)
                .returning(app_passwords.c.id))

        def run(c: Connection) -> int:
            c.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
            new_id = c.execute(stmt).scalar_one_or_none()
            if new_id is None:
                raise AppPasswordLimit(f"the user already has {limit} app passwords (the limit is {limit})")
            return int(new_id)

        try:
            return self._run(run)
        except IntegrityError:
            raise LabelTaken(label) from None

    def list_app_passwords(self, user_id: int) -> list[AppPasswordRecord]:
        stmt = select(app_passwords).where(app_passwords.c.user_id == user_id).order_by(app_passwords.c.id)
        return [self._app_password(r) for r in self._run(lambda c: c.execute(stmt).all())]

    def find_app_passwords(self, user_id: int, lookup: str) -> list[AppPasswordRecord]:
        stmt = select(app_passwords).where(app_passwords.c.user_id == user_id, app_passwords.c.lookup == lookup)
        return [self._app_password(r) for r in self._run(lambda c: c.execute(stmt).all())]

    def touch_app_password(self, app_password_id: int, *, now: float, client_ip: str) -> None:
        stmt = (update(app_passwords).where(app_passwords.c.id == app_password_id)
                .values(last_used_at=now, last_used_ip=client_ip[:64]))
        self._run(lambda c: c.execute(stmt))

    def delete_app_passwords(self, user_id: int, label: str | None = None) -> list[int]:
        """Delete one app password by label, or all of the user's; returns the ids deleted."""
        def run(c: Connection) -> list[int]:
            where = [app_passwords.c.user_id == user_id]
            if label is not None:
                where.append(app_passwords.c.label == label)
            ids = [int(r[0]) for r in c.execute(select(app_passwords.c.id).where(*where)).all()]
            if ids:
                c.execute(delete(app_passwords).where(app_passwords.c.id.in_(ids)))
            return ids
        return self._run(run)

    # -- failed attempts (atomic) ----------------------------------------------------------------------------
    # An attempt is reserved (counted as a failure) BEFORE its secret is checked, in one conditional UPDATE that
    # counts it only while the account (or client address) is not locked and says whether it may be checked.
    # However many requests race, across threads, processes and servers, at most ``max_failures`` attempts are
    # checked in a window. A success then gives its reservation back (:meth:`release_attempt`) or resets the
    # counters (:meth:`reset_failures`); a failure keeps it.
    def reserve_attempt(self, user_id: int, *, now: float, max_failures: int, reset_after: float,
                        lock_for: float) -> Reservation:
        """Count one attempt on the user's failure counters unless the account is locked (one UPDATE).

        The windowed counter starts again after ``reset_after`` without failures and locks the account for
        ``lock_for`` when it reaches ``max_failures``; the consecutive counter only resets on success and locks
        the account for good at :data:`HARD_FAILURE_LIMIT`. The attempt that reaches a limit is still checked
        (``started_lock``); any attempt made while the account is locked is refused and counts nothing.
        """
        stale = or_(users.c.last_failed_at.is_(None), users.c.last_failed_at < now - reset_after)
        new_count = case((stale, 1), else_=users.c.failed_count + 1)
        new_consecutive = users.c.consecutive_failures + 1
        locked = case(
            (new_consecutive >= HARD_FAILURE_LIMIT, LOCKED_FOR_GOOD),
            (new_count >= max_failures, now + lock_for),
            else_=users.c.locked_until,
        )
        stmt = (update(users)
                .where(users.c.id == user_id, or_(users.c.locked_until.is_(None), users.c.locked_until <= now))
                .values(failed_count=new_count, consecutive_failures=new_consecutive, last_failed_at=now,
                        locked_until=locked)
                .returning(users.c.failed_count, users.c.locked_until))

        def run(c: Connection) -> Reservation:
            row = c.execute(stmt).first()
            if row is not None:
                return Reservation(True, int(row[0]), row[1], row[1] is not None and row[1] > now)
            row = c.execute(select(users.c.failed_count, users.c.locked_until)  # locked, or no such user
                            .where(users.c.id == user_id)).first()
            if row is None:
                return Reservation(False, 0, None, False)
            return Reservation(False, int(row[0]), row[1], False)

        return self._run(run)

    def release_attempt(self, user_id: int, reservation: Reservation) -> None:
        """Give back a reservation whose attempt succeeded without ending the sign-in (a correct password before
        the second factor): the counters go down by one, and a lock that this very attempt started is lifted."""
        if not reservation.allowed:
            return
        lift = (users.c.locked_until == reservation.locked_until) if reservation.started_lock else literal(False)
        stmt = (update(users).where(users.c.id == user_id)
                .values(failed_count=case((users.c.failed_count > 0, users.c.failed_count - 1), else_=0),
                        consecutive_failures=case((users.c.consecutive_failures > 0,
                                                   users.c.consecutive_failures - 1), else_=0),
                        locked_until=case((lift, None), else_=users.c.locked_until)))
        self._run(lambda c: c.execute(stmt))

    def record_failure(self, user_id: int, *, now: float, max_failures: int, reset_after: float,
                       lock_for: float) -> tuple[int, float | None]:
        """Count one failed attempt (a reservation that is kept). Returns (failures in the window, locked until);
        an attempt made while the account is locked is not counted."""
        r = self.reserve_attempt(user_id, now=now, max_failures=max_failures, reset_after=reset_after,
                                 lock_for=lock_for)
        return r.count, r.locked_until

    def reserve_client_attempt(self, client_ip: str, *, now: float, max_failures: int, reset_after: float,
                               lock_for: float) -> Reservation:
        """Count one attempt from a client address (insert or update in one statement) unless the address is
        locked; lock the address at ``max_failures`` in a window. Attempts while it is locked are refused."""
        ip = client_ip[:64] or "unknown"
        table = client_failures
        from sqlalchemy.dialects import postgresql, sqlite

        upsert: Any = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        stale = table.c.last_failed_at < now - reset_after
        new_count = case((stale, 1), else_=table.c.failed_count + 1)
        stmt = upsert(table).values(client_ip=ip, failed_count=1, last_failed_at=now,
                                    locked_until=now + lock_for if max_failures <= 1 else None).on_conflict_do_update(
            index_elements=[table.c.client_ip],
            set_={"failed_count": new_count, "last_failed_at": now,
                  "locked_until": case((new_count >= max_failures, now + lock_for), else_=table.c.locked_until)},
            where=or_(table.c.locked_until.is_(None), table.c.locked_until <= now),
        ).returning(table.c.failed_count, table.c.locked_until)

        def run(c: Connection) -> Reservation:
            row = c.execute(stmt).first()
            if row is not None:
                return Reservation(True, int(row[0]), row[1], row[1] is not None and row[1] > now)
            row = c.execute(select(table.c.failed_count, table.c.locked_until)
                            .where(table.c.client_ip == ip)).first()
            return Reservation(False, 0, None, False) if row is None else Reservation(False, int(row[0]), row[1],
                                                                                      False)

        return self._run(run)

    def release_client_attempt(self, client_ip: str, reservation: Reservation) -> None:
        """Give back a client address's reservation whose attempt succeeded (see :meth:`release_attempt`)."""
        if not reservation.allowed:
            return
        ip = client_ip[:64] or "unknown"
        table = client_failures
        lift = (table.c.locked_until == reservation.locked_until) if reservation.started_lock else literal(False)
        stmt = (update(table).where(table.c.client_ip == ip)
                .values(failed_count=case((table.c.failed_count > 0, table.c.failed_count - 1), else_=0),
                        locked_until=case((lift, None), else_=table.c.locked_until)))
        self._run(lambda c: c.execute(stmt))

    def record_client_failure(self, client_ip: str, *, now: float, max_failures: int, reset_after: float,
                              lock_for: float) -> tuple[int, float | None]:
        """Count one failed attempt from a client address (a reservation that is kept)."""
        r = self.reserve_client_attempt(client_ip, now=now, max_failures=max_failures, reset_after=reset_after,
                                        lock_for=lock_for)
        return r.count, r.locked_until

    def client_locked_until(self, client_ip: str, now: float) -> float | None:
        ip = client_ip[:64] or "unknown"
        stmt = select(client_failures.c.locked_until).where(client_failures.c.client_ip == ip)
        value = self._run(lambda c: c.execute(stmt).scalar_one_or_none())
        return float(value) if value is not None and value > now else None

    def reset_failures(self, user_id: int) -> None:
        """Clear every failure counter of the user and lift their lock (an administrator's unlock)."""
        stmt = (update(users).where(users.c.id == user_id)
                .where(or_(users.c.failed_count != 0, users.c.consecutive_failures != 0,
                           users.c.locked_until.is_not(None)))
                .values(failed_count=0, consecutive_failures=0, last_failed_at=None, locked_until=None))
        pairs = delete(user_address_failures).where(user_address_failures.c.user_id == user_id)

        def run(c: Connection) -> None:
            c.execute(stmt)
            c.execute(pairs)

        self._run(run)

    # Regulation: how many of a user's failures came from each address. Each change is one statement (an upsert,
    # an update, or a DELETE ... RETURNING that hands the count to exactly one success), so concurrent successes
    # and failures never take off more than was put on.
    def reserve_address_failure(self, user_id: int, client_ip: str, *, now: float, reset_after: float) -> None:
        """Count one reserved attempt of ``user_id`` from ``client_ip`` (after the user's reservation was allowed)."""
        from sqlalchemy.dialects import postgresql, sqlite

        table = user_address_failures
        upsert: Any = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        stale = table.c.last_failed_at < now - reset_after
        stmt = upsert(table).values(user_id=user_id, client_ip=client_ip[:64], failed_count=1,
                                    last_failed_at=now).on_conflict_do_update(
            index_elements=[table.c.user_id, table.c.client_ip],
            set_={"failed_count": case((stale, 1), else_=table.c.failed_count + 1), "last_failed_at": now})
        self._run(lambda c: c.execute(stmt))

    def release_address_failure(self, user_id: int, client_ip: str) -> None:
        """Give back one reserved attempt of ``user_id`` from ``client_ip`` (see :meth:`release_attempt`)."""
        table = user_address_failures
        stmt = (update(table).where(table.c.user_id == user_id, table.c.client_ip == client_ip[:64],
                                    table.c.failed_count > 0)
                .values(failed_count=table.c.failed_count - 1))
        self._run(lambda c: c.execute(stmt))

    def clear_address_failures(self, user_id: int, client_ip: str, *, now: float, reset_after: float,
                               client_reset_after: float) -> int:
        """A sign-in of ``user_id`` from ``client_ip`` succeeded: take that address's failures on this user off
        the user's counter and off the address's counter (the failures from other addresses stay), and end the
        user's run of consecutive failures. Returns how many failures were taken off."""
        table = user_address_failures
        ip = client_ip[:64]
        taken = (delete(table).where(table.c.user_id == user_id, table.c.client_ip == ip)
                 .returning(table.c.failed_count, table.c.last_failed_at))

        def run(c: Connection) -> int:
            row = c.execute(taken).first()
            n = int(row[0]) if row is not None and row[1] >= now - reset_after else 0
            ending = update(users).where(users.c.id == user_id)
            if n == 0:
                ending = ending.where(users.c.consecutive_failures != 0)
            c.execute(ending.values(failed_count=case((users.c.failed_count > n, users.c.failed_count - n), else_=0),
                              consecutive_failures=0))
            if row is not None and int(row[0]) > 0 and row[1] >= now - client_reset_after:
                cf = client_failures
                m = int(row[0])
                c.execute(update(cf).where(cf.c.client_ip == (ip or "unknown"))
                          .values(failed_count=case((cf.c.failed_count > m, cf.c.failed_count - m), else_=0)))
            return n

        return self._run(run)

    def lift_address_ban(self, client_ip: str) -> bool:
        """Forget a client address's failures and lift its ban; False when it had none."""
        stmt = delete(client_failures).where(client_failures.c.client_ip == (client_ip[:64] or "unknown"))
        return bool(self._run(lambda c: c.execute(stmt).rowcount))

    def page_bans(self, *, now: float, after: tuple[str, str] | None = None, limit: int = 100) -> list[BanRecord]:
        """The bans in force, accounts first then addresses, each by name (keyset: ``after`` is the (kind,
        subject) of the last row of the previous page)."""
        bans: list[BanRecord] = []
        if after is None or after[0] == "user":
            q = (select(users.c.username, users.c.failed_count, users.c.consecutive_failures, users.c.locked_until)
                 .where(users.c.locked_until.is_not(None), users.c.locked_until > now)
                 .order_by(users.c.username).limit(limit))
            if after is not None:
                q = q.where(users.c.username > after[1])
            rows = self._run(lambda c: c.execute(q).all())
            bans.extend(BanRecord("user", r[0], max(int(r[1]), int(r[2])), float(r[3])) for r in rows)
        if len(bans) < limit:
            cf = client_failures
            q2 = (select(cf.c.client_ip, cf.c.failed_count, cf.c.locked_until)
                  .where(cf.c.locked_until.is_not(None), cf.c.locked_until > now)
                  .order_by(cf.c.client_ip).limit(limit - len(bans)))
            if after is not None and after[0] == "address":
                q2 = q2.where(cf.c.client_ip > after[1])
            rows2 = self._run(lambda c: c.execute(q2).all())
            bans.extend(BanRecord("address", r[0], int(r[1]), float(r[2])) for r in rows2)
        return bans

    # -- methods ---------------------------------------------------------------------------------------------
    @staticmethod
    def _method(row: Any) -> MethodRecord:
        return MethodRecord(id=row.id, user_id=row.user_id, kind=row.kind, label=row.label, secret=row.secret,
                            confirmed=bool(row.confirmed), last_step=row.last_step, created_at=row.created_at,
                            last_used_at=row.last_used_at, is_default=bool(row.is_default), detail=row.detail)

    def add_method(self, user_id: int, kind: str, label: str, secret: bytes | None, *, now: float,
                   confirmed: bool = False, detail: bytes | None = None) -> int:
        stmt = insert(methods).values(user_id=user_id, kind=kind, label=label, secret=secret, confirmed=confirmed,
                                      created_at=now, detail=detail).returning(methods.c.id)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    def set_default_method(self, user_id: int, method_id: int) -> bool:
        """Make one of the user's confirmed methods the default (and no other), in one transaction."""
        def run(c: Connection) -> bool:
            found = c.execute(select(methods.c.id).where(methods.c.id == method_id, methods.c.user_id == user_id,
                                                          methods.c.confirmed.is_(True))).first()
            if found is None:
                return False
            c.execute(update(methods).where(methods.c.user_id == user_id, methods.c.id != method_id,
                                            methods.c.is_default.is_(True)).values(is_default=False))
            c.execute(update(methods).where(methods.c.id == method_id).values(is_default=True))
            return True
        return self._run(run)

    def rename_method(self, user_id: int, method_id: int, label: str) -> bool:
        stmt = (update(methods).where(methods.c.id == method_id, methods.c.user_id == user_id)
                .values(label=label[:100]))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def delete_method(self, user_id: int, method_id: int, *, keep_one: bool = False,
                      counted_kinds: Collection[str] | None = None) -> bool:
        """Delete one of the user's methods. ``keep_one``: refuse to delete the last confirmed method (of one of
        ``counted_kinds``, when given: backup codes alone cannot stand in for a method).

        Two removals at once cannot both pass the check: the transaction first writes the user's row (a row lock
        on PostgreSQL, the database's write lock on SQLite, where a SELECT ... FOR UPDATE would lock nothing), and
        the DELETE itself carries the condition."""
        where = [methods.c.id == method_id, methods.c.user_id == user_id]
        if keep_one:
            others = [methods.c.user_id == user_id, methods.c.confirmed.is_(True), methods.c.id != method_id]
            if counted_kinds is not None:
                others.append(methods.c.kind.in_(sorted(counted_kinds)))
            where.append(select(methods.c.id).where(*others).exists())

        def run(c: Connection) -> bool:
            c.execute(update(users).where(users.c.id == user_id).values(updated_at=users.c.updated_at))
            target = c.execute(select(methods.c.id).where(*where)).first()
            if target is None:
                return False
            c.execute(delete(backup_codes).where(backup_codes.c.method_id == method_id))
            c.execute(delete(challenges).where(challenges.c.method_id == method_id))
            c.execute(delete(calls).where(calls.c.method_id == method_id))
            c.execute(delete(webauthn_challenges).where(webauthn_challenges.c.method_id == method_id))
            c.execute(delete(webauthn_credentials).where(webauthn_credentials.c.method_id == method_id))
            return bool(c.execute(delete(methods).where(*where)).rowcount == 1)
        return self._run(run)

    def count_methods(self) -> dict[int, int]:
        """Confirmed methods per user id, in one query (for listings)."""
        stmt = (select(methods.c.user_id, func.count()).where(methods.c.confirmed.is_(True))
                .group_by(methods.c.user_id))
        return {int(r[0]): int(r[1]) for r in self._run(lambda c: c.execute(stmt).all())}

    def get_method(self, method_id: int) -> MethodRecord | None:
        row = self._run(lambda c: c.execute(select(methods).where(methods.c.id == method_id)).first())
        return None if row is None else self._method(row)

    def list_methods(self, user_id: int, *, confirmed_only: bool = True) -> list[MethodRecord]:
        stmt = select(methods).where(methods.c.user_id == user_id).order_by(methods.c.id)
        if confirmed_only:
            stmt = stmt.where(methods.c.confirmed.is_(True))
        return [self._method(r) for r in self._run(lambda c: c.execute(stmt).all())]

    def confirm_method(self, method_id: int, user_id: int, *, step: int | None, now: float,
                       only_if_first: bool = False) -> bool:
        """Mark an enrollment as confirmed (and consume the confirming step), once.

        ``only_if_first``: confirm only while the user has no other confirmed method (enrollment during a sign-in).
        The user's row is locked first, so two sign-ins confirming at once cannot both add a first method.
        """
        conditions = [methods.c.id == method_id, methods.c.user_id == user_id, methods.c.confirmed.is_(False)]
        if only_if_first:
            others = select(methods.c.id).where(methods.c.user_id == user_id, methods.c.confirmed.is_(True))
            conditions.append(~others.exists())
        stmt = update(methods).where(*conditions).values(confirmed=True, last_step=step, last_used_at=now)

        def run(c: Connection) -> bool:
            if only_if_first:
                c.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
            return bool(c.execute(stmt).rowcount == 1)

        return self._run(run)

    def consume_step(self, method_id: int, step: int, *, now: float) -> bool:
        """Accept TOTP time step ``step`` for a method at most once, in one conditional UPDATE.

        Only a step newer than the last accepted one is taken, so a code (and every older code) can be used
        once, by one request, however many run at the same time on however many servers.
        """
        stmt = (update(methods)
                .where(methods.c.id == method_id, methods.c.confirmed.is_(True),
                       or_(methods.c.last_step.is_(None), methods.c.last_step < step))
                .values(last_step=step, last_used_at=now))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def delete_methods(self, user_id: int, *, unconfirmed_only: bool = False) -> int:
        where = [methods.c.user_id == user_id]
        if unconfirmed_only:
            where.append(methods.c.confirmed.is_(False))
        ids = select(methods.c.id).where(*where)

        def run(c: Connection) -> int:
            c.execute(delete(backup_codes).where(backup_codes.c.method_id.in_(ids)))
            c.execute(delete(challenges).where(challenges.c.method_id.in_(ids)))
            c.execute(delete(calls).where(calls.c.method_id.in_(ids)))
            c.execute(delete(webauthn_challenges).where(webauthn_challenges.c.method_id.in_(ids)))
            c.execute(delete(webauthn_credentials).where(webauthn_credentials.c.method_id.in_(ids)))
            return int(c.execute(delete(methods).where(*where)).rowcount)
        return self._run(run)

    # -- backup codes ------------------------------------------------------------------------------------------
    def replace_backup_codes(self, user_id: int, method_id: int, codes: Sequence[tuple[str, str]], *,
                             now: float) -> None:
        """Store a new set of backup codes (lookup, argon2 hash) for ``method_id``; every older code of the user
        stops working in the same transaction."""
        def run(c: Connection) -> None:
            c.execute(delete(backup_codes).where(backup_codes.c.user_id == user_id))
            if codes:
                c.execute(insert(backup_codes), [{"user_id": user_id, "method_id": method_id, "lookup": lookup,
                                                  "code_hash": code_hash, "created_at": now}
                                                 for lookup, code_hash in codes])
        self._run(run)

    def find_backup_codes(self, user_id: int, lookup: str) -> list[tuple[int, str]]:
        """Unused codes of the user with this lookup digest: (id, hash)."""
        stmt = select(backup_codes.c.id, backup_codes.c.code_hash).where(
            backup_codes.c.user_id == user_id, backup_codes.c.lookup == lookup, backup_codes.c.used_at.is_(None))
        return [(int(r[0]), str(r[1])) for r in self._run(lambda c: c.execute(stmt).all())]

    def use_backup_code(self, code_id: int, *, now: float) -> bool:
        """Use a backup code up: one conditional UPDATE, so it works once however many requests race."""
        stmt = (update(backup_codes).where(backup_codes.c.id == code_id, backup_codes.c.used_at.is_(None))
                .values(used_at=now))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def count_backup_codes(self, user_id: int) -> int:
        stmt = select(func.count()).select_from(backup_codes).where(backup_codes.c.user_id == user_id,
                                                                    backup_codes.c.used_at.is_(None))
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    # -- one-time code challenges (email, text message) --------------------------------------------------------
    def add_challenge(self, user_id: int, method_id: int, sign_in_id: str, code_hash: str, *, now: float,
                      expires_at: float) -> int:
        stmt = insert(challenges).values(user_id=user_id, method_id=method_id, sign_in_id=sign_in_id[:64],
                                         code_hash=code_hash, created_at=now,
                                         expires_at=expires_at).returning(challenges.c.id)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    def live_challenges(self, method_id: int, sign_in_id: str, *, now: float) -> list[tuple[int, str, float]]:
        """Unused, unexpired challenges of one sign-in attempt for one method: (id, code hash, created at)."""
        stmt = (select(challenges.c.id, challenges.c.code_hash, challenges.c.created_at)
                .where(challenges.c.method_id == method_id, challenges.c.sign_in_id == sign_in_id[:64],
                       challenges.c.used_at.is_(None), challenges.c.expires_at > now)
                .order_by(challenges.c.id.desc()))
        return [(int(r[0]), str(r[1]), float(r[2])) for r in self._run(lambda c: c.execute(stmt).all())]

    def use_challenge(self, challenge_id: int, *, now: float) -> bool:
        """Use a one-time code up (and every other code of the same attempt): once, atomically."""
        def run(c: Connection) -> bool:
            row = c.execute(select(challenges.c.method_id, challenges.c.sign_in_id)
                            .where(challenges.c.id == challenge_id)).first()
            if row is None:
                return False
            used = c.execute(update(challenges).where(challenges.c.id == challenge_id, challenges.c.used_at.is_(None),
                                                      challenges.c.expires_at > now).values(used_at=now)).rowcount
            if used == 1:
                c.execute(update(challenges).where(challenges.c.method_id == row[0], challenges.c.sign_in_id == row[1],
                                                   challenges.c.used_at.is_(None)).values(used_at=now))
            return bool(used == 1)
        return self._run(run)

    def count_challenges(self, *, user_id: int | None = None, method_id: int | None = None, since: float) -> int:
        """Codes sent since ``since``, per user or per method (destination): for the resend limits."""
        where = [challenges.c.created_at >= since]
        if user_id is not None:
            where.append(challenges.c.user_id == user_id)
        if method_id is not None:
            where.append(challenges.c.method_id == method_id)
        stmt = select(func.count()).select_from(challenges).where(*where)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    # -- phone calls (the voice method) ----------------------------------------------------------------------------
    # A call's status moves once from "pending" to its answer, and an approval is used once, each in one conditional
    # UPDATE: a replayed callback, a second poll or two servers at once change nothing after the first.
    @staticmethod
    def _call(row: Any) -> CallRecord:
        return CallRecord(id=row.id, user_id=row.user_id, method_id=row.method_id, sign_in_id=row.sign_in_id,
                          status=row.status, created_at=row.created_at, expires_at=row.expires_at,
                          answered_at=row.answered_at)

    def add_call(self, user_id: int, method_id: int, sign_in_id: str, token_digest: str, *, now: float,
                 expires_at: float) -> int:
        stmt = insert(calls).values(user_id=user_id, method_id=method_id, sign_in_id=sign_in_id[:64],
                                    token_digest=token_digest, status="pending", created_at=now,
                                    expires_at=expires_at).returning(calls.c.id)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    def call_of_attempt(self, method_id: int, sign_in_id: str) -> CallRecord | None:
        """The newest call placed for one attempt with one method, or None."""
        stmt = (select(calls).where(calls.c.method_id == method_id, calls.c.sign_in_id == sign_in_id[:64])
                .order_by(calls.c.id.desc()).limit(1))
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._call(row)

    def call_by_token(self, token_digest: str) -> CallRecord | None:
        stmt = select(calls).where(calls.c.token_digest == token_digest)
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._call(row)

    def settle_call(self, call_id: int, status: str, *, now: float) -> bool:
        """Move a pending, unexpired call to ``status`` (approved | fraud | failed): True for the one caller that
        did it."""
        if status not in ("approved", "fraud", "failed"):
            raise ValueError(f"not a call answer: {status!r}")
        stmt = (update(calls).where(calls.c.id == call_id, calls.c.status == "pending", calls.c.expires_at > now)
                .values(status=status, answered_at=now))
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    def use_call(self, call_id: int) -> bool:
        """Use an approved call up (approved -> used): True once."""
        stmt = update(calls).where(calls.c.id == call_id, calls.c.status == "approved").values(status="used")
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    # -- passkeys and security keys (the webauthn method) ---------------------------------------------------------
    # A ceremony's challenge lives only here. Its status moves pending -> answered (the browser's response is kept)
    # -> used (checked), each once in one conditional UPDATE, and only before it expires: a replayed response, two
    # checks at once or two servers accept at most once. A credential's sign count only grows, also conditionally.
    @staticmethod
    def _webauthn_credential(row: Any) -> WebAuthnCredentialRecord:
        return WebAuthnCredentialRecord(
            id=row.id, user_id=row.user_id, method_id=row.method_id, credential_id=row.credential_id,
            public_key=bytes(row.public_key), sign_count=int(row.sign_count),
            transports=tuple(t for t in row.transports.split(",") if t), aaguid=row.aaguid, name=row.name,
            created_at=row.created_at, last_used_at=row.last_used_at)

    @staticmethod
    def _webauthn_challenge(row: Any) -> WebAuthnChallengeRecord:
        return WebAuthnChallengeRecord(
            id=row.id, user_id=row.user_id, method_id=row.method_id, sign_in_id=row.sign_in_id, purpose=row.purpose,
            challenge=row.challenge, token=row.token, status=row.status, answer=row.answer,
            created_at=row.created_at, expires_at=row.expires_at)

    def add_webauthn_credential(self, user_id: int, method_id: int, credential_id: str, public_key: bytes, *,
                                sign_count: int, transports: Sequence[str], aaguid: str, name: str,
                                now: float) -> int | None:
        """Store a verified credential for a method; None when that credential id is registered already (to
        anyone: an authenticator's id is never shared)."""
        stmt = insert(webauthn_credentials).values(
            user_id=user_id, method_id=method_id, credential_id=credential_id, public_key=public_key,
            sign_count=sign_count, transports=",".join(transports)[:200], aaguid=aaguid, name=name[:100],
            created_at=now).returning(webauthn_credentials.c.id)
        try:
            return int(self._run(lambda c: c.execute(stmt).scalar_one()))
        except IntegrityError:
            return None

    def webauthn_credential_of_method(self, method_id: int) -> WebAuthnCredentialRecord | None:
        stmt = select(webauthn_credentials).where(webauthn_credentials.c.method_id == method_id)
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._webauthn_credential(row)

    def webauthn_credentials_of_user(self, user_id: int) -> list[WebAuthnCredentialRecord]:
        stmt = (select(webauthn_credentials).where(webauthn_credentials.c.user_id == user_id)
                .order_by(webauthn_credentials.c.id))
        return [self._webauthn_credential(r) for r in self._run(lambda c: c.execute(stmt).all())]

    def advance_webauthn_sign_count(self, credential_row_id: int, old: int, new: int, *, now: float) -> bool:
        """Record a use of a credential: the sign count moves from ``old`` to ``new`` only if it still is ``old``
        (True once; two uses checked at once cannot both pass)."""
        stmt = (update(webauthn_credentials)
                .where(webauthn_credentials.c.id == credential_row_id, webauthn_credentials.c.sign_count == old)
                .values(sign_count=new, last_used_at=now))
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    def add_webauthn_challenge(self, user_id: int, method_id: int, sign_in_id: str, purpose: str, challenge: str,
                               token: str, *, now: float, expires_at: float) -> int:
        if purpose not in ("register", "authenticate"):
            raise ValueError(f"not a ceremony: {purpose!r}")
        stmt = insert(webauthn_challenges).values(
            user_id=user_id, method_id=method_id, sign_in_id=sign_in_id[:64], purpose=purpose, challenge=challenge,
            token=token, status="pending", created_at=now, expires_at=expires_at).returning(webauthn_challenges.c.id)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    def webauthn_challenge_of_attempt(self, method_id: int, sign_in_id: str) -> WebAuthnChallengeRecord | None:
        """The newest ceremony of one attempt with one method, or None."""
        t = webauthn_challenges
        stmt = (select(t).where(t.c.method_id == method_id, t.c.sign_in_id == sign_in_id[:64])
                .order_by(t.c.id.desc()).limit(1))
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._webauthn_challenge(row)

    def webauthn_challenge_by_token(self, token: str) -> WebAuthnChallengeRecord | None:
        stmt = select(webauthn_challenges).where(webauthn_challenges.c.token == token[:64])
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._webauthn_challenge(row)

    def answer_webauthn_challenge(self, challenge_id: int, answer: str, *, now: float) -> bool:
        """Keep the browser's response on a pending, unexpired ceremony (pending -> answered): True once."""
        t = webauthn_challenges
        stmt = (update(t).where(t.c.id == challenge_id, t.c.status == "pending", t.c.expires_at > now)
                .values(status="answered", answer=answer))
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    def use_webauthn_challenge(self, challenge_id: int, *, now: float) -> bool:
        """Take an answered, unexpired ceremony for checking (answered -> used): True once."""
        t = webauthn_challenges
        stmt = (update(t).where(t.c.id == challenge_id, t.c.status == "answered", t.c.expires_at > now)
                .values(status="used"))
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    # -- passwordless sign-in ceremonies (the webauthn method, migration 0013) -----------------------------------
    # A ceremony asked for on the sign-in page before anyone is known, bound to the browser's pre-sign-in cookie
    # (its SHA-256): one pending row per browser; it is used once, in one conditional UPDATE, and only before it
    # expires, so a replayed or raced assertion, or one made in another browser, is taken at most once (or never).
    def webauthn_credential_by_id(self, credential_id: str) -> WebAuthnCredentialRecord | None:
        """The credential with this id (base64url), whoever owns it, or None."""
        stmt = select(webauthn_credentials).where(webauthn_credentials.c.credential_id == credential_id[:1400])
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._webauthn_credential(row)

    def add_webauthn_login(self, binding: str, challenge: str, *, now: float, expires_at: float) -> int:
        """A new passwordless ceremony for the browser ``binding``; the browser's earlier pending one is dropped."""
        t = webauthn_logins

        def run(c: Connection) -> int:
            c.execute(delete(t).where(t.c.binding == binding, t.c.status == "pending"))
            return int(c.execute(insert(t).values(binding=binding, challenge=challenge, status="pending",
                                                  created_at=now, expires_at=expires_at).returning(t.c.id))
                       .scalar_one())
        return int(self._run(run))

    def use_webauthn_login(self, binding: str, challenge: str, *, now: float) -> float | None:
        """Take the browser's pending, unexpired ceremony with this challenge (pending -> used): its creation time
        once, None otherwise (another browser's, used, expired, unknown)."""
        t = webauthn_logins
        where = (t.c.binding == binding, t.c.challenge == challenge[:128], t.c.status == "pending",
                 t.c.expires_at > now)

        def run(c: Connection) -> float | None:
            row = c.execute(select(t.c.id, t.c.created_at).where(*where)).first()
            if row is None:
                return None
            taken = c.execute(update(t).where(t.c.id == row.id, *where).values(status="used")).rowcount
            return float(row.created_at) if taken == 1 else None
        return self._run(run)

    # -- OATH hardware tokens -----------------------------------------------------------------------------------
    # The inventory of hardware tokens. The one-time codes are checked by mfa_middleware.factors.oath.otp; here a
    # matched counter (HOTP) or time step (TOTP) is consumed in one conditional UPDATE, so a code works once however
    # many requests carry it at the same time on however many servers.
    @staticmethod
    def _oath_token(row: Any) -> OathTokenRecord:
        return OathTokenRecord(id=row.id, serial=row.serial, user_id=row.user_id, username=row.username,
                               kind=row.kind, secret=bytes(row.secret), digits=row.digits, period=row.period,
                               counter=row.counter, last_step=row.last_step, manufacturer=row.manufacturer,
                               model=row.model, imported_at=row.imported_at, last_used_at=row.last_used_at,
                               method_id=row.method_id)

    @staticmethod
    def _oath_select() -> Any:
        return (select(oath_tokens, users.c.username)
                .select_from(oath_tokens.outerjoin(users, oath_tokens.c.user_id == users.c.id)))

    def add_oath_token(self, serial: str, kind: OathKind, secret: bytes, *, digits: int, now: float,
                       period: int | None = None, counter: int | None = None, user_id: int | None = None,
                       manufacturer: str | None = None, model: str | None = None) -> int:
        """Add a token to the inventory; raises :class:`SerialTaken` when the serial is there already (the unique
        constraint decides, so two imports of one file at the same time cannot both add it)."""
        if kind not in ("totp", "hotp"):
            raise ValueError(f"an OATH token is totp or hotp, not {kind!r}")
        stmt = insert(oath_tokens).values(
            serial=serial, kind=kind, secret=secret, digits=digits, user_id=user_id,
            period=period if kind == "totp" else None, counter=(counter or 0) if kind == "hotp" else None,
            manufacturer=manufacturer, model=model, imported_at=now).returning(oath_tokens.c.id)
        try:
            return int(self._run(lambda c: c.execute(stmt).scalar_one()))
        except IntegrityError:
            raise SerialTaken(serial) from None

    def list_oath_tokens(self, *, user_id: int | None = None, after: str | None = None,
                         limit: int | None = None) -> list[OathTokenRecord]:
        """Tokens in serial order; ``after`` (the last serial seen) and ``limit`` page through the inventory."""
        stmt = self._oath_select().order_by(oath_tokens.c.serial)
        if user_id is not None:
            stmt = stmt.where(oath_tokens.c.user_id == user_id)
        if after is not None:
            stmt = stmt.where(oath_tokens.c.serial > after)
        if limit is not None:
            stmt = stmt.limit(max(1, limit))
        return [self._oath_token(r) for r in self._run(lambda c: c.execute(stmt).all())]

    def oath_serials(self, serials: Collection[str]) -> set[str]:
        """Which of ``serials`` are in the inventory already (one query per 500, in one transaction)."""
        wanted = sorted(set(serials))

        def run(c: Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                found.update(str(r[0]) for r in c.execute(select(oath_tokens.c.serial)
                                                          .where(oath_tokens.c.serial.in_(chunk))).all())
            return found

        return self._run(run)

    def get_oath_token(self, serial: str) -> OathTokenRecord | None:
        stmt = self._oath_select().where(oath_tokens.c.serial == serial)
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._oath_token(row)

    def get_oath_token_by_method(self, method_id: int) -> OathTokenRecord | None:
        stmt = self._oath_select().where(oath_tokens.c.method_id == method_id)
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._oath_token(row)

    def assign_oath_token(self, serial: str, user_id: int) -> bool:
        """Assign an unassigned token to a user (True also when it is theirs already); False when the token is
        missing or assigned to someone else. One conditional UPDATE: two helpdesk assignments cannot both win."""
        stmt = (update(oath_tokens)
                .where(oath_tokens.c.serial == serial,
                       or_(oath_tokens.c.user_id.is_(None), oath_tokens.c.user_id == user_id))
                .values(user_id=user_id))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def unassign_oath_token(self, serial: str) -> OathTokenRecord | None:
        """Put a token back in the pool: no user, not activated; the method row it signed in with is deleted in
        the same transaction. Its counter and last step stay, so codes used before never work again. Returns the
        token as it was, or None when there is no such token."""
        def run(c: Connection) -> OathTokenRecord | None:
            row = c.execute(self._oath_select().where(oath_tokens.c.serial == serial).with_for_update(
                of=oath_tokens)).first()
            if row is None:
                return None
            c.execute(update(oath_tokens).where(oath_tokens.c.id == row.id).values(user_id=None, method_id=None))
            if row.method_id is not None:
                c.execute(delete(methods).where(methods.c.id == row.method_id))
            return self._oath_token(row)
        return self._run(run)

    def delete_oath_token(self, serial: str) -> OathTokenRecord | None:
        """Remove a token from the inventory, and the method row it signed in with; returns it as it was."""
        def run(c: Connection) -> OathTokenRecord | None:
            row = c.execute(self._oath_select().where(oath_tokens.c.serial == serial).with_for_update(
                of=oath_tokens)).first()
            if row is None:
                return None
            c.execute(delete(oath_tokens).where(oath_tokens.c.id == row.id))
            if row.method_id is not None:
                c.execute(delete(methods).where(methods.c.id == row.method_id))
            return self._oath_token(row)
        return self._run(run)

    def link_oath_token(self, token_id: int, user_id: int, method_id: int) -> bool:
        """Activation: tie a token to the method row of the user who proved they hold it. Only a token that is
        not activated and is unassigned or assigned to this user; it becomes theirs (one conditional UPDATE)."""
        stmt = (update(oath_tokens)
                .where(oath_tokens.c.id == token_id, oath_tokens.c.method_id.is_(None),
                       or_(oath_tokens.c.user_id.is_(None), oath_tokens.c.user_id == user_id))
                .values(user_id=user_id, method_id=method_id))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def consume_oath_step(self, token_id: int, step: int, *, now: float) -> bool:
        """TOTP token: accept time step ``step`` at most once (only a step newer than the last accepted one), in
        one conditional UPDATE."""
        stmt = (update(oath_tokens)
                .where(oath_tokens.c.id == token_id, oath_tokens.c.kind == "totp",
                       or_(oath_tokens.c.last_step.is_(None), oath_tokens.c.last_step < step))
                .values(last_step=step, last_used_at=now))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def consume_oath_counter(self, token_id: int, counter: int, *, now: float) -> bool:
        """HOTP token: accept the code of ``counter`` at most once, in one conditional UPDATE that moves the
        expected counter to ``counter + 1`` only while it is still at or below ``counter``. The codes of the
        counters skipped over can never be used afterwards (RFC 4226 section 7.2)."""
        stmt = (update(oath_tokens)
                .where(oath_tokens.c.id == token_id, oath_tokens.c.kind == "hotp",
                       oath_tokens.c.counter <= counter)
                .values(counter=counter + 1, last_used_at=now))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def resync_oath_counter(self, token_id: int, second: int, *, now: float) -> bool:
        """HOTP resynchronisation by two consecutive codes (counters ``second - 1`` and ``second``): the expected
        counter becomes ``second + 1``, only while neither code was used (one conditional UPDATE)."""
        stmt = (update(oath_tokens)
                .where(oath_tokens.c.id == token_id, oath_tokens.c.kind == "hotp",
                       oath_tokens.c.counter <= second - 1)
                .values(counter=second + 1, last_used_at=now))
        return self._run(lambda c: c.execute(stmt).rowcount) == 1
    # -- remembered devices ------------------------------------------------------------------------------------
    @staticmethod
    def _device(row: Any) -> DeviceRecord:
        return DeviceRecord(id=row.id, user_id=row.user_id, device_id=row.device_id, name=row.name,
                            created_at=row.created_at, last_used_at=row.last_used_at, expires_at=row.expires_at)

    def add_device(self, user_id: int, device_id: str, name: str, *, now: float, expires_at: float,
                   keep: int) -> int:
        """Remember a device; the user's expired devices go, and only the ``keep`` newest others stay."""
        def run(c: Connection) -> int:
            c.execute(delete(devices).where(devices.c.user_id == user_id, devices.c.expires_at <= now))
            newest = (select(devices.c.id).where(devices.c.user_id == user_id)
                      .order_by(devices.c.created_at.desc(), devices.c.id.desc()).limit(max(0, keep - 1)))
            c.execute(delete(devices).where(devices.c.user_id == user_id, devices.c.id.not_in(newest)))
            return int(c.execute(insert(devices).values(user_id=user_id, device_id=device_id, name=name[:100],
                                                        created_at=now, expires_at=expires_at)
                                 .returning(devices.c.id)).scalar_one())
        return self._run(run)

    def find_device(self, device_id: str) -> DeviceRecord | None:
        row = self._run(lambda c: c.execute(select(devices).where(devices.c.device_id == device_id)).first())
        return None if row is None else self._device(row)

    def touch_device(self, device_row_id: int, *, now: float) -> None:
        stmt = update(devices).where(devices.c.id == device_row_id).values(last_used_at=now)
        self._run(lambda c: c.execute(stmt))

    def list_devices(self, user_id: int, *, now: float) -> list[DeviceRecord]:
        stmt = (select(devices).where(devices.c.user_id == user_id, devices.c.expires_at > now)
                .order_by(devices.c.created_at, devices.c.id))
        return [self._device(r) for r in self._run(lambda c: c.execute(stmt).all())]

    def delete_device(self, user_id: int, device_row_id: int) -> bool:
        stmt = delete(devices).where(devices.c.id == device_row_id, devices.c.user_id == user_id)
        return self._run(lambda c: c.execute(stmt).rowcount) == 1

    def delete_devices(self, user_id: int) -> int:
        stmt = delete(devices).where(devices.c.user_id == user_id)
        return int(self._run(lambda c: c.execute(stmt).rowcount))

    # -- sessions made (the security info page; migration 0015) -------------------------------------------------
    def add_session_record(self, user_id: int, sid: str, *, now: float, expires_at: float, client_ip: str | None,
                           user_agent: str | None, methods: Sequence[str]) -> None:
        """Record a session cookie just issued; the user's rows past their absolute timeout go at the same time."""
        def run(c: Connection) -> None:
            c.execute(delete(session_rows).where(session_rows.c.user_id == user_id,
                                                 session_rows.c.expires_at <= now))
            c.execute(insert(session_rows).values(
                user_id=user_id, sid=sid[:64], created_at=now, expires_at=expires_at,
                client_ip=(client_ip or "")[:64] or None, user_agent=(user_agent or "")[:300] or None,
                methods=",".join(methods)[:200]))
        self._run(run)

    def list_session_records(self, user_id: int, *, now: float, limit: int = 50) -> list[SessionRecord]:
        """The user's sessions not ended and within their absolute timeout, the newest first."""
        stmt = (select(session_rows).where(session_rows.c.user_id == user_id, session_rows.c.expires_at > now,
                                           session_rows.c.ended_at.is_(None))
                .order_by(session_rows.c.created_at.desc(), session_rows.c.id.desc()).limit(max(1, limit)))
        return [SessionRecord(id=r.id, user_id=r.user_id, sid=r.sid, created_at=r.created_at,
                              expires_at=r.expires_at, client_ip=r.client_ip, user_agent=r.user_agent,
                              methods=tuple(m for m in (r.methods or "").split(",") if m), ended_at=r.ended_at)
                for r in self._run(lambda c: c.execute(stmt).all())]

    def end_session_records(self, user_id: int, username: str, *, keep_sid: str | None, now: float,
                            sids: Collection[str] | None = None) -> list[str]:
        """End the user's live sessions (all but ``keep_sid``; only ``sids`` when given): each gets a revocation of
        its id and its row an ``ended_at``, in one transaction. Returns the session ids ended. Rows of another user
        are never touched, whatever ``sids`` holds."""
        def run(c: Connection) -> list[str]:
            where = [session_rows.c.user_id == user_id, session_rows.c.ended_at.is_(None),
                     session_rows.c.expires_at > now]
            if keep_sid is not None:
                where.append(session_rows.c.sid != keep_sid)
            if sids is not None:
                where.append(session_rows.c.sid.in_(sorted(sids)))
            found = [str(r.sid) for r in c.execute(select(session_rows.c.id, session_rows.c.sid).where(*where)
                                                    .with_for_update()).all()]
            if not found:
                return []
            ended = c.execute(update(session_rows).where(*where, session_rows.c.sid.in_(found))
                              .values(ended_at=now))
            if not ended.rowcount:
                return []
            for sid in found:
                self._revoke(c, username, now=now, session_id=sid)
            return found
        return self._run(run)

    # -- phone send caps (SMS pumping, toll fraud) -----------------------------------------------------------------
    # A text or a call costs the operator money and can be abused to pump traffic to premium numbers. Each send is
    # reserved here BEFORE it goes to the gateway: one transaction checks every cap and inserts the row, serialised
    # against every other reservation that could share a cap, so concurrent requests never pass the last slot
    # together. There is deliberately no "release": a send the gateway refused (or timed out on) still counts, or an
    # attacker who makes the gateway fail would get unlimited retries.
    def _lock_phone_caps(self, c: Connection, user_id: int, number_key: str, country: str) -> None:
        """Serialise reservations that share a user, a number or a country, until the transaction ends.

        SQLite: the first statement is a write (of the user's row, changing nothing), which takes the database's
        write lock; a SELECT ... FOR UPDATE would lock nothing there. PostgreSQL: transaction-level advisory locks
        on the country, then the number, then the user - always in that order, so two reservations cannot
        deadlock - which also covers different users sending to one number or one country (a row lock on the user
        would not)."""
        if self._sqlite:
            c.execute(update(users).where(users.c.id == user_id).values(updated_at=users.c.updated_at))
            return
        for kind, value in (("country", country), ("number", number_key), ("user", user_id)):
            c.execute(select(func.pg_advisory_xact_lock(_advisory_key(kind, value))))

    def reserve_phone_send(self, user_id: int, number_key: str, country: str, channel: PhoneChannel,
                           purpose: SendPurpose, *, now: float, limits: SendLimits) -> SendRefusal | None:
        """Count one text or call, unless a cap refuses it; atomic across threads, processes and servers.

        Checks, at ``now``: the last send to the user for the same ``purpose`` and ``channel`` at least
        ``limits.min_interval`` ago; fewer than the user's, the number's and the country's hourly and daily caps
        (both channels) within the sliding hour and day (``at > now - window``). If all pass, the send is inserted
        and ``None`` returned; otherwise nothing is written and the :class:`SendRefusal` whose ``retry_after`` is
        longest is returned (asking earlier would be refused again). ``number_key`` is the keyed digest of the
        number, never the number; ``user_id`` must be an existing user.
        """
        if channel not in PHONE_CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(PHONE_CHANNELS)}, not {channel!r}")
        if purpose not in SEND_PURPOSES:
            raise ValueError(f"purpose must be one of {', '.join(SEND_PURPOSES)}, not {purpose!r}")
        if not number_key or len(number_key) > 64:
            raise ValueError("number_key must be the number's digest (1 to 64 characters)")
        if not country or len(country) > 4:
            raise ValueError("country must be an ISO region code (1 to 4 characters)")
        t = phone_sends
        caps: tuple[tuple[SendLimitName, Any, int, float], ...] = (
            ("user_hour", t.c.user_id == user_id, limits.per_user_hour, HOUR),
            ("user_day", t.c.user_id == user_id, limits.per_user_day, DAY),
            ("number_hour", t.c.number_key == number_key, limits.per_number_hour, HOUR),
            ("number_day", t.c.number_key == number_key, limits.per_number_day, DAY),
            ("country_hour", t.c.country == country, limits.per_country_hour, HOUR),
            ("country_day", t.c.country == country, limits.per_country_day, DAY),
        )

        def run(c: Connection) -> SendRefusal | None:
            self._lock_phone_caps(c, user_id, number_key, country)
            refusals: list[SendRefusal] = []
            if limits.min_interval > 0:
                last = c.execute(select(func.max(t.c.at)).where(
                    t.c.user_id == user_id, t.c.purpose == purpose, t.c.channel == channel,
                    t.c.at > now - limits.min_interval)).scalar()
                if last is not None:
                    refusals.append(SendRefusal("min_interval", float(last) + limits.min_interval - now))
            for name, where, cap, window in caps:
                if cap <= 0:
                    continue
                since = now - window
                count = int(c.execute(select(func.count()).select_from(t).where(where, t.c.at > since)).scalar_one())
                if count < cap:
                    continue
                # One more send fits once the (count - cap + 1)-th oldest send in the window has left it.
                freeing = c.execute(select(t.c.at).where(where, t.c.at > since).order_by(t.c.at, t.c.id)
                                    .offset(count - cap).limit(1)).scalar_one()
                refusals.append(SendRefusal(name, float(freeing) + window - now))
            if refusals:
                return max(refusals, key=lambda r: r.retry_after)
            c.execute(insert(t).values(user_id=user_id, number_key=number_key, country=country, channel=channel,
                                       purpose=purpose, at=now))
            return None

        return self._run(run)

    def count_phone_sends(self, *, since: float, user_id: int | None = None, number_key: str | None = None,
                          country: str | None = None) -> int:
        """Sends counted after ``since`` (for reports and tests), optionally per user, number or country."""
        where = [phone_sends.c.at > since]
        if user_id is not None:
            where.append(phone_sends.c.user_id == user_id)
        if number_key is not None:
            where.append(phone_sends.c.number_key == number_key)
        if country is not None:
            where.append(phone_sends.c.country == country)
        stmt = select(func.count()).select_from(phone_sends).where(*where)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    def prune_expired(self, before: float) -> int:
        """Housekeeping: delete one-time rows that expired before ``before`` (codes, calls, passkey ceremonies,
        push registrations, requests and nonces), in one transaction; returns how many. The caller passes a time
        well past every sign-in's timeout, so no sign-in can still be waiting on a row this deletes."""
        tables = (challenges, calls, webauthn_challenges, webauthn_logins, push_registrations, push_requests,
                  push_nonces)

        def run(c: Connection) -> int:
            return sum(int(c.execute(delete(t).where(t.c.expires_at < before)).rowcount) for t in tables)
        return int(self._run(run))

    def prune_phone_sends(self, before: float) -> int:
        """Housekeeping: delete sends made before ``before`` (anything older than a day counts for no cap)."""
        stmt = delete(phone_sends).where(phone_sends.c.at < before)
        return int(self._run(lambda c: c.execute(stmt).rowcount))

    # -- fraud reports -------------------------------------------------------------------------------------------
    @staticmethod
    def _fraud_report(row: Any) -> FraudReportRecord:
        return FraudReportRecord(id=row.id, user_id=row.user_id, username=row.username,
                                 method_kind=row.method_kind, at=row.at, client_ip=row.client_ip,
                                 user_agent=row.user_agent, reference=row.reference,
                                 blocked_until=row.blocked_until,
                                 notified=tuple(n for n in (row.notified or "").split(",") if n))

    def add_fraud_report(self, user_id: int, username: str, method_kind: str, *, now: float, reference: str,
                         client_ip: str | None = None, user_agent: str | None = None,
                         block_until: float | None = None, block_reason: str = "fraud report") -> int:
        """Record a fraud report and, with ``block_until``, block the user - in ONE transaction; returns its id.

        The block is what :meth:`set_block` writes (``blocked_until``, ``blocked_reason``), but only extends: a
        longer block already in place stays as it is. It comes with a user-wide revocation (:meth:`add_revocation`:
        every session and sign-in in progress ends, remembered devices are forgotten). Raises
        :class:`FraudReportExists` (with the stored report) when a report with this ``reference`` exists; then
        nothing is written: the unique constraint decides, so replays racing each other write one row and block
        once, and a report is never stored without its block (or the reverse).
        """
        if not reference or len(reference) > 64:
            raise ValueError("reference must be 1 to 64 characters")
        stmt = insert(fraud_reports).values(
            user_id=user_id, username=username[:128], method_kind=method_kind[:32], at=now,
            client_ip=(client_ip or "")[:64] or None, user_agent=(user_agent or "")[:300] or None,
            reference=reference, blocked_until=block_until, notified="").returning(fraud_reports.c.id)

        def run(c: Connection) -> int:
            report_id = int(c.execute(stmt).scalar_one())
            if block_until is not None:
                c.execute(update(users)
                          .where(users.c.id == user_id,
                                 or_(users.c.blocked_until.is_(None), users.c.blocked_until < block_until))
                          .values(blocked_until=block_until, blocked_reason=block_reason[:300], updated_at=now))
                self._revoke(c, username, now=now)
            return report_id

        try:
            return self._run(run)
        except IntegrityError:
            existing = self.find_fraud_report(reference)
            if existing is None:  # the user vanished (foreign key), not a duplicate
                raise
            raise FraudReportExists(existing) from None

    def find_fraud_report(self, reference: str) -> FraudReportRecord | None:
        stmt = select(fraud_reports).where(fraud_reports.c.reference == reference)
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._fraud_report(row)

    def set_fraud_report_notified(self, report_id: int, notified: Sequence[str]) -> None:
        """Record which notifications of a report succeeded (names without commas)."""
        value = ",".join(n.replace(",", " ") for n in notified)[:300]
        stmt = update(fraud_reports).where(fraud_reports.c.id == report_id).values(notified=value)
        self._run(lambda c: c.execute(stmt))

    def list_fraud_reports(self, *, username: str | None = None, limit: int = 100,
                           before_id: int | None = None) -> list[FraudReportRecord]:
        """The newest reports first, optionally of one user; ``before_id`` (the last id seen) for the next page."""
        stmt = select(fraud_reports).order_by(fraud_reports.c.id.desc()).limit(max(1, limit))
        if username is not None:
            stmt = stmt.where(fraud_reports.c.username == username)
        if before_id is not None:
            stmt = stmt.where(fraud_reports.c.id < before_id)
        return [self._fraud_report(r) for r in self._run(lambda c: c.execute(stmt).all())]

    # -- revocations -------------------------------------------------------------------------------------------
    def add_revocation(self, username: str, *, now: float, session_id: str | None = None) -> None:
        """Revoke one session (``session_id``) or, without one, every session and sign-in of the user up to now.
        A user-wide revocation also forgets the user's remembered devices, in the same transaction: revocation
        rows are pruned after the longest session, devices live longer."""
        self._run(lambda c: self._revoke(c, username, now=now, session_id=session_id))

    @staticmethod
    def _revoke(c: Connection, username: str, *, now: float, session_id: str | None = None) -> None:
        """The one place revocation rows are written. On PostgreSQL the INSERT also sends ``NOTIFY
        mfa_revocations`` in this transaction (a trigger, migration 0014: delivered only if the row commits), which
        every server's revocation listener turns into an immediate read (:mod:`mfa_middleware.store.notify`)."""
        c.execute(insert(revocations).values(username=username, session_id=session_id, not_before=now,
                                             created_at=now))
        if session_id is None:
            c.execute(delete(devices).where(devices.c.user_id.in_(
                select(users.c.id).where(users.c.username == username))))

    def revocations_since(self, after_id: int, *, newer_than: float,
                          also_ids: Collection[int] = ()) -> list[RevocationRecord]:
        """Revocations with an id above ``after_id`` (or one of ``also_ids``: ids a reader skipped because they
        were not committed yet) created after ``newer_than`` (older ones cannot matter: every session they could
        end has timed out)."""
        newer = revocations.c.id > after_id
        if also_ids:
            newer = or_(newer, revocations.c.id.in_(sorted(also_ids)))
        stmt = (select(revocations).where(newer, revocations.c.created_at > newer_than)
                .order_by(revocations.c.id))
        rows = self._run(lambda c: c.execute(stmt).all())
        return [RevocationRecord(id=r.id, username=r.username, session_id=r.session_id, not_before=r.not_before)
                for r in rows]

    def sign_in_revoked(self, username: str, *, since: float, session_id: str) -> bool:
        """Whether a sign-in that passed its primary step at ``since`` was revoked since: by a user-wide
        revocation written at or after that time, or by a revocation of its own id. Read from the store, not from
        the per-process cache, so a revocation ends sign-ins in progress at once on every server."""
        stmt = (select(revocations.c.id)
                .where(revocations.c.username == username,
                       or_(revocations.c.session_id.is_(None), revocations.c.session_id == session_id),
                       or_(revocations.c.not_before >= since, revocations.c.session_id == session_id))
                .limit(1))
        return self._run(lambda c: c.execute(stmt).first()) is not None

    def last_revocation_id(self) -> int:
        stmt = select(func.max(revocations.c.id))
        return int(self._run(lambda c: c.execute(stmt).scalar_one()) or 0)

    def prune_revocations(self, older_than: float) -> int:
        stmt = delete(revocations).where(revocations.c.created_at < older_than)
        return int(self._run(lambda c: c.execute(stmt).rowcount))

    # -- audit -------------------------------------------------------------------------------------------------
    def write_audit(self, *, at: float, actor: str, username: str | None, event: str, result: str,
                    client_ip: str | None = None, user_agent: str | None = None,
                    detail: dict[str, Any] | None = None, request_id: str | None = None,
                    timeout: float | None = None) -> None:
        """Append one audit row. ``timeout`` (seconds, at most the store's): the longest this write may take; on
        PostgreSQL the server cancels the insert a little before it (``lock_timeout``/``statement_timeout`` for
        this transaction only), so a lock on the audit table costs one cancelled statement, not a connection.
        Raises :class:`StoreUnavailable` when it could not be written in time."""
        stmt = insert(audit).values(at=at, actor=actor[:128], username=username, event=event, result=result,
                                    request_id=request_id,
                                    client_ip=client_ip, user_agent=(user_agent or "")[:300] or None,
                                    detail=json.dumps(detail or {}, sort_keys=True))
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        with self._begin(timeout=limit, trips=False) as c:
            if not self._sqlite:
                ms = str(max(1, int(limit * 800)))  # 80% of the limit: the server answers before our own bound
                c.execute(select(func.set_config("lock_timeout", ms, True),
                                 func.set_config("statement_timeout", ms, True)))
            c.execute(stmt)

    def list_audit(self, *, username: str | None = None, limit: int = 100, event: str | None = None,
                   result: str | None = None, since: float | None = None, until: float | None = None,
                   before_id: int | None = None) -> list[AuditRecord]:
        """The newest events first (keyset pagination: pass the last id seen as ``before_id`` for the next page),
        optionally of one user, one event, one result, and at or after ``since`` / before ``until``."""
        stmt = select(audit).order_by(audit.c.id.desc()).limit(max(1, limit))
        if username is not None:
            stmt = stmt.where(audit.c.username == username)
        if event is not None:
            stmt = stmt.where(audit.c.event == event)
        if result is not None:
            stmt = stmt.where(audit.c.result == result)
        if since is not None:
            stmt = stmt.where(audit.c.at >= since)
        if until is not None:
            stmt = stmt.where(audit.c.at < until)
        if before_id is not None:
            stmt = stmt.where(audit.c.id < before_id)
        rows = self._run(lambda c: c.execute(stmt).all())
        return [AuditRecord(id=r.id, at=r.at, actor=r.actor, username=r.username, event=r.event, result=r.result,
                            client_ip=r.client_ip, user_agent=r.user_agent, detail=json.loads(r.detail or "{}"),
                            request_id=r.request_id)
                for r in rows]

    def prune_audit(self, *, before: float, batch: int = 5000) -> int:
        """Delete up to ``batch`` audit events older than ``before`` (the oldest first) and say how many went;
        callers repeat until it returns less than ``batch``, so no transaction holds the table for long."""
        def run(c: Connection) -> int:
            ids = select(audit.c.id).where(audit.c.at < before).order_by(audit.c.id).limit(batch).scalar_subquery()
            return int(c.execute(delete(audit).where(audit.c.id.in_(ids))).rowcount or 0)
        return self._run(run)

    def count_audit_before(self, before: float) -> int:
        return int(self._run(lambda c: c.execute(
            select(func.count()).select_from(audit).where(audit.c.at < before)).scalar_one()))

    # -- push approval (the push method's device protocol) --------------------------------------------------------
    # Every change that guards the protocol is one statement: a registration token is used by one conditional
    # UPDATE, a nonce by one INSERT against a unique constraint, a request's answer by one conditional UPDATE
    # (pending and unexpired only) and an approval used up by another. So replays, two devices or twenty answers
    # at once change nothing after the first, on one server or many.
    @staticmethod
    def _push_device(row: Any) -> PushDeviceRecord:
        return PushDeviceRecord(id=row.id, user_id=row.user_id, method_id=row.method_id, account_id=row.account_id,
                                public_key=bytes(row.public_key), algorithm=row.algorithm, name=row.name,
                                created_at=row.created_at, last_seen_at=row.last_seen_at,
                                channel=None if row.channel is None else bytes(row.channel))

    @staticmethod
    def _push_request(row: Any) -> PushRequestRecord:
        return PushRequestRecord(
            id=row.id, public_id=row.public_id, user_id=row.user_id, method_id=row.method_id,
            device_id=row.device_id, sign_in_id=row.sign_in_id, number=row.number,
            choices=tuple(int(n) for n in row.choices.split(",")), site=row.site, host=row.host,
            client_ip=row.client_ip, user_agent=row.user_agent, status=row.status, created_at=row.created_at,
            expires_at=row.expires_at, answered_at=row.answered_at)

    def add_push_registration(self, user_id: int, method_id: int, token_digest: str, *, now: float,
                              expires_at: float) -> int:
        stmt = insert(push_registrations).values(user_id=user_id, method_id=method_id, token_digest=token_digest,
                                                 created_at=now, expires_at=expires_at).returning(
            push_registrations.c.id)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))

    def register_push_device(self, token_digest: str, *, account_id: str, public_key: bytes, algorithm: str,
                             name: str, now: float, channel: bytes | None = None) -> PushDeviceRecord | None:
        """Use a registration token (unused, unexpired, its method still unconfirmed and without a device) and
        record the device, in one transaction: None when the token cannot be used (unknown, used, expired)."""
        def run(c: Connection) -> PushDeviceRecord | None:
            used = c.execute(update(push_registrations).where(
                push_registrations.c.token_digest == token_digest, push_registrations.c.used_at.is_(None),
                push_registrations.c.expires_at > now).values(used_at=now)).rowcount
            if used != 1:
                return None
            reg = c.execute(select(push_registrations).where(
                push_registrations.c.token_digest == token_digest)).one()
            method = c.execute(select(methods.c.id).where(methods.c.id == reg.method_id,
                                                          methods.c.confirmed.is_(False))).first()
            taken = c.execute(select(push_devices.c.id).where(push_devices.c.method_id == reg.method_id)).first()
            if method is None or taken is not None:
                return None
            device_id = c.execute(insert(push_devices).values(
                user_id=reg.user_id, method_id=reg.method_id, account_id=account_id, public_key=public_key,
                algorithm=algorithm, name=name[:100], created_at=now, channel=channel).returning(
                push_devices.c.id)).scalar_one()
            return self._push_device(c.execute(select(push_devices).where(push_devices.c.id == device_id)).one())
        return self._run(run)

    def push_device_by_account(self, account_id: str) -> PushDeviceRecord | None:
        stmt = select(push_devices).where(push_devices.c.account_id == account_id[:64])
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._push_device(row)

    def push_device_of_method(self, method_id: int) -> PushDeviceRecord | None:
        stmt = select(push_devices).where(push_devices.c.method_id == method_id)
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._push_device(row)

    def use_push_nonce(self, device_id: int, nonce: str, *, now: float, keep_until: float) -> bool:
        """Record a device request's nonce: True the first time, False for a nonce this device used before (and
        whose timestamp could still be accepted). Expired nonces of the device are dropped first."""
        self._run(lambda c: c.execute(delete(push_nonces).where(push_nonces.c.device_id == device_id,
                                                                push_nonces.c.expires_at < now)))
        stmt = insert(push_nonces).values(device_id=device_id, nonce=nonce[:64], expires_at=keep_until)
        try:
            self._run(lambda c: c.execute(stmt))
        except IntegrityError:
            return False
        return True

    def set_push_channel(self, device_id: int, channel: bytes | None) -> bool:
        """Replace one device's push channel (encrypted by the caller; None removes it): True if the device
        exists. Only that device's row is touched."""
        stmt = update(push_devices).where(push_devices.c.id == device_id).values(channel=channel)
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    def clear_push_channel(self, device_id: int, expected: bytes) -> bool:
        """Remove a device's push channel only if it is still ``expected`` (the stored bytes a wake-up was sent
        with): a push service's "gone" for an old subscription never removes a channel the device set since."""
        stmt = update(push_devices).where(push_devices.c.id == device_id,
                                          push_devices.c.channel == expected).values(channel=None)
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    def touch_push_device(self, device_id: int, *, now: float) -> None:
        stmt = update(push_devices).where(push_devices.c.id == device_id).values(last_seen_at=now)
        self._run(lambda c: c.execute(stmt))

    def add_push_request(self, *, public_id: str, user_id: int, method_id: int, device_id: int, sign_in_id: str,
                         number: int, choices: Sequence[int], site: str, host: str, client_ip: str,
                         user_agent: str, now: float, expires_at: float, cap: int, window: float) -> int | None:
        """Record a sign-in request unless the user had ``cap`` requests in the last ``window`` seconds (then
        None). The count and the insert are one statement (INSERT ... SELECT ... WHERE count < cap); on PostgreSQL,
        whose default isolation lets two such statements both see ``cap - 1``, a transaction-level advisory lock
        on the user serialises them first (SQLite holds one writer at a time anyway)."""
        recent = (select(func.count()).select_from(push_requests)
                  .where(push_requests.c.user_id == user_id, push_requests.c.created_at > now - window)
                  .scalar_subquery())
        values = {"public_id": public_id, "user_id": user_id, "method_id": method_id, "device_id": device_id,
                  "sign_in_id": sign_in_id[:64], "number": number, "choices": ",".join(str(n) for n in choices),
                  "site": site[:200], "host": host[:255], "client_ip": client_ip[:64], "user_agent": user_agent[:300],
                  "status": "pending", "created_at": now, "expires_at": expires_at}
        source = select(*(literal(v).label(k) for k, v in values.items())).where(recent < cap)
        stmt = insert(push_requests).from_select(list(values), source).returning(push_requests.c.id)

        def run(c: Connection) -> Any:
            if not self._sqlite:
                c.execute(select(func.pg_advisory_xact_lock(_advisory_key("push_user", user_id))))
            return c.execute(stmt).scalar_one_or_none()
        made = self._run(run)
        return None if made is None else int(made)

    def push_request_of_attempt(self, method_id: int, sign_in_id: str) -> PushRequestRecord | None:
        stmt = (select(push_requests).where(push_requests.c.method_id == method_id,
                                            push_requests.c.sign_in_id == sign_in_id[:64])
                .order_by(push_requests.c.id.desc()).limit(1))
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._push_request(row)

    def push_request_by_public_id(self, public_id: str) -> PushRequestRecord | None:
        stmt = select(push_requests).where(push_requests.c.public_id == public_id[:64])
        row = self._run(lambda c: c.execute(stmt).first())
        return None if row is None else self._push_request(row)

    def pending_push_requests(self, device_id: int, *, now: float) -> list[PushRequestRecord]:
        stmt = (select(push_requests).where(push_requests.c.device_id == device_id,
                                            push_requests.c.status == "pending", push_requests.c.expires_at > now)
                .order_by(push_requests.c.id))
        return [self._push_request(r) for r in self._run(lambda c: c.execute(stmt).all())]

    def settle_push_request(self, request_id: int, status: str, *, now: float) -> bool:
        """Move a pending, unexpired request to ``status`` (approved | denied | failed | fraud): True for the one
        caller that did it."""
        if status not in ("approved", "denied", "failed", "fraud"):
            raise ValueError(f"not a push answer: {status!r}")
        stmt = (update(push_requests).where(push_requests.c.id == request_id, push_requests.c.status == "pending",
                                            push_requests.c.expires_at > now)
                .values(status=status, answered_at=now))
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    def use_push_request(self, request_id: int) -> bool:
        """Use an approved request up (approved -> used): True once."""
        stmt = update(push_requests).where(push_requests.c.id == request_id,
                                           push_requests.c.status == "approved").values(status="used")
        return bool(self._run(lambda c: c.execute(stmt).rowcount) == 1)

    def count_push_requests(self, user_id: int, *, since: float) -> int:
        stmt = select(func.count()).select_from(push_requests).where(push_requests.c.user_id == user_id,
                                                                      push_requests.c.created_at > since)
        return int(self._run(lambda c: c.execute(stmt).scalar_one()))


# -- push approval (records) ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PushDeviceRecord:
    """A registered authenticator of the push method (see ``schema.push_devices``)."""

    id: int
    user_id: int
    method_id: int
    account_id: str
    public_key: bytes
    algorithm: str
    name: str
    created_at: float
    last_seen_at: float | None
    #: the push channel, SecretBox-encrypted JSON (see :mod:`mfa_middleware.factors.push.channels`), or None
    channel: bytes | None = None


@dataclass(frozen=True, slots=True)
class PushRequestRecord:
    """One sign-in's question to a device (see ``schema.push_requests``)."""

    id: int
    public_id: str
    user_id: int
    method_id: int
    device_id: int
    sign_in_id: str
    number: int
    choices: tuple[int, ...]
    site: str
    host: str
    client_ip: str
    user_agent: str
    status: str  # pending | approved | denied | failed | fraud | used
    created_at: float
    expires_at: float
    answered_at: float | None

__all__ = ["AppPasswordLimit", "AppPasswordRecord", "AuditRecord", "CallRecord", "FraudReportExists",
           "FraudReportRecord", "LabelTaken", "MethodRecord", "OathKind", "OathTokenRecord", "PhoneChannel",
           "PushDeviceRecord", "PushRequestRecord", "RevocationRecord",
           "SchemaOutOfDate", "SendLimitName", "SendLimits", "SendPurpose", "SendRefusal", "SerialTaken", "Store",
           "StoreUnavailable", "UserExists", "UserRecord", "schema"]
