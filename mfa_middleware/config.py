"""Configuration: a TOML file turned into frozen dataclasses.

Every key is known; an unknown key, a wrong type or a bad value is a :class:`ConfigError` whose message names
the file and the dotted key, so an operator can fix it without reading code. Secrets may be written inline or
as ``"env:NAME"`` to read them from the environment at load time. Nothing here reads configuration later from
globals: the loaded :class:`Config` is passed to whatever needs it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .gateways.config import EmailConfig, email_config_from_dict
from .gateways.phone.config import PhoneConfig, phone_config_from_dict
from .services.fraud import FraudSettings, fraud_settings_from_dict
from .services.phone_limits import SEND_LIMIT_KEYS, parse_send_limits
from .store.sql import SendLimits

POLICIES = ("bypass", "one_factor", "two_factor", "deny")
PRIMARY_METHODS = ("forms", "remote_user")
USER_STATES = ("disabled", "enabled", "enforced")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
                          "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT"})
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class RuleConfig:
    path: str | None
    path_regex: str | None
    policy: str
    methods: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    exempt: bool = True
    basic: bool = False
    index: int = 0
    #: the rule selects only requests from these networks (resolved CIDRs; None: any address)
    networks: tuple[str, ...] | None = None
    #: the rule selects no request from these networks (resolved CIDRs; None: no exclusion)
    not_networks: tuple[str, ...] | None = None
    #: browsers on these networks need only the primary factor here (resolved CIDRs; None: the global
    #: ``trusted_networks``; an empty list: none on this rule)
    trusted_networks: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SessionConfig:
    absolute_timeout: float = 12 * 3600
    inactivity_timeout: float = 30 * 60
    refresh_after: float = 60.0
    cookie_name: str = "mfa_session"
    cookie_secure: str = "auto"  # "auto" (Secure on HTTPS), "always", "never"
    revocation_interval: float = 5.0
    sign_in_timeout: float = 10 * 60
    #: how recent a real second factor must be to change anything on the security info page ("step-up")
    step_up: float = 10 * 60


@dataclass(frozen=True)
class PrimaryConfig:
    methods: tuple[str, ...] = ("forms",)
    remote_user_strip_domain: bool = True
    remote_user_domains: tuple[str, ...] = ()
    remote_user_lowercase: bool = True


@dataclass(frozen=True)
class LockoutConfig:
    """Regulation (``[regulation.user]`` and ``[regulation.address]``, or the older ``[lockout]`` table): failure
    windows per account and per client address, each with its own ban time. Whatever these say, an account is
    locked until an administrator unlocks it after 100 consecutive failures (NIST SP 800-63B)."""

    max_failures: int = 10  # per account, in a window of ``reset_after`` (find time)
    reset_after: float = 15 * 60
    lock_for: float = 15 * 60  # ban time of an account
    max_failures_per_client: int = 100  # from one client address, over all accounts (0: off)
    client_lock_for: float = 15 * 60  # ban time of an address
    client_reset_after: float = 15 * 60  # find time of an address


@dataclass(frozen=True)
class TotpConfig:
    issuer: str = "mfa_middleware"
    digits: int = 6
    period: int = 30
    drift_steps: int = 1


@dataclass(frozen=True)
class BasicConfig:
    """The HTTP Basic path for non-browser clients (app passwords)."""

    realm: str = "mfa_middleware"
    max_app_passwords: int = 40
    admins_may_create: bool = False
    cache_ttl: float = 5 * 60
    cache_size: int = 10_000


#: second-factor methods this version knows, in the order the "How should we verify you?" page lists them
KNOWN_METHODS = ("totp", "push", "webauthn", "oath", "sms", "mobile_voice", "voice", "email", "backup_codes")


@dataclass(frozen=True)
class EmailMethodConfig:
    """The email code's limits (``[methods.email]``)."""

    code_ttl: float = 10 * 60  # how long a code works
    resend_after: float = 30  # "Send a new code" waits this long after the last code of the attempt
    per_user_per_hour: int = 10  # codes sent to one user in any hour, over all their addresses
    per_address_per_hour: int = 5  # codes sent to one address in any hour, over all users


@dataclass(frozen=True)
class SmsMethodConfig:
    """The text-message code's settings (``[methods.sms]``): its lifetime, and the caps against SMS pumping."""

    code_ttl: float = 5 * 60
    limits: SendLimits = field(default_factory=SendLimits)


@dataclass(frozen=True)
class VoiceMethodConfig:
    """The phone call's settings (``[methods.voice]``)."""

    #: PIN mode: the user chooses a PIN (4-10 digits) when setting up the number and enters it on every call,
    #: then ``#``; PINs are stored as argon2id hashes
    pin: bool = False


@dataclass(frozen=True)
class WebAuthnMethodConfig:
    """Passkeys and security keys (``[methods.webauthn]``). ``origins`` are the exact origins browsers show
    (``https://intranet.example.com``; ``http://localhost[:port]`` for development); ``rp_id`` (default: the first
    origin's host) must be every origin's host or a parent domain of it."""

    rp_id: str = ""
    origins: tuple[str, ...] = ()
    user_verification: str = "preferred"  # preferred | required
    attestation: str = "none"  # none | direct
    #: with ``attestation = "direct"``: only authenticators of these models (AAGUIDs) may be registered
    aaguids: tuple[str, ...] = ()
    #: a passkey with user verification may sign in alone, without the password (the forms sign-in page offers it)
    passwordless: bool = False
    #: with ``attestation = "direct"``: the vendors' attestation root certificates (PEM, one certificate each),
    #: read at start-up from ``attestation_roots`` (a PEM file, or a folder of ``*.pem``/``*.crt`` files); when
    #: given, a registration must carry an attestation certificate chain that ends at one of them
    attestation_roots: tuple[bytes, ...] = ()
    #: where the roots were read from (for messages)
    attestation_roots_path: str = ""


