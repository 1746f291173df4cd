"""The ``[email]`` configuration table: parsed into a frozen :class:`EmailConfig`.

Same rules as :mod:`mfa_middleware.config` (whose reader this reuses): every key is known, an unknown key, a
wrong type or a bad value raises :class:`~mfa_middleware.config.ConfigError` naming the file and the dotted key
(``mfa.toml: email.port: must be between 1 and 65535, got 0``), and the password may be written as
``"env:NAME"`` to read it from the environment at load time.

```toml
[email]
gateway = "smtp"              # or "console" (development: logs messages, keeps the last few for the demo)
host = "smtp.example.org"
port = 587                    # default: 587 for starttls, 465 for tls, 25 for none
security = "starttls"         # "tls" (implicit TLS), or "none" (only for localhost)
username = "mfa"              # optional, with password
password = "env:MFA_SMTP_PASSWORD"
from_address = "mfa@example.org"   # shown with the site name as display name
timeout = "10s"
ca_file = "/etc/ssl/private-ca.pem"  # optional: trust this CA instead of the system store
```

The keys after ``gateway`` belong to the SMTP gateway; under ``gateway = "console"`` they are errors (except
``from_address``), so a half-edited switch between the two is noticed. ``outbox_size`` belongs to the console.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The module, not its names: mfa_middleware.config may import this module at its top while it is itself
# still being initialised, so its names are looked up when a table is parsed, not at import time.
from .. import config as base_config
from .base import check_address
from .smtp import DEFAULT_PORTS, SECURITY_MODES, Security, is_loopback_host, tls_context

GatewayKind = Literal["smtp", "console"]
GATEWAY_KINDS: tuple[GatewayKind, ...] = ("smtp", "console")
SMTP_ONLY_KEYS = ("host", "port", "security", "username", "password", "timeout", "ca_file")
CONSOLE_ONLY_KEYS = ("outbox_size",)


@dataclass(frozen=True)
class EmailConfig:
    gateway: GatewayKind
    from_address: str = "no-reply@localhost"
    host: str | None = None
    port: int | None = None  # resolved from security when not given
    security: Security = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # resolved from env: at load; never in repr
    timeout: float = 10.0
    ca_file: str | None = None  # absolute path
    outbox_size: int = 50


def email_config_from_dict(data: Mapping[str, Any], source: str = "<config>",
                           environ: Mapping[str, str] | None = None,
                           base_dir: str | os.PathLike[str] | None = None) -> EmailConfig:
    """Parse the contents of the ``[email]`` table.

    ``source`` names the file in error messages; ``environ`` resolves ``env:`` secrets (default
    ``os.environ``); a relative ``ca_file`` is taken relative to ``base_dir`` (the configuration file's
    folder; default the working directory). Raises :class:`ConfigError`.
    """
    env = os.environ if environ is None else environ
    if not isinstance(data, Mapping):
        raise base_config.ConfigError(f"{source}: email: expected a table")
    r = base_config._Reader(data, "email.", source)
    if "gateway" not in data:
        raise base_config.ConfigError(f"{r.key('gateway')}: required, one of {', '.join(GATEWAY_KINDS)}")
    gateway: GatewayKind = "smtp" if r.choice("gateway", GATEWAY_KINDS, "smtp") == "smtp" else "console"
    misplaced = SMTP_ONLY_KEYS if gateway == "console" else CONSOLE_ONLY_KEYS
    for name in misplaced:
        if name in data:
            other = "smtp" if gateway == "console" else "console"
            raise base_config.ConfigError(f"{r.key(name)}: only used with gateway = \"{other}\"")

    from_address = r.get("from_address", str, None)
    if from_address is None and gateway == "smtp":
        raise base_config.ConfigError(f"{r.key('from_address')}: required, the address messages come from, "
                          "such as \"mfa@example.org\"")
    if from_address is not None:
        try:
            check_address(from_address, "from_address")
        except ValueError:
            raise base_config.ConfigError(f"{r.key('from_address')}: must be a single address like \"mfa@example.org\" "
                              f"(the site name is added as display name), got {from_address!r}") from None

    if gateway == "console":
        config = EmailConfig(gateway="console", from_address=from_address or "no-reply@localhost",
                             outbox_size=r.integer("outbox_size", 50, 1, 1000))
        r.finish()
        return config

    host = r.get("host", str, None)
    if not host or not _valid_host(host):
        raise base_config.ConfigError(f"{r.key('host')}: required, the mail server's host name or IP address "
                          f"(without port or scheme), got {host!r}")
    host = host.strip("[]")
    security_name = r.choice("security", SECURITY_MODES, "starttls")
    security: Security = next(mode for mode in SECURITY_MODES if mode == security_name)
    if security == "none" and not is_loopback_host(host):
        raise base_config.ConfigError(f"{r.key('security')}: \"none\" sends in plain text and is allowed only for "
                          f"localhost or a loopback address, not {host!r}; use \"starttls\" or \"tls\"")
    port = r.integer("port", DEFAULT_PORTS[security], 1, 65535)
    username = r.get("username", str, None)
    raw_password = r.get("password", str, None)
    if username == "":
        raise base_config.ConfigError(f"{r.key('username')}: must not be empty (leave it out for no login)")
    if raw_password == "":
        raise base_config.ConfigError(f"{r.key('password')}: must not be empty (leave it out for no login)")
    if username is not None and raw_password is None:
        raise base_config.ConfigError(f"{r.key('password')}: required with username (write \"env:NAME\" to read it "
                          "from the environment)")
    if raw_password is not None and username is None:
        raise base_config.ConfigError(f"{r.key('username')}: required with password")
    password = None if raw_password is None else base_config._secret(raw_password, r.key("password"), env)
    timeout = r.duration("timeout", 10.0)
    if not 1 <= timeout <= 300:
        raise base_config.ConfigError(f"{r.key('timeout')}: must be between 1s and 5m, got {timeout:g} s")
    ca_file = _ca_file(r, security, base_dir)
    r.finish()
    return EmailConfig(gateway="smtp", from_address=str(from_address), host=host, port=port, security=security,
                       username=username, password=password, timeout=timeout, ca_file=ca_file)


def _valid_host(host: str) -> bool:
    """A host name or an IP address (IPv6 with or without brackets); no port, scheme, user or spaces."""
    if ":" in host:
        try:
            return ipaddress.ip_address(host.strip("[]")).version == 6
        except ValueError:
            return False
    return not any(ch.isspace() or ord(ch) < 0x20 or ch in "/@[]\\" for ch in host)


def _ca_file(r: base_config._Reader, security: Security, base_dir: str | os.PathLike[str] | None) -> str | None:
    raw = r.get("ca_file", str, None)
    if raw is None:
        return None
    if security == "none":
        raise base_config.ConfigError(f"{r.key('ca_file')}: only used with security = \"starttls\" or \"tls\"")
    if not raw:
        raise base_config.ConfigError(f"{r.key('ca_file')}: must be a path to a PEM file of CA certificates")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = Path(base_dir if base_dir is not None else Path.cwd()) / path
    path = path.resolve()
    if not path.is_file():
        raise base_config.ConfigError(f"{r.key('ca_file')}: no such file: {path}")
    try:
        tls_context(str(path))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or "no PEM certificate in it"
        raise base_config.ConfigError(
            f"{r.key('ca_file')}: cannot load CA certificates from {path}: {reason}") from None
    return str(path)
