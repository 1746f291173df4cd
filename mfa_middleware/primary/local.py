"""The local store's passwords as a primary method: argon2id hashes in ``mfa_users.password_hash``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import UserRecord

if TYPE_CHECKING:
    from ..services.passwords import Passwords
    from ..store import Store


class LocalPasswords:
    """:class:`mfa_middleware.primary.base.PasswordMethod` over the local store. A user without a local password
    (Windows sign-in only) is checked against the dummy, like an unknown user. A correct password stored with
    older argon2 parameters is hashed again with the current ones."""

    kind = "forms"

    def __init__(self, store: Store, passwords: Passwords) -> None:
        self.store, self.passwords = store, passwords

    def check(self, user: UserRecord | None, password: str, now: float) -> bool:
        stored = user.password_hash if user is not None else None
        if not self.passwords.verify(stored, password):  # exactly one argon2 verification, always
            return False
        assert user is not None and stored is not None
        if self.passwords.needs_rehash(stored):
            self.store.update_user(user.id, now=now, password_hash=self.passwords.hash(password))
        return True
