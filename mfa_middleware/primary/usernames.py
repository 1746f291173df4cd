"""Usernames: one canonical form, so ``Alice`` and ``alice`` are the same account."""

from __future__ import annotations

import re

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")


def canonical_username(raw: str) -> str | None:
    """The stored form of a username (lower case), or ``None`` when it is not a valid username.

    Non-ASCII input is refused before lower-casing: ``str.lower`` turns the Kelvin sign (U+212A) into ``k`` and
    ``İ`` (U+0130) into ``i`` + a combining dot, so ``\u212aevin`` would otherwise sign in as ``kevin``."""
    name = raw.strip()
    if not name.isascii():
        return None
    name = name.lower()
    return name if _USERNAME.match(name) else None


def require_username(raw: str) -> str:
    name = canonical_username(raw)
    if name is None:
        raise ValueError(f"{raw!r} is not a valid username: use 1-128 letters, digits and . _ @ + - "
                         "(starting with a letter or digit)")
    return name
