"""Windows authentication handed over by the server (IIS, Apache mod_auth_sspi/mod_auth_gssapi, nginx).

Trust model: the user name is read from the WSGI environ key ``REMOTE_USER``, which only the server sets. A
request header (``Remote-User``, ``X-Remote-User``, ...) arrives as ``HTTP_REMOTE_USER`` and is never read. The
value is used only when the operator lists ``remote_user`` in ``[primary] methods``; by default nothing from the
server is trusted.

Mapping to a store user: ``DOMAIN\\alice`` and ``alice@corp.example`` become ``alice`` when
``remote_user_strip_domain`` is on (the default); if ``remote_user_domains`` is set, only those domains are
accepted (NetBIOS name or DNS suffix, compared case-insensitively) and any other domain is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import PrimaryConfig
from .usernames import canonical_username


def map_remote_user(value: str, config: PrimaryConfig) -> str | None:
    """The store username for a server-authenticated name, or ``None`` when it cannot be mapped."""
    raw = value.strip()
    if not raw or len(raw) > 256:
        return None
    domain = None
    name = raw
    if "\\" in raw:
        domain, _, name = raw.partition("\\")
    elif "@" in raw and config.remote_user_strip_domain:
        name, _, domain = raw.rpartition("@")
    if domain is not None:
        if config.remote_user_domains and domain.lower() not in config.remote_user_domains:
            return None
        if not config.remote_user_strip_domain:
            return None
    if config.remote_user_lowercase:
        name = name.lower()
    return canonical_username(name)


def remote_user_from_environ(environ: Mapping[str, Any], config: PrimaryConfig) -> str | None:
    """The mapped user from the server's ``REMOTE_USER``, when the method is trusted; never from a header."""
    if "remote_user" not in config.methods:
        return None
    value = environ.get("REMOTE_USER")
    if not isinstance(value, str) or not value:
        return None
    return map_remote_user(value, config)


class RemoteUserMethod:
    """:class:`mfa_middleware.primary.base.ServerMethod` for the server's ``REMOTE_USER``."""

    kind = "remote_user"

    def __init__(self, config: PrimaryConfig) -> None:
        self.config = config

    def username(self, asserted: str) -> str | None:
        return map_remote_user(asserted, self.config)
