"""Cookie names and attributes, in one place.

Every cookie is HttpOnly, SameSite=Lax and Path=/. On HTTPS (or with ``cookie_secure = "always"``) it is Secure
and its name carries the ``__Host-`` prefix, which browsers only accept from a secure origin, for the exact
host, with Path=/ and no Domain: a sibling subdomain cannot plant or overwrite it.
"""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.http import dump_cookie

from ..config import SessionConfig


@dataclass(frozen=True, slots=True)
class CookieNames:
    session: str
    pending: str
    anonymous: str
    secure: bool


def cookie_names(config: SessionConfig, https: bool) -> CookieNames:
    secure = config.cookie_secure == "always" or (config.cookie_secure == "auto" and https)
    prefix = "__Host-" if secure else ""
    base = config.cookie_name
    return CookieNames(session=f"{prefix}{base}", pending=f"{prefix}{base}_pending",
                       anonymous=f"{prefix}{base}_anon", secure=secure)


def set_cookie_header(name: str, value: str, *, secure: bool, max_age: int | None = None) -> str:
    return dump_cookie(name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="Lax")


def clear_cookie_header(name: str, *, secure: bool) -> str:
    return dump_cookie(name, "", max_age=0, expires=0, path="/", secure=secure, httponly=True, samesite="Lax")


def read_cookie(header: str, name: str) -> str | None:
    """The first value of cookie ``name`` in a ``Cookie`` header (our values never need unquoting)."""
    if not header or name not in header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip('"') or None
    return None
