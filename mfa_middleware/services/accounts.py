"""Account administration (the CLI today, the admin portal later): every change writes an audit row naming
the actor, and every change that must end existing sessions writes a revocation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..config import USER_STATES
from ..primary.usernames import require_username
from ..store import UserRecord
from ..store.sql import UserExists

if TYPE_CHECKING:
    from ..store import Store
    from .audit import AuditLog
    from .passwords import Passwords

_GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class AccountError(ValueError):
    """An administrative request cannot be carried out; the message says why and what to do."""


def parse_groups(raw: str | Sequence[str]) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    groups = tuple(dict.fromkeys(g.strip() for g in items if g.strip()))
    for g in groups:
        if len(g) > 64 or not set(g) <= _GROUP_CHARS:
            raise AccountError(f"{g!r} is not a valid group name: use letters, digits, '.', '_' and '-'")
    return groups


class Accounts:
    def __init__(self, store: Store, audit: AuditLog, passwords: Passwords, clock: Callable[[], float]) -> None:
        self.store, self.audit, self.passwords, self.clock = store, audit, passwords, clock

    def _require(self, username: str) -> UserRecord:
        try:
            name = require_username(username)
        except ValueError as exc:
            raise AccountError(str(exc)) from None
        user = self.store.get_user(name)
        if user is None:
            raise AccountError(f"no user named {name!r} (see `mfa-admin user list`)")
        return user

    def get(self, username: str) -> UserRecord:
        return self._require(username)

    def add(self, username: str, *, actor: str, password: str | None = None, email: str | None = None,
            display_name: str | None = None, groups: Sequence[str] = (), is_admin: bool = False,
            state: str = "enabled") -> UserRecord:
        try:
            name = require_username(username)
        except ValueError as exc:
            raise AccountError(str(exc)) from None
        if state not in USER_STATES:
            raise AccountError(f"state must be one of {', '.join(USER_STATES)}; got {state!r}")
        if email is not None and ("@" not in email or len(email) > 320 or any(c.isspace() for c in email)):
            raise AccountError(f"{email!r} is not an email address")
        try:
            password_hash = self.passwords.hash(password) if password is not None else None
        except ValueError as exc:
            raise AccountError(str(exc)) from None
        now = self.clock()
        try:
            user = self.store.create_user(name, now=now, email=email, display_name=display_name,
                                             groups=parse_groups(groups), is_admin=is_admin, state=state,
                                             password_hash=password_hash)
        except UserExists:
            raise AccountError(f"a user named {name!r} already exists") from None
        self.audit.write("user_add", "success", now=now, actor=actor, username=name, state=state,
                            admin=is_admin, groups=",".join(user.groups))
        return user

    def set_password(self, username: str, password: str, *, actor: str) -> None:
        user = self._require(username)
        try:
            password_hash = self.passwords.hash(password)
        except ValueError as exc:
            raise AccountError(str(exc)) from None
        now = self.clock()
        self.store.update_user(user.id, now=now, password_hash=password_hash)
        self.store.add_revocation(user.username, now=now)
        self.audit.write("password_set", "success", now=now, actor=actor, username=user.username)

    def set_state(self, username: str, state: str, *, actor: str) -> UserRecord:
        if state not in USER_STATES:
            raise AccountError(f"state must be one of {', '.join(USER_STATES)}; got {state!r}")
        user = self._require(username)
        now = self.clock()
        if user.state != state:
            self.store.update_user(user.id, now=now, state=state)
            if user.state == "disabled":
                # Sessions of a formerly exempt user were issued without a second factor: end them.
                self.store.add_revocation(user.username, now=now)
            else:
                # Whether the primary password works on the Basic path may have changed.
                self.store.add_revocation(user.username, now=now, session_id=f"pw:{user.username}")
        self.audit.write("user_state", "success", now=now, actor=actor, username=user.username, state=state,
                            previous_state=user.state)
        return self._require(username)

    def reset_mfa(self, username: str, *, actor: str) -> int:
        """Require re-registration: delete every method, back to ``enabled``, end sessions."""
        user = self._require(username)
        now = self.clock()
        removed = self.store.delete_methods(user.id)
        if user.state == "enforced":
            self.store.update_user(user.id, now=now, state="enabled")
        self.store.add_revocation(user.username, now=now)
        self.audit.write("user_reset_mfa", "success", now=now, actor=actor, username=user.username,
                            methods_removed=removed, previous_state=user.state)
        return removed

    def revoke_sessions(self, username: str, *, actor: str) -> None:
        user = self._require(username)
        now = self.clock()
        self.store.add_revocation(user.username, now=now)
        self.audit.write("sessions_revoked", "success", now=now, actor=actor, username=user.username)

    def unlock(self, username: str, *, actor: str) -> None:
        user = self._require(username)
        now = self.clock()
        self.store.reset_failures(user.id)
        self.audit.write("user_unlock", "success", now=now, actor=actor, username=user.username)

    def block(self, username: str, *, actor: str, reason: str, days: float = 90) -> UserRecord:
        """Refuse the user everywhere (sign-in, second factor, Basic) for ``days``, and end their sessions."""
        if not reason.strip():
            raise AccountError("give a reason for the block (it is kept in the audit log)")
        if not 0 < days <= 3650:
            raise AccountError("--days must be between 1 and 3650")
        user = self._require(username)
        now = self.clock()
        until = now + days * 86400
        self.store.set_block(user.id, now=now, until=until, reason=reason.strip()[:300])
        self.store.add_revocation(user.username, now=now)
        self.audit.write("user_block", "success", now=now, actor=actor, username=user.username,
                            reason=reason.strip()[:300], until=until)
        return self._require(username)

    def unblock(self, username: str, *, actor: str) -> None:
        user = self._require(username)
        now = self.clock()
        self.store.set_block(user.id, now=now, until=None, reason=None)
        self.audit.write("user_unblock", "success", now=now, actor=actor, username=user.username)

    def bypass(self, username: str, *, actor: str, seconds: int, reason: str) -> float:
        """A one-time bypass of the second factor: consumed at the next sign-in, expiring unused after
        ``seconds``. Returns when it expires."""
        if not reason.strip():
            raise AccountError("give a reason for the bypass (it is kept in the audit log)")
        if not 1 <= seconds <= 86400:
            raise AccountError("--seconds must be between 1 and 86400 (one day)")
        user = self._require(username)
        now = self.clock()
        until = now + seconds
        self.store.set_bypass(user.id, now=now, until=until)
        self.audit.write("user_bypass", "success", now=now, actor=actor, username=user.username,
                            reason=reason.strip()[:300], seconds=seconds, until=until)
        return until

    def delete(self, username: str, *, actor: str) -> None:
        user = self._require(username)
        now = self.clock()
        self.store.delete_user(user.id)
        self.store.add_revocation(user.username, now=now)
        self.audit.write("user_delete", "success", now=now, actor=actor, username=user.username)
