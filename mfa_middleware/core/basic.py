"""HTTP Basic credentials (RFC 7617), parsed strictly, before any hashing.

Rules:

- The scheme is case-insensitive (``basic``, ``BASIC``); one or more spaces separate it from the token.
- The header is refused when longer than :data:`MAX_HEADER` characters, before decoding: an oversized
  credential costs nothing.
- The token is standard base64 with correct padding; base64url characters (``-``, ``_``), whitespace inside
  the token and any other character are refused.
- The decoded bytes are UTF-8 (RFC 7617 ``charset="UTF-8"``); Latin-1 bytes that are not valid UTF-8 are
  refused rather than guessed at.
- User-id and password are split at the FIRST colon (a password may contain colons; a user-id may not).
- Neither may be empty, and neither may contain control characters (NUL, CR, LF, DEL, ...).

Anything else is ``None``: the caller answers 401 with a challenge and changes nothing.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from dataclasses import dataclass

MAX_HEADER = 1024
_TOKEN = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never show the password in logs or tracebacks
        return f"BasicCredentials(username={self.username!r}, password='***')"


def parse_basic(authorization: str | None) -> BasicCredentials | None:
    """The credentials of a well-formed ``Authorization: Basic`` header, else ``None``."""
    if not authorization or len(authorization) > MAX_HEADER:
        return None
    scheme, sep, token = authorization.partition(" ")
    if not sep or scheme.lower() != "basic":
        return None
    token = token.lstrip(" ")
    if not token or len(token) % 4 or not _TOKEN.match(token):
        return None
    try:
        raw = b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    username, colon, password = text.partition(":")
    if not colon or not username or not password:
        return None
    if _CONTROL.search(username) or _CONTROL.search(password):
        return None
    return BasicCredentials(username, password)


@dataclass(frozen=True, slots=True)
class VerifiedCredential:
    """A Basic credential the store accepted (possibly some time ago: see ``verified_at``)."""

    username: str
    groups: tuple[str, ...]
    admin: bool
    kind: str  # "app_password" | "primary" | "trusted_network" (primary, accepted only on a trusted network)
    marker: str  # revocation marker: "ap:<id>" or "pw:<user>"
    verified_at: float
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class BasicFailure:
    reason: str  # malformed | invalid | locked | blocked | app_password_required | unavailable | banned
    #: for ``banned`` (the client address, whatever the username): when the ban ends
    until: float | None = None