def _attestation_roots(key: str, raw: str, base_dir: str | os.PathLike[str] | None) -> tuple[bytes, ...]:
    """The root certificates in ``raw`` (a PEM file, or a folder whose ``*.pem``/``*.crt`` files are read), each
    as its own PEM; a relative path is relative to the configuration file's folder. Missing, unreadable,
    unparsable or empty is an error naming the key and the file."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    path = Path(raw)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".pem", ".crt") and p.is_file())
        if not files:
            raise ConfigError(f"{key}: the folder {str(path)!r} holds no .pem or .crt file")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{key}: {str(path)!r} does not exist (give a PEM file or a folder of them)")
    roots: list[bytes] = []
    for file in files:
        try:
            certs = x509.load_pem_x509_certificates(file.read_bytes())
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {str(file)!r}: {exc.strerror or exc}") from None
        except ValueError:
            raise ConfigError(f"{key}: {str(file)!r} is not a PEM certificate file") from None
        roots.extend(cert.public_bytes(Encoding.PEM) for cert in certs)
    return tuple(roots)


def _webauthn_config(r: _Reader, enabled: bool,
                     base_dir: str | os.PathLike[str] | None = None) -> WebAuthnMethodConfig:
    """``[methods.webauthn]``: checked here, so a relying-party id that cannot fit the served host, or attestation
    roots that cannot be read, are start-up errors rather than ceremonies every browser (or every registration)
    fails."""
    origins = r.strings("origins", ())
    user_verification = r.choice("user_verification", ("preferred", "required"), "preferred")
    attestation = r.choice("attestation", ("none", "direct"), "none")
    aaguids = tuple(a.lower() for a in r.strings("aaguids", ()))
    rp_id = r.get("rp_id", str, "").strip().lower()
    passwordless = r.get("passwordless", bool, False)
    roots_path = r.get("attestation_roots", str, "").strip()
    r.finish()
    if aaguids and attestation != "direct":
        raise ConfigError(f"{r.key('aaguids')}: an allow-list needs attestation = \"direct\"")
    if roots_path and attestation != "direct":
        raise ConfigError(f"{r.key('attestation_roots')}: root certificates need attestation = \"direct\"")
    if passwordless and not enabled:
        raise ConfigError(f"{r.key('passwordless')}: passwordless sign-in needs \"webauthn\" in methods.enabled")
    roots = _attestation_roots(r.key("attestation_roots"), roots_path, base_dir) if roots_path else ()
    for aaguid in aaguids:
        if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", aaguid):
            raise ConfigError(f"{r.key('aaguids')}: {aaguid!r} is not an AAGUID like "
                              "\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"")
    if not origins:
        if enabled:
            raise ConfigError(f"{r.key('origins')}: required when \"webauthn\" is enabled: the origins browsers "
                              "show, like [\"https://intranet.example.com\"]")
        return WebAuthnMethodConfig(rp_id=rp_id, user_verification=user_verification, attestation=attestation,
                                    aaguids=aaguids, passwordless=passwordless, attestation_roots=roots,
                                    attestation_roots_path=roots_path)
    hosts = []
    for origin in origins:
        parts = urlsplit(origin)
        host = (parts.hostname or "").lower()
        if (parts.scheme not in ("https", "http") or not host or parts.path not in ("", "/") or parts.query
                or parts.fragment or parts.username or parts.password
                or (parts.scheme == "http" and host != "localhost")):
            raise ConfigError(f"{r.key('origins')}: {origin!r} is not an https origin (or http://localhost)")
        hosts.append(host)
    rp_id = rp_id or hosts[0]
    try:
        is_ip = bool(ipaddress.ip_address(rp_id))
    except ValueError:
        is_ip = False
    if is_ip:
        raise ConfigError(f"{r.key('rp_id')}: {rp_id!r} is an IP address; passkeys need a host name")
    if "." not in rp_id and rp_id != "localhost":
        raise ConfigError(f"{r.key('rp_id')}: {rp_id!r} is not a registrable domain")
    for origin, host in zip(origins, hosts, strict=True):
        if host != rp_id and not host.endswith("." + rp_id):
            raise ConfigError(f"{r.key('rp_id')}: {rp_id!r} does not fit origin {origin!r}: it must be the origin's "
                              "host or a parent domain of it")
    return WebAuthnMethodConfig(rp_id=rp_id, origins=tuple(o.rstrip("/") for o in origins),
                                user_verification=user_verification, attestation=attestation, aaguids=aaguids,
                                passwordless=passwordless, attestation_roots=roots, attestation_roots_path=roots_path)


#: where devices may ask to be woken by default: the Web Push services of the big browsers (Chrome and other
#: Chromium browsers, Firefox, Safari, Edge on Windows). A webhook (ntfy, UnifiedPush) host must be added.
DEFAULT_CHANNEL_HOSTS = ("fcm.googleapis.com", "*.push.services.mozilla.com", "*.push.apple.com",
                         "*.notify.windows.com")
_HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass(frozen=True)
class PushMethodConfig:
    """Push approval's settings (``[methods.push]``)."""

    request_ttl: float = 60  # how long a sign-in request waits for the device's answer
    max_per_10_minutes: int = 5  # requests sent to one user in any 10 minutes, over all their devices
    #: the site's VAPID key (RFC 8292): base64url of the raw 32-byte P-256 private key; "" turns Web Push off
    vapid_private_key: str = ""
    #: the contact push services may use ("mailto:..." or "https://..."); required with a VAPID key
    vapid_subject: str = ""
    #: hosts that channel URLs (Web Push endpoints, webhooks) may point to: exact names or "*.suffix"
    channel_hosts: tuple[str, ...] = DEFAULT_CHANNEL_HOSTS
    send_timeout: float = 10  # how long one wake-up may take before it counts as failed


def _channel_host(pattern: str, where: str) -> str:
    """One ``channel_hosts`` entry, lower-cased: a host name, an IP address, or ``*.`` and a name with a dot."""
    host = pattern.strip().lower()
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    if not _HOST_NAME.fullmatch(name) or (host.startswith("*.") and "." not in name):
        raise ConfigError(f"{where}: {pattern!r} is not a host name (\"push.example.com\"), an IP address or "
                          "\"*.\" and a domain with a dot (\"*.push.example.com\"); no scheme, port or path")
    return host


def _vapid_key(value: str, where: str) -> str:
    import base64
    import binascii

    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", value):
            raise ValueError
        raw = base64.urlsafe_b64decode(value + "=")
        ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, binascii.Error):
        raise ConfigError(f"{where}: not a VAPID private key (43 base64url characters: a raw P-256 key, as "
                          "`mfa-admin init` writes)") from None
    return value


