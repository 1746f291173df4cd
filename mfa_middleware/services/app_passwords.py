"""App passwords: system-generated, per-device passwords for clients that cannot show a second-factor page.

Rules:

- 16 lower-case letters from the operating system's CSPRNG (75 bits), never chosen by the user; shown once,
  in groups of four, and accepted with or without the spaces and in any case.
- Stored as an argon2id hash, plus a 64-bit truncated SHA-256 "lookup" that finds the one row to verify
  without trying every hash of the user (with 75 random bits, the truncated digest gives nothing away).
- At most ``[basic] max_app_passwords`` per user (default 40). Administrators cannot have them unless
  ``[basic] admins_may_create`` is set.
- Revoking one writes a revocation marker ``ap:<id>``, which every process's Basic cache honours within the
  revocation interval.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import TYPE_CHECKING

from ..store import UserRecord
from ..store.sql import AppPasswordLimit, AppPasswordRecord, LabelTaken
from .accounts import AccountError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import BasicConfig
    from ..store import Store
    from .audit import AuditLog
    from .passwords import Passwords

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
LENGTH = 16
_FORM = re.compile(r"^[a-z]{16}$")


def generate() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def display(password: str) -> str:
    return " ".join(password[i:i + 4] for i in range(0, len(password), 4))


def normalize(raw: str) -> str | None:
    """The canonical form of something typed as an app password, or ``None`` if it cannot be one."""
    if len(raw) > 64:
        return None
    candidate = raw.replace(" ", "").lower()
    return candidate if _FORM.match(candidate) else None


def lookup_of(password: str) -> str:
    return hashlib.sha256(password.encode("ascii")).hexdigest()[:16]


def marker(app_password_id: int) -> str:
    return f"ap:{app_password_id}"


def check_label(raw: str) -> str:
    label = " ".join(raw.split())
    if not label or len(label) > 64 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in label):
        raise AccountError("the device name must be 1-64 printable characters, e.g. \"Outlook on laptop\"")
    return label


class AppPasswords:
    def __init__(self, store: Store, audit: AuditLog, passwords: Passwords, settings: BasicConfig,
                 clock: Callable[[], float]) -> None:
        self.store, self.audit, self.passwords, self.settings, self.clock = store, audit, passwords, settings, clock

    def may_create(self, user: UserRecord) -> bool:
        return not user.is_admin or self.settings.admins_may_create

    def create(self, user: UserRecord, label: str, *, actor: str, client_ip: str | None = None,
               user_agent: str | None = None) -> tuple[AppPasswordRecord, str]:
        """Make a new app password; returns the record and the password (shown once, never stored)."""
        label = check_label(label)
        if not self.may_create(user):
            raise AccountError(f"{user.username} is an administrator: administrators cannot have app passwords "
                               "(set [basic] admins_may_create = true to allow it)")
        now = self.clock()
        if user.blocked(now):
            raise AccountError(f"{user.username} is blocked; unblock the account first")
        password = generate()
        try:
            new_id = self.store.add_app_password(user.id, label, lookup_of(password),
                                                    self.passwords.hash(password), now=now,
                                                    limit=self.settings.max_app_passwords)
        except AppPasswordLimit as exc:
            raise AccountError(f"{exc}; revoke one first") from None
        except LabelTaken:
            raise AccountError(f"{user.username} already has an app password named {label!r}; "
                               "choose another name or revoke that one") from None
        if user.state == "enforced" or (user.state == "enabled" and self.store.list_methods(user.id)):
            # Where the primary password worked on the Basic path only from a trusted network, it stops working
            # now, on every server (services/basic.py): from now on only app passwords.
            self.store.add_revocation(user.username, now=now, session_id=f"pw:{user.username}")
        self.audit.write("app_password_create", "success", now=now, actor=actor, username=user.username,
                            client_ip=client_ip, user_agent=user_agent, label=label)
        record = next(r for r in self.store.list_app_passwords(user.id) if r.id == new_id)
        return record, password

    def list(self, user: UserRecord) -> list[AppPasswordRecord]:
        return self.store.list_app_passwords(user.id)

    def revoke(self, user: UserRecord, label: str | None, *, actor: str, client_ip: str | None = None,
               user_agent: str | None = None) -> int:
        """Revoke one app password by label (or all when ``label`` is None); returns how many."""
        now = self.clock()
        if label is not None:
            label = check_label(label)  # the same tidying as at creation
        ids = self.store.delete_app_passwords(user.id, label)
        if label is not None and not ids:
            raise AccountError(f"{user.username} has no app password named {label!r} "
                               f"(see `mfa-admin app-password list {user.username}`)")
        for app_password_id in ids:
            self.store.add_revocation(user.username, now=now, session_id=marker(app_password_id))
        self.audit.write("app_password_revoke", "success", now=now, actor=actor, username=user.username,
                            client_ip=client_ip, user_agent=user_agent, label=label or "*", count=len(ids))
        return len(ids)
