"""Encryption at rest for secrets the server must read back (TOTP seeds; later phone numbers).

Fernet (AES-128-CBC + HMAC-SHA256) with a key list: the FIRST key encrypts, every key decrypts, so an operator
rotates by putting a new key first and re-encrypting at leisure. The key lives in the configuration (or the
environment), never in the database it protects.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._fernet = MultiFernet([Fernet(k.encode("ascii")) for k in keys])
        self._keys = tuple(k.encode("ascii") for k in keys)

    def lookup_keys(self, purpose: str) -> tuple[bytes, ...]:
        """Keys for keyed look-up digests of short secrets (backup codes), one per configured key, the current
        (first) one first. Derived from the encryption keys, so a copy of the database alone cannot test guesses
        against a digest."""
        label = b"mfa_middleware lookup digest: " + purpose.encode("utf-8")
        return tuple(hmac.new(key, label, hashlib.sha256).digest() for key in self._keys)

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(token)).decode("utf-8")
        except InvalidToken:
            raise ValueError("a stored secret cannot be decrypted with the configured encryption keys") from None

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode("ascii")