def _push_config(mp: _Reader, environ: Mapping[str, str]) -> PushMethodConfig:
    raw_key = mp.get("vapid_private_key", str, "")
    key = _vapid_key(_secret(raw_key, mp.key("vapid_private_key"), environ).strip(),
                     mp.key("vapid_private_key")) if raw_key else ""
    subject = mp.get("vapid_subject", str, "").strip()
    if subject:
        parts = urlsplit(subject)
        if not ((subject.startswith("mailto:") and re.fullmatch(r"mailto:[^@\s]+@[^@\s]+", subject))
                or (parts.scheme == "https" and parts.hostname and not parts.username)):
            raise ConfigError(f"{mp.key('vapid_subject')}: a contact for push services, \"mailto:admin@example.com\" "
                              f"or \"https://example.com/contact\"; got {subject!r}")
    if key and not subject:
        raise ConfigError(f"{mp.key('vapid_subject')}: required with vapid_private_key: a contact push services "
                          "can reach, like \"mailto:admin@example.com\"")
    hosts = tuple(dict.fromkeys(_channel_host(h, mp.key("channel_hosts"))
                                for h in mp.strings("channel_hosts", DEFAULT_CHANNEL_HOSTS)))
    config = PushMethodConfig(request_ttl=mp.duration("request_ttl", 60),
                              max_per_10_minutes=mp.integer("max_per_10_minutes", 5, 1, 100),
                              vapid_private_key=key, vapid_subject=subject, channel_hosts=hosts,
                              send_timeout=mp.duration("send_timeout", 10))
    if not 15 <= config.request_ttl <= 600:
        raise ConfigError(f"{mp.key('request_ttl')}: must be between 15s and 10m, got {config.request_ttl:g} s")
    if not 1 <= config.send_timeout <= 60:
        raise ConfigError(f"{mp.key('send_timeout')}: must be between 1s and 1m, got {config.send_timeout:g} s")
    mp.finish()
    return config


@dataclass(frozen=True)
class MethodsConfig:
    """Which second-factor methods users may set up (``[methods]``), and each method's own settings
    (``[methods.<kind>]``)."""

    enabled: tuple[str, ...] = ("totp", "backup_codes")
    max_authenticators: int = 5  # authenticator apps and hardware tokens per user
    #: "Remember this device": how long a browser may skip the second factor (seconds); 0: off (the default)
    remember_device: float = 0.0
    email: EmailMethodConfig = field(default_factory=EmailMethodConfig)
    sms: SmsMethodConfig = field(default_factory=SmsMethodConfig)
    voice: VoiceMethodConfig = field(default_factory=VoiceMethodConfig)
    webauthn: WebAuthnMethodConfig = field(default_factory=WebAuthnMethodConfig)
    push: PushMethodConfig = field(default_factory=PushMethodConfig)


#: the longest "remember this device" may last (``[methods] remember_device``)
MAX_REMEMBER_DEVICE = 365 * 86400


@dataclass(frozen=True)
class StoreConfig:
    """How long a request may wait on the database (README, "When the store is slow or down")."""

    timeout: float = 3.0  # PostgreSQL: one transaction, start to end (also the server's statement/lock timeout)
    busy_timeout: float = 2.0  # SQLite: a write waiting for another writer's lock
    #: PostgreSQL: connections each process keeps open, and how many more it may open under load (README,
    #: "Connections"); a request waits at most ``pool_timeout`` (never longer than ``timeout``) for a free one
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float | None = None  # None: ``timeout``
    pool_recycle: float | None = None  # close connections older than this (None: never)
    #: PostgreSQL behind a pooler in transaction mode (PgBouncer ``pool_mode = transaction``): no server-side
    #: prepared statements and no session settings sent at connect (README, "Behind PgBouncer")
    transaction_pooler: bool = False
    #: PostgreSQL: a direct URL for the revocation listener's LISTEN connection, when ``database`` goes through a
    #: pooler in transaction mode (PgBouncer), where LISTEN hears nothing; None: ``database`` itself
    listen_url: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    """How ``mfa-middleware serve`` (and the other servers of this package) log (README, "Logs"): ``text`` or
    ``json`` lines on standard error, at ``level``. Wrapping an app in-process leaves logging to the app."""

    format: str = "text"
    level: str = "INFO"


@dataclass(frozen=True)
class MetricsConfig:
    """The optional Prometheus endpoint (README, "Metrics"): off unless ``enabled``."""

    enabled: bool = False
    port: int | None = None  # its own HTTP server (a thread) on ``host:port``
    host: str = "127.0.0.1"
    path: str | None = None  # or a page under the prefix, such as "/_mfa/metrics"
    #: who may scrape (the client address as the trusted-proxy chain gives it); anyone else gets 403
    networks: tuple[str, ...] = ("127.0.0.1/32", "::1/128")


#: image files a ``[branding] logo`` may be, and the content type each is served with
LOGO_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
              ".gif": "image/gif", ".webp": "image/webp"}
MAX_LOGO_BYTES = 256 * 1024
#: WCAG 2.1 AA contrast for normal text (success criterion 1.4.3)
MIN_CONTRAST = 4.5
_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class BrandingConfig:
    """What the sign-in pages look like (``[branding]``): the company's name and logo, and two colours.

    ``primary`` fills buttons (white text on it); ``accent`` colours links and the focus ring (on a white page).
    Both must reach :data:`MIN_CONTRAST` against white, checked when the configuration loads, so no operator
    can make the pages unreadable. ``logo`` is the absolute path of an image file (checked at load, served by
    the pages at ``<prefix>/static/logo``); ``home`` is where "Back to the app" links on error pages lead."""

    company: str = ""  # "": the top-level ``site_name``
    logo: str | None = None
    primary: str = "#1d4ed8"
    accent: str = "#1d4ed8"
    home: str = "/"


@dataclass(frozen=True)
class PagesConfig:
    """The pages' templates (``[pages]``): ``templates`` names a folder whose files replace the package's
    templates of the same name (``login.html``, ``base.html``, ``totp/enroll.html``...); the rest still come from
    the package. The folder must exist when the configuration loads."""

    templates: str | None = None


