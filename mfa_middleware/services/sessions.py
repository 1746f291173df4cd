"""Sessions made: a server-side record of each session cookie issued, for "active sessions" on the security info page.

Trust model and rules:

- The session cookie stays the authority (signed, checked on every request without the store). A row here is
  written once, when a sign-in issues the cookie (:meth:`SessionLog.record`), never on an authenticated request:
  the hot path still reads and writes no store.
- A row lists a session; it never makes one valid. "Sign out the other sessions" writes a revocation of each other
  session id (the existing per-session revocation, seen by every process within the revocation interval) and marks
  the rows ended, in one transaction, for the signed-in user's own rows only.
- A session may outlive its row's visibility (a user-wide revocation, a sign-out in another tab): the list hides
  rows whose id the revocation cache has ended, and rows past the absolute timeout.
- The user agent is kept as sent (cut to 300 characters) and shown in words ("Firefox on Windows"), never as
  markup; the client address is the one the pages saw (trusted proxies applied).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.decision import RevocationView
from ..store import Store, UserRecord
from ..store.sql import SessionRecord
from .audit import AuditLog
from .devices import device_name

#: sessions shown on the page (the newest first); older ones still end with "sign out the others"
MAX_LISTED = 50


@dataclass(frozen=True, slots=True)
class ActiveSession:
    """One row of the "active sessions" list, in words."""

    sid: str
    device: str
    place: str
    created_at: float
    methods: tuple[str, ...]
    current: bool


class SessionLog:
    def __init__(self, store: Store, audit: AuditLog, *, absolute_timeout: float) -> None:
        self.store = store
        self.audit = audit
        self.absolute_timeout = absolute_timeout

    def record(self, user: UserRecord, sid: str, *, methods: tuple[str, ...], client_ip: str, user_agent: str,
               now: float) -> None:
        """A sign-in just issued session ``sid`` to ``user`` (called where the cookie is made, once)."""
        self.store.add_session_record(user.id, sid, now=now, expires_at=now + self.absolute_timeout,
                                      client_ip=client_ip or None, user_agent=user_agent or None, methods=methods)

    def active(self, user: UserRecord, *, current_sid: str, now: float,
               revoked: RevocationView | None = None) -> list[ActiveSession]:
        """The user's sessions that still stand, the current one first."""
        rows = self.store.list_session_records(user.id, now=now, limit=MAX_LISTED)
        listed = [self._shown(r, current_sid) for r in rows
                  if r.sid == current_sid or revoked is None or not self._ended(r, user, revoked)]
        return sorted(listed, key=lambda s: (not s.current, -s.created_at))

    @staticmethod
    def _ended(row: SessionRecord, user: UserRecord, view: RevocationView) -> bool:
        if row.sid in view.revoked_sessions:
            return True
        cut = view.not_before.get(user.username)
        return cut is not None and cut >= row.created_at

    @staticmethod
    def _shown(row: SessionRecord, current_sid: str) -> ActiveSession:
        return ActiveSession(sid=row.sid, device=device_name(row.user_agent or ""),
                             place=row.client_ip or "unknown address", created_at=row.created_at,
                             methods=row.methods, current=row.sid == current_sid)

    def sign_out_others(self, user: UserRecord, *, current_sid: str, client_ip: str, user_agent: str,
                        now: float) -> int:
        """End every other session of the user (this browser stays signed in); returns how many ended."""
        ended = self.store.end_session_records(user.id, user.username, keep_sid=current_sid, now=now)
        self.audit.write("sessions", "signed_out_others", now=now, actor=user.username, username=user.username,
                         client_ip=client_ip, user_agent=user_agent, count=len(ended))
        return len(ended)
