"""Local passwords: argon2id hashes (argon2-cffi), verified in constant time.

Where there is nothing to check (unknown user, no local password, a locked account or client address) the password
is checked against a dummy hash made at start-up with the same parameters, so every attempt costs exactly one
argon2 verification and every failure takes the same time and gives the same answer.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_PASSWORD_LENGTH = 1024


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self._dummy = self.hasher.hash("mfa_middleware dummy password for unknown users")

    @property
    def dummy_hash(self) -> str:
        """The hash checked when there is nothing to check (unknown user, no local password, locked)."""
        return self._dummy

    def hash(self, password: str) -> str:
        if not password:
            raise ValueError("the password is empty")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise ValueError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; an absent hash is checked against the dummy and fails."""
        if len(password) > MAX_PASSWORD_LENGTH:
            password = password[:MAX_PASSWORD_LENGTH]
        try:
            if stored_hash is None:
                self.hasher.verify(self._dummy, password + "\x00never")
                return False
            return self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return False