def relative_luminance(colour: str) -> float:
    """WCAG 2.1 relative luminance of ``#rrggbb``."""
    def channel(hex_pair: str) -> float:
        c = int(hex_pair, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i:i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(first: str, second: str) -> float:
    """WCAG 2.1 contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    a, b = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (a + 0.05) / (b + 0.05)


@dataclass(frozen=True)
class PathsConfig:
    """The ``[paths]`` table: how request paths are read (:mod:`mfa_middleware.core.paths`).

    ``windows = true`` (on in the IIS samples) matches rules case-insensitively whatever ``case_sensitive_paths``
    would say (setting both is an error) and refuses with 400 the forms IIS and NTFS read as another name: NTFS
    alternate data streams (``::$DATA``), 8.3 short names (``ADMINI~1``), wildcard characters, and non-ASCII
    characters that case tables or "best fit" code-page conversion may turn into ASCII.
    """

    windows: bool = False


@dataclass(frozen=True)
class Config:
    secret_keys: tuple[str, ...]
    encryption_keys: tuple[str, ...]
    database: str
    default_policy: str = "deny"
    prefix: str = "/_mfa"
    rules: tuple[RuleConfig, ...] = ()
    session: SessionConfig = field(default_factory=SessionConfig)
    primary: PrimaryConfig = field(default_factory=PrimaryConfig)
    lockout: LockoutConfig = field(default_factory=LockoutConfig)
    totp: TotpConfig = field(default_factory=TotpConfig)
    basic: BasicConfig = field(default_factory=BasicConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    email: EmailConfig | None = None  # the [email] table: how email codes leave (None: no email)
    phone: PhoneConfig | None = None  # the [phone] table: how texts and calls leave (None: no phone methods)
    fraud: FraudSettings = field(default_factory=FraudSettings)  # the [fraud] table: reports of unasked sign-ins
    #: the demo's page of messages the console gateway kept (``/_mfa/dev/outbox``); refused with a real gateway
    dev_outbox: bool = False
    trusted_proxies: tuple[str, ...] = ()
    case_sensitive_paths: bool = False
    paths: PathsConfig = field(default_factory=PathsConfig)
    site_name: str = "Secure sign-in"
    branding: BrandingConfig = field(default_factory=BrandingConfig)
    pages: PagesConfig = field(default_factory=PagesConfig)
    source: str = "<config>"
    #: ``[networks]``: named network aliases, each resolved to its CIDRs
    networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: browsers on these networks (resolved CIDRs) need only the primary factor, unless a rule says otherwise
    trusted_networks: tuple[str, ...] = ()


def parse_duration(value: object, where: str) -> float:
    """Parse ``"30m"``, ``"12h"``, ``"45s"``, ``"2d"``, ``"500ms"`` (or a number of seconds) into seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration like \"30m\" or \"12h\", got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ConfigError(f"{where}: a duration must be positive, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ConfigError(f"{where}: expected a duration like \"30m\", \"12h\" or \"45s\", got {value!r}")


class _Reader:
    """Reads one TOML table, remembering which keys were used so the rest can be reported as unknown."""

    def __init__(self, data: Mapping[str, Any], where: str, source: str) -> None:
        self.data = data
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.source}: {self.where}{name}"

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list, None)
        if value is None:
            return default
        for item in value:
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{self.key(name)}: expected a list of non-empty strings, got {item!r} in it")
        return tuple(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise ConfigError(f"{self.key(name)}: must be one of {', '.join(choices)}; got {value!r}")
        return str(value)

    def duration(self, name: str, default: float) -> float:
        self.used.add(name)
        if name not in self.data:
            return default
        return parse_duration(self.data[name], self.key(name))

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, int, default)
        if not low <= value <= high:
            raise ConfigError(f"{self.key(name)}: must be between {low} and {high}, got {value}")
        return int(value)

    def table(self, name: str) -> _Reader:
        value = self.get(name, dict, {})
        return _Reader(value, f"{self.where}{name}.", self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key (known keys here: {', '.join(sorted(self.used))})")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _secret(value: str, where: str, environ: Mapping[str, str]) -> str:
    if value.startswith("env:"):
        name = value[4:]
        if not name:
            raise ConfigError(f"{where}: \"env:\" must be followed by an environment variable name")
        secret = environ.get(name, "")
        if not secret:
            raise ConfigError(f"{where}: environment variable {name} is not set or empty")
        return secret
    return value


def _secret_list(reader: _Reader, name: str, environ: Mapping[str, str], required: bool) -> tuple[str, ...]:
    reader.used.add(name)
    raw = reader.data.get(name)
    if raw is None:
        if required:
            raise ConfigError(f"{reader.key(name)}: required (run `mfa-admin init` to generate one)")
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{reader.key(name)}: expected a non-empty string or list of strings")
    return tuple(_secret(i, reader.key(name), environ) for i in items)


_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def _network_aliases(nt: _Reader) -> dict[str, tuple[str, ...]]:
    """``[networks]``: each alias is a list of CIDRs and other aliases, resolved here once (depth first), so an
    unknown alias, a bad CIDR or a cycle is a start-up error that names the alias."""
    raw: dict[str, tuple[str, ...]] = {}
    for name in list(nt.data):
        if not _ALIAS.fullmatch(name):
            raise ConfigError(f"{nt.key(name)}: an alias name is letters, digits, '_' and '-', starting with a "
                              "letter")
        try:
            ipaddress.ip_network(name, strict=False)
        except ValueError:
            pass
        else:  # pragma: no cover - the pattern above refuses every address form
            raise ConfigError(f"{nt.key(name)}: an alias name must not look like an address")
        raw[name] = nt.strings(name, ())
        if not raw[name]:
            raise ConfigError(f"{nt.key(name)}: list at least one network, like [\"10.0.0.0/8\"]")
    resolved: dict[str, tuple[str, ...]] = {}

    def resolve(name: str, trail: tuple[str, ...]) -> tuple[str, ...]:
        if name in resolved:
            return resolved[name]
        if name in trail:
            cycle = " -> ".join((*trail[trail.index(name):], name))
            raise ConfigError(f"{nt.key(trail[0])}: network aliases refer to each other in a cycle: {cycle}")
        out: list[str] = []
        for entry in raw[name]:
            out.extend(_network_entry(entry, raw, nt.key(name), lambda alias: resolve(alias, (*trail, name))))
        resolved[name] = tuple(dict.fromkeys(out))
        return resolved[name]

    for name in raw:
        resolve(name, ())
    return resolved


def _network_entry(entry: str, aliases: Mapping[str, object], where: str,
                   expand: Any) -> tuple[str, ...]:
    """One list entry: a CIDR (or bare address) as its network's text, or an alias's networks via ``expand``."""
    try:
        return (str(ipaddress.ip_network(entry.strip(), strict=False)),)
    except ValueError:
        pass
    if _ALIAS.fullmatch(entry):
        if entry not in aliases:
            known = ", ".join(sorted(aliases)) or "none; define them in a [networks] table"
            raise ConfigError(f"{where}: unknown network alias {entry!r} (aliases: {known})")
        result: tuple[str, ...] = expand(entry)
        return result
    raise ConfigError(f"{where}: {entry!r} is not a network (CIDR like \"10.0.0.0/8\" or \"fd00::/8\", an "
                      "address, or an alias from [networks])")


def _network_list(r: _Reader, name: str, aliases: Mapping[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """A list of networks and aliases under ``name``, resolved to CIDRs; None when the key is absent."""
    if name not in r.data:
        r.used.add(name)
        return None
    value = r.get(name, list, [])
    for item in value:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{r.key(name)}: expected a list of networks or aliases, got {item!r} in it")
    out: list[str] = []
    for item in value:
        out.extend(_network_entry(item, aliases, r.key(name), lambda alias: aliases[alias]))
    return tuple(dict.fromkeys(out))


def _rule(data: object, index: int, source: str,
          aliases: Mapping[str, tuple[str, ...]] | None = None) -> RuleConfig:
    where = f"rules[{index}]."
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: rules[{index}]: expected a table")
    r = _Reader(data, where, source)
    path = r.get("path", str, None)
    path_regex = r.get("path_regex", str, None)
    if (path is None) == (path_regex is None):
        raise ConfigError(f"{source}: {where}path: give exactly one of path (a glob) or path_regex")
    if path is not None and not path.startswith("/"):
        raise ConfigError(f"{r.key('path')}: must start with \"/\", got {path!r}")
    if path_regex is not None:
        try:
            re.compile(path_regex)
        except re.error as exc:
            raise ConfigError(f"{r.key('path_regex')}: not a valid regular expression: {exc}") from None
    policy = r.get("policy", str, None)
    if policy is None:
        raise ConfigError(f"{r.key('policy')}: required, one of {', '.join(POLICIES)}")
    if policy not in POLICIES:
        raise ConfigError(f"{r.key('policy')}: must be one of {', '.join(POLICIES)}; got {policy!r}")
    methods = tuple(m.upper() for m in r.strings("methods", ()))
    for m in methods:
        if m not in HTTP_METHODS:
            raise ConfigError(f"{r.key('methods')}: unknown HTTP method {m!r}")
    known = aliases if aliases is not None else {}
    networks = _network_list(r, "networks", known)
    if networks is not None and not networks:
        raise ConfigError(f"{r.key('networks')}: an empty list would select no request; remove the key instead")
    rule = RuleConfig(path=path, path_regex=path_regex, policy=policy, methods=methods,
                      users=r.strings("users", ()), groups=r.strings("groups", ()),
                      exempt=r.get("exempt", bool, True), basic=r.get("basic", bool, False), index=index,
                      networks=networks, not_networks=_network_list(r, "not_networks", known),
                      trusted_networks=_network_list(r, "trusted_networks", known))
    if rule.basic and rule.policy in ("bypass", "deny"):
        raise ConfigError(f"{r.key('basic')}: only meaningful on one_factor or two_factor rules")
    r.finish()
    return rule


def config_from_dict(data: Mapping[str, Any], source: str = "<config>",
                     environ: Mapping[str, str] | None = None,
                     base_dir: str | os.PathLike[str] | None = None) -> Config:
    """Build a :class:`Config` from already-parsed TOML data (used by :func:`load_config` and by tests)."""
    env = os.environ if environ is None else environ
    top = _Reader(data, "", source)
    secret_keys = _secret_list(top, "secret_keys", env, required=True)
    for key in secret_keys:
        if len(key) < 32:
            raise ConfigError(f"{top.key('secret_keys')}: each key must be at least 32 characters")
    encryption_keys = _secret_list(top, "encryption_key", env, required=True)
    _check_fernet(encryption_keys, top.key("encryption_key"))
    database = top.get("database", str, None)
    if not database:
        raise ConfigError(f"{top.key('database')}: required, an SQLAlchemy URL such as \"sqlite:///var/mfa.db\"")
    database = _secret(database, top.key("database"), env)
    default_policy = top.choice("default_policy", POLICIES, "deny")
    prefix = top.get("prefix", str, "/_mfa").rstrip("/")
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", prefix):
        raise ConfigError(f"{top.key('prefix')}: must be a path such as \"/_mfa\", got {prefix!r}")
    proxies = top.strings("trusted_proxies", ())
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"{top.key('trusted_proxies')}: {proxy!r} is not an IP address or network") from None

    s = top.table("session")
    session = SessionConfig(
        absolute_timeout=s.duration("absolute_timeout", 12 * 3600),
        inactivity_timeout=s.duration("inactivity_timeout", 30 * 60),
        refresh_after=s.duration("refresh_after", 60),
        cookie_name=s.get("cookie_name", str, "mfa_session"),
        cookie_secure=s.choice("cookie_secure", ("auto", "always", "never"), "auto"),
        revocation_interval=s.duration("revocation_interval", 5),
        sign_in_timeout=s.duration("sign_in_timeout", 10 * 60),
        step_up=s.duration("step_up", 10 * 60),
    )
    if not re.fullmatch(r"[A-Za-z0-9_-]+", session.cookie_name):
        raise ConfigError(f"{s.key('cookie_name')}: letters, digits, '-' and '_' only")
    if session.step_up > session.absolute_timeout:
        raise ConfigError(f"{s.key('step_up')}: must not exceed session.absolute_timeout")
    if session.inactivity_timeout > session.absolute_timeout:
        raise ConfigError(f"{s.key('inactivity_timeout')}: must not exceed session.absolute_timeout")
    s.finish()

    p = top.table("primary")
    methods = p.strings("methods", ("forms",))
    for m in methods:
        if m not in PRIMARY_METHODS:
            raise ConfigError(f"{p.key('methods')}: unknown method {m!r}; known: {', '.join(PRIMARY_METHODS)}")
    primary = PrimaryConfig(
        methods=methods,
        remote_user_strip_domain=p.get("remote_user_strip_domain", bool, True),
        remote_user_domains=tuple(d.lower() for d in p.strings("remote_user_domains", ())),
        remote_user_lowercase=p.get("remote_user_lowercase", bool, True),
    )
    p.finish()

    lockout = _regulation_config(top)

    t = top.table("totp")
    totp = TotpConfig(
        issuer=t.get("issuer", str, "mfa_middleware"),
        digits=t.integer("digits", 6, 6, 8),
        period=t.integer("period", 30, 15, 120),
        drift_steps=t.integer("drift_steps", 1, 0, 2),
    )
    t.finish()

    b = top.table("basic")
    realm = b.get("realm", str, "mfa_middleware")
    if not realm or any(c in realm for c in '"\\') or any(ord(c) < 0x20 for c in realm):
        raise ConfigError(f"{b.key('realm')}: must be non-empty, without quotes, backslashes or control characters")
    basic = BasicConfig(
        realm=realm,
        max_app_passwords=b.integer("max_app_passwords", 40, 1, 1000),
        admins_may_create=b.get("admins_may_create", bool, False),
        cache_ttl=b.duration("cache_ttl", 5 * 60),
        cache_size=b.integer("cache_size", 10_000, 0, 10_000_000),
    )
    b.finish()

    store = _store_config(top.table("store"), database, env)

    mt = top.table("methods")
    enabled = mt.strings("enabled", MethodsConfig.enabled)
    for kind in enabled:
        if kind not in KNOWN_METHODS:
            raise ConfigError(f"{mt.key('enabled')}: unknown method {kind!r}; "
                              f"known methods: {', '.join(KNOWN_METHODS)}")
    if len(set(enabled)) != len(enabled):
        raise ConfigError(f"{mt.key('enabled')}: lists a method twice")
    if not any(kind != "backup_codes" for kind in enabled):
        raise ConfigError(f"{mt.key('enabled')}: enable at least one method besides backup codes (for example "
                          "\"totp\"): backup codes only back up another method")
    remember_device = 0.0
    raw_remember = mt.get("remember_device", (str, int, bool), False)
    if raw_remember is not False:
        if raw_remember is True:
            raise ConfigError(f"{mt.key('remember_device')}: give a duration like \"14d\" (or false to turn it off)")
        remember_device = parse_duration(raw_remember, mt.key("remember_device"))
        if not 3600 <= remember_device <= MAX_REMEMBER_DEVICE:
            raise ConfigError(f"{mt.key('remember_device')}: must be between 1h and 365d, got {raw_remember!r}")
    me = mt.table("email")
    email_method = EmailMethodConfig(code_ttl=me.duration("code_ttl", 600),
                                     resend_after=me.duration("resend_after", 30),
                                     per_user_per_hour=me.integer("per_user_per_hour", 10, 1, 100),
                                     per_address_per_hour=me.integer("per_address_per_hour", 5, 1, 100))
    if not 60 <= email_method.code_ttl <= 3600:
        raise ConfigError(f"{me.key('code_ttl')}: must be between 1m and 1h, got {email_method.code_ttl:g} s")
    if not 10 <= email_method.resend_after <= 600:
        raise ConfigError(f"{me.key('resend_after')}: must be between 10s and 10m, got {email_method.resend_after:g} s")
    me.finish()
    sms_raw = mt.get("sms", dict, {})
    ms = _Reader({k: v for k, v in sms_raw.items() if k not in SEND_LIMIT_KEYS}, f"{mt.where}sms.", source)
    sms_method = SmsMethodConfig(code_ttl=ms.duration("code_ttl", 300),
                                 limits=parse_send_limits(sms_raw, source, f"{mt.where}sms."))
    if not 60 <= sms_method.code_ttl <= 900:
        raise ConfigError(f"{ms.key('code_ttl')}: must be between 1m and 15m, got {sms_method.code_ttl:g} s")
    ms.finish()
    mv = mt.table("voice")
    voice_method = VoiceMethodConfig(pin=mv.get("pin", bool, False))
    mv.finish()
    webauthn_method = _webauthn_config(mt.table("webauthn"), "webauthn" in enabled, base_dir)
    push_method = _push_config(mt.table("push"), env)
    methods_config = MethodsConfig(enabled=tuple(k for k in KNOWN_METHODS if k in enabled),
                                   max_authenticators=mt.integer("max_authenticators", 5, 1, 20),
                                   remember_device=remember_device, email=email_method, sms=sms_method,
                                   voice=voice_method, webauthn=webauthn_method, push=push_method)
    mt.finish()

    email_raw = top.get("email", dict, None)
    email = None if email_raw is None else email_config_from_dict(email_raw, source, env, base_dir)
    if "email" in methods_config.enabled and email is None:
        raise ConfigError(f"{mt.key('enabled')}: lists \"email\", so an [email] table must say how messages are "
                          "sent (gateway = \"smtp\" with host and from_address)")
    phone_raw = top.get("phone", dict, None)
    phone = None if phone_raw is None else phone_config_from_dict(phone_raw, source, env, base_dir)
    for phone_kind in ("sms", "mobile_voice", "voice"):
        if phone_kind in methods_config.enabled and phone is None:
            raise ConfigError(f"{mt.key('enabled')}: lists \"{phone_kind}\", so a [phone] table must say how texts "
                              "and calls are sent (gateway = \"twilio\" or \"webhook\", and allowed_countries)")
    if {"voice", "mobile_voice"} & set(methods_config.enabled) and phone is not None \
            and phone.gateway != "console" and phone.public_url is None:
        raise ConfigError(f"{source}: phone.public_url: required for the \"voice\" method: the address the provider "
                          "reaches this server at for the call's script and answers, such as "
                          "\"https://mfa.example.com\"")
    fraud = fraud_settings_from_dict(top.get("fraud", dict, {}), source, env)
    if fraud.notify_emails and email is None:
        raise ConfigError(f"{source}: fraud.notify_emails: fraud reports are emailed through the [email] table's "
                          "gateway; add an [email] table or remove notify_emails")
    dev_outbox = top.get("dev_outbox", bool, False)
    if dev_outbox and any(g is not None and g.gateway != "console" for g in (email, phone)):
        raise ConfigError(f"{top.key('dev_outbox')}: the outbox page is for the demo's console gateways only; "
                          "remove it when messages go through a real gateway")
    if dev_outbox and email is None and phone is None:
        raise ConfigError(f"{top.key('dev_outbox')}: there is no console gateway whose messages it could show")

    metrics = _metrics_config(top.table("metrics"), prefix)
    lg = top.table("logging")
    log_format, log_level = lg.get("format", str, "text"), lg.get("level", str, "INFO").upper()
    if log_format not in ("text", "json"):
        raise ConfigError(f"{lg.key('format')}: must be \"text\" or \"json\", got {log_format!r}")
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{lg.key('level')}: must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    lg.finish()
    logging_config = LoggingConfig(format=log_format, level=log_level)
    branding = _branding_config(top.table("branding"), base_dir)
    pages = _pages_config(top.table("pages"), base_dir)

    aliases = _network_aliases(top.table("networks"))
    trusted_networks = _network_list(top, "trusted_networks", aliases) or ()
    rules_raw = top.get("rules", list, [])
    rules = tuple(_rule(item, i, source, aliases) for i, item in enumerate(rules_raw))
    case_sensitive_paths = top.get("case_sensitive_paths", bool, False)
    paths = _paths_config(top.table("paths"), case_sensitive_paths)
    config = Config(
        secret_keys=secret_keys, encryption_keys=encryption_keys, database=database,
        default_policy=default_policy, prefix=prefix, rules=rules, session=session, primary=primary,
        lockout=lockout, totp=totp, basic=basic, store=store, metrics=metrics,
        logging=logging_config, methods=methods_config,
        email=email,
        phone=phone,
        fraud=fraud,
        dev_outbox=dev_outbox,
        trusted_proxies=proxies,
        case_sensitive_paths=case_sensitive_paths, paths=paths,
        site_name=top.get("site_name", str, "Secure sign-in"), branding=branding, pages=pages, source=source,
        networks=aliases, trusted_networks=trusted_networks,
    )
    top.finish()
    return config


#: page names under the prefix that a metrics ``path`` must not shadow
RESERVED_PAGES = frozenset({"", "login", "verify", "enroll", "step-up", "logout", "app-passwords", "dev", "methods",
                            "static", "auth", "health", "ready", "admin", "api"})


def _config_path(raw: str, base_dir: str | os.PathLike[str] | None) -> Path:
    """A path from the file: relative paths are relative to the configuration file's folder."""
    path = Path(raw).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path.resolve()


def _colour(reader: _Reader, name: str, default: str) -> str:
    value = reader.get(name, str, default)
    if not _HEX_COLOUR.fullmatch(value):
        raise ConfigError(f"{reader.key(name)}: must be a colour written #rrggbb (such as \"#0b5cad\"), got {value!r}")
    ratio = contrast_ratio(value, "#ffffff")
    if ratio < MIN_CONTRAST:
        raise ConfigError(f"{reader.key(name)}: {value} against white has a contrast ratio of {ratio:.2f}:1; "
                          f"WCAG AA needs at least {MIN_CONTRAST}:1 for text. Choose a darker colour")
    return str(value).lower()


def _branding_config(br: _Reader, base_dir: str | os.PathLike[str] | None) -> BrandingConfig:
    company = " ".join(br.get("company", str, "").split())
    if len(company) > 100:
        raise ConfigError(f"{br.key('company')}: at most 100 characters, got {len(company)}")
    logo: str | None = None
    raw_logo = br.get("logo", str, "")
    if raw_logo:
        path = _config_path(raw_logo, base_dir)
        if path.suffix.lower() not in LOGO_TYPES:
            raise ConfigError(f"{br.key('logo')}: must be an image file ({', '.join(sorted(LOGO_TYPES))}), "
                              f"got {raw_logo!r}")
        if not path.is_file():
            raise ConfigError(f"{br.key('logo')}: no such file: {path}")
        if path.stat().st_size > MAX_LOGO_BYTES:
            raise ConfigError(f"{br.key('logo')}: {path} is larger than {MAX_LOGO_BYTES // 1024} KiB; "
                              "use a smaller image")
        logo = str(path)
    home = br.get("home", str, "/")
    split = urlsplit(home)
    local = home.startswith("/") and not home.startswith("//") and "\\" not in home
    if not (local or (split.scheme in ("http", "https") and split.netloc)) or any(ord(c) < 0x21 for c in home):
        raise ConfigError(f"{br.key('home')}: must be a path on this site (\"/\", \"/portal/\") or an http(s) "
                          f"address, got {home!r}")
    branding = BrandingConfig(company=company, logo=logo, primary=_colour(br, "primary", BrandingConfig.primary),
                              accent=_colour(br, "accent", BrandingConfig.accent), home=home)
    br.finish()
    return branding


def _pages_config(pg: _Reader, base_dir: str | os.PathLike[str] | None) -> PagesConfig:
    raw = pg.get("templates", str, "")
    templates: str | None = None
    if raw:
        path = _config_path(raw, base_dir)
        if not path.is_dir():
            raise ConfigError(f"{pg.key('templates')}: no such folder: {path} (the folder of templates that "
                              "replace the package's own)")
        templates = str(path)
    pg.finish()
    return PagesConfig(templates=templates)


def _paths_config(pt: _Reader, case_sensitive_paths: bool) -> PathsConfig:
    windows = pt.get("windows", bool, False)
    if windows and case_sensitive_paths:
        raise ConfigError(f"{pt.key('windows')}: Windows and IIS read paths without regard to case, so rules must "
                          "match them that way too; remove case_sensitive_paths = true")
    pt.finish()
    return PathsConfig(windows=windows)


def _regulation_config(top: _Reader) -> LockoutConfig:
    """``[regulation.user]`` and ``[regulation.address]`` (each ``max_failures``, ``find_time``, ``ban_time``), or
    the older ``[lockout]`` table; not both. The 100-consecutive-failures lock holds whatever they say."""
    if "regulation" in top.data and "lockout" in top.data:
        raise ConfigError(f"{top.key('regulation')}: give either [regulation] or the older [lockout] table, not both")
    if "regulation" not in top.data:
        lo = top.table("lockout")
        find_time = lo.duration("reset_after", 15 * 60)
        lockout = LockoutConfig(
            # NIST SP 800-63B: no more than 100 consecutive failed attempts on one account.
            max_failures=lo.integer("max_failures", 10, 1, 100),
            reset_after=find_time,
            lock_for=lo.duration("lock_for", 15 * 60),
            max_failures_per_client=lo.integer("max_failures_per_client", 100, 0, 1_000_000),
            client_lock_for=lo.duration("client_lock_for", 15 * 60),
            client_reset_after=find_time,
        )
        lo.finish()
        return lockout
    rg = top.table("regulation")
    ru, ra = rg.table("user"), rg.table("address")
    rg.finish()
    lockout = LockoutConfig(
        # more than 100 is allowed, but pointless: 100 consecutive failures lock the account for good anyway
        max_failures=ru.integer("max_failures", 10, 1, 1_000_000),
        reset_after=ru.duration("find_time", 15 * 60),
        lock_for=ru.duration("ban_time", 15 * 60),
        max_failures_per_client=ra.integer("max_failures", 100, 0, 1_000_000),
        client_reset_after=ra.duration("find_time", 15 * 60),
        client_lock_for=ra.duration("ban_time", 15 * 60),
    )
    ru.finish()
    ra.finish()
    return lockout


def _store_config(st: _Reader, database: str, env: Mapping[str, str]) -> StoreConfig:
    timeout, busy_timeout = st.duration("timeout", 3), st.duration("busy_timeout", 2)
    for name, value in (("timeout", timeout), ("busy_timeout", busy_timeout)):
        if not 0.1 <= value <= 600:
            raise ConfigError(f"{st.key(name)}: must be between 100ms and 10m, got {value:g} s")
    pool_timeout = st.duration("pool_timeout", timeout) if "pool_timeout" in st.data else None
    st.used.add("pool_timeout")
    if pool_timeout is not None and not 0.1 <= pool_timeout <= timeout:
        raise ConfigError(f"{st.key('pool_timeout')}: must be between 100ms and store.timeout ({timeout:g} s): a "
                          f"request never waits longer than that in all; got {pool_timeout:g} s")
    pool_recycle = st.duration("pool_recycle", 0) if "pool_recycle" in st.data else None
    st.used.add("pool_recycle")
    if pool_recycle is not None and pool_recycle < 60:
        raise ConfigError(f"{st.key('pool_recycle')}: must be at least 1m, got {pool_recycle:g} s")
    listen_url = st.get("listen_url", str, None)  # may hold a password: "env:NAME" reads it from the environment
    store = StoreConfig(timeout=timeout, busy_timeout=busy_timeout,
                        pool_size=st.integer("pool_size", 5, 1, 1000),
                        max_overflow=st.integer("max_overflow", 10, 0, 1000),
                        pool_timeout=pool_timeout, pool_recycle=pool_recycle,
                        transaction_pooler=st.get("transaction_pooler", bool, False),
                        listen_url=_secret(listen_url, st.key("listen_url"), env) if listen_url else None)
    if store.listen_url is not None and not (database.startswith("postgresql")
                                             and store.listen_url.startswith("postgresql")):
        raise ConfigError(f"{st.key('listen_url')}: a PostgreSQL URL (postgresql+psycopg://...), and only with a "
                          "PostgreSQL database")
    st.finish()
    return store


def _metrics_config(mt: _Reader, prefix: str) -> MetricsConfig:
    enabled = mt.get("enabled", bool, False)
    port = mt.get("port", int, None)
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{mt.key('port')}: must be between 1 and 65535, got {port}")
    host = mt.get("host", str, "127.0.0.1")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{mt.key('host')}: must be an IP address to listen on, got {host!r}") from None
    path = mt.get("path", str, None)
    if path is not None:
        rest = path[len(prefix) + 1:] if path.startswith(prefix + "/") else None
        if rest is None or not re.fullmatch(r"[A-Za-z0-9._-]+", rest):
            raise ConfigError(f"{mt.key('path')}: must be one page under the prefix, such as \"{prefix}/metrics\"; "
                              f"got {path!r}")
        if rest.lower() in RESERVED_PAGES:
            raise ConfigError(f"{mt.key('path')}: {path!r} is a sign-in page's address; choose another name")
    networks = mt.strings("networks", MetricsConfig.networks)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"{mt.key('networks')}: {network!r} is not an IP address or network") from None
    if enabled and port is None and path is None:
        raise ConfigError(f"{mt.key('enabled')}: say where metrics are served: port (their own HTTP server) or "
                          f"path (a page such as \"{prefix}/metrics\"), or both")
    config = MetricsConfig(enabled=enabled, port=port, host=host, path=path, networks=networks)
    mt.finish()
    return config


def _check_fernet(keys: tuple[str, ...], where: str) -> None:
    from cryptography.fernet import Fernet

    for key in keys:
        try:
            Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise ConfigError(f"{where}: not a valid key (32 url-safe base64-encoded bytes; "
                              "`mfa-admin init` generates one)") from None


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate a TOML configuration file; raises :class:`ConfigError` naming the file and key."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    config = config_from_dict(data, source=str(file), environ=environ, base_dir=file.parent)
    return _resolve_sqlite_path(config, file.parent)


def _resolve_sqlite_path(config: Config, base: Path) -> Config:
    """A relative SQLite path in the file is relative to the file's folder, not to the working directory."""
    from dataclasses import replace

    prefix = "sqlite:///"
    db = config.database
    if db.startswith(prefix) and not db.startswith(prefix + "/") and db[len(prefix):] not in ("", ":memory:"):
        return replace(config, database=prefix + str((base / db[len(prefix):]).resolve()))
    return config
