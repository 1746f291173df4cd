"""The lockout service: one set of counters guards every path that checks a secret.

The password form, each second-factor method, enrollment confirmation and the Basic path all go through
:class:`Lockout`. Rules:

- An attempt is RESERVED (counted) before its secret is checked: first on the client address (when
  ``[lockout] max_failures_per_client`` is set), then, unless that was refused, on the user. Each reservation is
  one conditional SQL UPDATE (``Store.reserve_attempt``) that counts the attempt only while not locked, so
  concurrent attempts across threads, processes and servers never check more than the limit.
- A refused reservation means the secret is never checked (the caller checks a dummy instead, so the answer and
  its cost are the same).
- A success gives its reservations back (:meth:`Lockout.release`); a failure keeps them
  (:meth:`Lockout.keep_failure`). When a failure starts the user's lock, a ``lock:<user>`` revocation tells every
  process's Basic credential cache, and this process's revocation cache is refreshed at once.
- Regulation (``services/regulation.py``): each user reservation is also counted against the (user, address)
  pair. A completed sign-in (:meth:`Lockout.succeeded`) takes that address's failures on that user off both
  counters and ends the user's run of consecutive failures; failures from other addresses stay, so a password
  sprayer's failures on an account survive its owner signing in. The per-address counter has its own find time.
- Whatever the settings, 100 consecutive failures lock an account until an administrator unlocks it
  (``Store.reserve_attempt``); only :meth:`Store.reset_failures` (unlock, ``mfa-admin bans lift``) ends that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.networks import regulation_key
from ..store.sql import Reservation

if TYPE_CHECKING:
    from ..config import LockoutConfig
    from ..store import Store, UserRecord
    from .audit import AuditLog
    from .revocation import RevocationCache


@dataclass(frozen=True, slots=True)
class Client:
    ip: str
    user_agent: str
    #: the origin the browser sees (``https://intranet.example.com``), from the request's host URL
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    """The reservations of one attempt (see :meth:`Lockout.reserve`): per client address (None when that counter
    is off) and per user (None for an unknown user, or when the address was already refused)."""

    client: Reservation | None
    user: Reservation | None
    user_known: bool

    @property
    def allowed(self) -> bool:
        """The secret may be checked: no reservation was refused."""
        return ((self.client is None or self.client.allowed)
                and (not self.user_known or (self.user is not None and self.user.allowed)))

    @property
    def locked_until(self) -> float | None:
        """Until when this attempt's refusal (or the lock it started) holds, or None."""
        until = [r.locked_until for r in (self.client, self.user)
                 if r is not None and r.locked_until is not None and (not r.allowed or r.started_lock)]
        return max(until) if until else None


def lock_marker(username: str) -> str:
    """The revocation marker written when a user's lock starts (the Basic cache drops the user's entries)."""
    return f"lock:{username}"


class Lockout:
    def __init__(self, store: Store, audit: AuditLog, revocations: RevocationCache,
                 settings: LockoutConfig) -> None:
        self.store, self.audit, self.revocations, self.settings = store, audit, revocations, settings

    def reserve(self, user: UserRecord | None, client: Client, now: float) -> Attempt:
        """Reserve one attempt BEFORE any secret is checked: first on the client address, then (when that was not
        refused) on the user. Each is one conditional UPDATE that counts the attempt only while not locked."""
        lo = self.settings
        by_client: Reservation | None = None
        if lo.max_failures_per_client:
            by_client = self.store.reserve_client_attempt(regulation_key(client.ip), now=now,
                                                          max_failures=lo.max_failures_per_client,
                                                          reset_after=lo.client_reset_after,
                                                          lock_for=lo.client_lock_for)
        by_user: Reservation | None = None
        if user is not None and (by_client is None or by_client.allowed):
            by_user = self.store.reserve_attempt(user.id, now=now, max_failures=lo.max_failures,
                                                 reset_after=lo.reset_after, lock_for=lo.lock_for)
            if by_user.allowed:
                self.store.reserve_address_failure(user.id, regulation_key(client.ip), now=now,
                                                   reset_after=lo.reset_after)
        return Attempt(by_client, by_user, user is not None)

    def release(self, attempt: Attempt, user: UserRecord | None, client: Client) -> None:
        """Give back the reservations of an attempt that succeeded: the client's, and the user's when ``user``
        is given (pass None when the user's counter was reset instead)."""
        if attempt.client is not None:
            self.store.release_client_attempt(regulation_key(client.ip), attempt.client)
        if user is not None and attempt.user is not None:
            self.store.release_attempt(user.id, attempt.user)
            if attempt.user.allowed:
                self.store.release_address_failure(user.id, regulation_key(client.ip))

    def succeeded(self, user: UserRecord, client: Client, now: float) -> None:
        """A sign-in of ``user`` from ``client`` is complete (second factor, enrollment, exemption, trusted
        network, bypass, remembered device): clear that address's failures for that user, and the user's run of
        consecutive failures. Failures from other addresses stay counted."""
        lo = self.settings
        self.store.clear_address_failures(user.id, regulation_key(client.ip), now=now, reset_after=lo.reset_after,
                                          client_reset_after=lo.client_reset_after)

    def banned_until(self, attempt: Attempt) -> float | None:
        """Until when the client address of a refused ``attempt`` is banned (None: the address is not banned).
        Only the address's ban is ever told apart: it is the same whatever username was sent."""
        if attempt.client is None or attempt.client.allowed:
            return None
        return attempt.client.locked_until
    def keep_failure(self, attempt: Attempt, user: UserRecord | None, now: float) -> int:
        """The attempt failed: its reservations stay counted. When it started the user's lockout, tell every
        process's Basic cache. Returns the user's failures in the window (0 when nothing was counted for them)."""
        reserved = attempt.user
        if user is not None and reserved is not None and reserved.started_lock:
            self.store.add_revocation(user.username, now=now, session_id=lock_marker(user.username))
            self.revocations.refresh(now)  # this process holds the lockout at once; the others within the interval
        return reserved.count if reserved is not None else 0

    def failed(self, event: str, attempt: Attempt, user: UserRecord | None, client: Client, now: float,
               **detail: object) -> None:
        """A failed attempt (wrong, unknown, no local password, or refused unchecked): keep the reservations and
        write the audit row (``failure`` when checked, ``locked`` or ``client_locked`` when refused)."""
        count = self.keep_failure(attempt, user, now)
        name = user.username if user is not None else None
        if not attempt.allowed:
            result = "client_locked" if attempt.client is not None and not attempt.client.allowed else "locked"
            self.audit.write(event, result, now=now, actor=name or "anonymous", username=name,
                             client_ip=client.ip, user_agent=client.user_agent, **detail)
            return
        if user is not None:
            detail.update(count=count)
            if attempt.user is not None and attempt.user.started_lock:
                detail.update(locked_until=attempt.user.locked_until)
        self.audit.write(event, "failure", now=now, actor=name or "anonymous", username=name,
                         client_ip=client.ip, user_agent=client.user_agent, **detail)

    def client_locked(self, client: Client, now: float) -> float | None:
        """Until when this client address is refused (too many failures over all accounts), or None."""
        if not self.settings.max_failures_per_client:
            return None
        return self.store.client_locked_until(regulation_key(client.ip), now)

    def fail_client(self, client: Client, now: float) -> None:
        """Count one failed attempt from ``client`` outside a reservation (a kept reservation)."""
        lo = self.settings
        if lo.max_failures_per_client:
            self.store.record_client_failure(regulation_key(client.ip), now=now,
                                             max_failures=lo.max_failures_per_client,
                                             reset_after=lo.client_reset_after, lock_for=lo.client_lock_for)

    def fail(self, user: UserRecord, now: float) -> tuple[int, float | None]:
        """Count one failed attempt outside a reservation (a kept reservation); returns (count, locked until)."""
        lo = self.settings
        reserved = self.store.reserve_attempt(user.id, now=now, max_failures=lo.max_failures,
                                              reset_after=lo.reset_after, lock_for=lo.lock_for)
        self.keep_failure(Attempt(None, reserved, True), user, now)
        return reserved.count, reserved.locked_until

    def failed_message(self) -> str:
        """The one answer to every failed password (wrong, unknown user, no local password, locked)."""
        lo = self.settings
        minutes = max(1, -(-int(max(lo.lock_for, lo.client_lock_for if lo.max_failures_per_client else 0)) // 60))
        return (f"Incorrect username or password. After repeated failures sign-in is paused for a while; wait "
                f"{minutes} minute{'s' if minutes != 1 else ''} or ask your helpdesk.")
