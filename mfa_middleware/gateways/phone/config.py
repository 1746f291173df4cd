"""The ``[phone]`` configuration table: parsed into a frozen :class:`PhoneConfig`.

Same rules as :mod:`mfa_middleware.config` (whose reader this reuses): every key is known, an unknown key, a
wrong type or a bad value raises :class:`~mfa_middleware.config.ConfigError` naming the file and the dotted key
(``mfa.toml: phone.from_number: must be an E.164 number ...``), and secrets may be written as ``"env:NAME"`` to
read them from the environment at load time.

```toml
[phone]
gateway = "twilio"              # or "webhook", or "console" (development: outbox page, nothing sent)
allowed_countries = ["GB", "IE"] # ISO codes; ["*"] for every country; default [] = phone numbers refused
default_region = "GB"           # optional: how numbers typed without +country code are read
language = "en-US"              # the language calls speak (BCP-47)
voice = "Polly.Amy"             # optional provider voice
call_timeout = "30s"            # how long a call rings (5s to 10m)
timeout = "10s"                 # HTTP timeout per network step (twilio, webhook)

# gateway = "twilio"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "env:MFA_TWILIO_TOKEN"
from_number = "+14155550100"    # E.164, a number of the account (calls, and texts without a service)
messaging_service_sid = "MG..." # optional: send texts through this messaging service
base_url = "https://api.twilio.com"  # optional, for compatible providers; https unless loopback

# gateway = "webhook"
url = "https://sms.internal.example.org/send"   # https unless loopback
secret = "env:MFA_PHONE_WEBHOOK_SECRET"         # at least 32 bytes

# gateway = "console"
outbox_size = 50
```

The keys of one gateway are errors under another, so a half-edited switch is noticed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import phonenumbers

# The module, not its names (see gateways/config.py): mfa_middleware.config imports this at its top.
from ... import config as base_config
from ...phone.numbers import is_e164
from ..smtp import is_loopback_host
from .base import PhoneGateway
from .console import DEFAULT_OUTBOX_SIZE, ConsolePhoneGateway
from .twilio import DEFAULT_BASE_URL, MAX_RING_SECONDS, MIN_RING_SECONDS, TwilioGateway
from .webhook import MIN_SECRET_BYTES, WebhookPhoneGateway

PhoneGatewayKind = Literal["console", "twilio", "webhook"]
GATEWAY_KINDS: tuple[PhoneGatewayKind, ...] = ("console", "twilio", "webhook")
COMMON_KEYS = ("gateway", "allowed_countries", "default_region", "language", "voice", "call_timeout")
GATEWAY_KEYS: dict[PhoneGatewayKind, tuple[str, ...]] = {
    "console": ("outbox_size",),
    "twilio": ("account_sid", "auth_token", "from_number", "messaging_service_sid", "base_url", "timeout"),
    "webhook": ("url", "secret", "timeout"),
}
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")
_VOICE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SID = re.compile(r"[A-Za-z]{2}[0-9a-fA-F]{32}")


@dataclass(frozen=True)
class PhoneConfig:
    gateway: PhoneGatewayKind
    allowed_countries: tuple[str, ...] = ()  # upper-case ISO codes, or ("*",); () refuses every number
    default_region: str | None = None
    language: str = "en-US"
    voice: str | None = None
    call_timeout: int = 30  # seconds of ringing
    #: the address the provider reaches this server at (``https://mfa.example.com``): the phone-call method's
    #: script and callback URLs are built from it, never from a request's Host header
    public_url: str | None = None
    timeout: float = 10.0  # HTTP, per network step
    account_sid: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    base_url: str = DEFAULT_BASE_URL
    url: str | None = None
    secret: str | None = field(default=None, repr=False)
    outbox_size: int = DEFAULT_OUTBOX_SIZE


def phone_config_from_dict(data: Mapping[str, Any], source: str = "<config>",
                           environ: Mapping[str, str] | None = None,
                           base_dir: str | os.PathLike[str] | None = None) -> PhoneConfig:
    """Parse the contents of the ``[phone]`` table.

    ``source`` names the file in error messages; ``environ`` resolves ``env:`` secrets (default
    ``os.environ``); ``base_dir`` is accepted for symmetry with the ``[email]`` table (no key here is a path).
    Raises :class:`ConfigError`.
    """
    del base_dir
    env = os.environ if environ is None else environ
    if not isinstance(data, Mapping):
        raise base_config.ConfigError(f"{source}: phone: expected a table")
    r = base_config._Reader(data, "phone.", source)
    if "gateway" not in data:
        raise base_config.ConfigError(f"{r.key('gateway')}: required, one of {', '.join(GATEWAY_KINDS)}")
    name = r.choice("gateway", GATEWAY_KINDS, "console")
    gateway: PhoneGatewayKind = next(kind for kind in GATEWAY_KINDS if kind == name)
    own = GATEWAY_KEYS[gateway]
    for other, keys in GATEWAY_KEYS.items():
        for key in keys:
            if key in data and key not in own:
                raise base_config.ConfigError(f"{r.key(key)}: only used with gateway = \"{other}\"")

    allowed = _allowed_countries(r)
    default_region = r.get("default_region", str, None)
    if default_region is not None:
        if default_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise base_config.ConfigError(f"{r.key('default_region')}: must be an ISO 3166 country code such as "
                                          f"\"GB\" or \"US\", got {default_region!r}")
        default_region = default_region.upper()
    language = r.get("language", str, "en-US")
    if not _LANGUAGE.fullmatch(language):
        raise base_config.ConfigError(f"{r.key('language')}: must be a language tag such as \"en-US\" or "
                                      f"\"fr-FR\", got {language!r}")
    voice = r.get("voice", str, None)
    if voice is not None and not _VOICE.fullmatch(voice):
        raise base_config.ConfigError(f"{r.key('voice')}: must be a voice name of the provider such as "
                                      f"\"Polly.Amy\" (letters, digits, '.', '_', '-'), got {voice!r}")
    ring = r.duration("call_timeout", 30.0)
    if not MIN_RING_SECONDS <= ring <= MAX_RING_SECONDS or ring != int(ring):
        raise base_config.ConfigError(f"{r.key('call_timeout')}: must be whole seconds between "
                                      f"{MIN_RING_SECONDS}s and 10m, got {ring:g} s")
    public_url = _https_url(r, "public_url", None).rstrip("/") if "public_url" in data else None
    if public_url is not None and urlsplit(public_url).path not in ("", "/") or (
            public_url is not None and (urlsplit(public_url).query or urlsplit(public_url).fragment)):
        raise base_config.ConfigError(f"{r.key('public_url')}: must be an origin such as "
                                      f"\"https://mfa.example.com\" (no path), got {public_url!r}")
    common: dict[str, Any] = {"allowed_countries": allowed, "default_region": default_region,
                              "language": language, "voice": voice, "call_timeout": int(ring),
                              "public_url": public_url}

    if gateway == "console":
        config = PhoneConfig(gateway="console", outbox_size=r.integer("outbox_size", DEFAULT_OUTBOX_SIZE, 1, 1000),
                             **common)
        r.finish()
        return config

    timeout = r.duration("timeout", 10.0)
    if not 1 <= timeout <= 300:
        raise base_config.ConfigError(f"{r.key('timeout')}: must be between 1s and 5m, got {timeout:g} s")

    if gateway == "webhook":
        url = _https_url(r, "url", None)
        raw_secret = r.get("secret", str, None)
        if not raw_secret:
            raise base_config.ConfigError(f"{r.key('secret')}: required, at least {MIN_SECRET_BYTES} bytes shared "
                                          "with the webhook service (write \"env:NAME\" to read it from the "
                                          "environment)")
        secret = base_config._secret(raw_secret, r.key("secret"), env)
        if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
            raise base_config.ConfigError(f"{r.key('secret')}: must be at least {MIN_SECRET_BYTES} bytes, got "
                                          f"{len(secret.encode('utf-8'))}")
        r.finish()
        return PhoneConfig(gateway="webhook", url=url, secret=secret, timeout=timeout, **common)

    account_sid = r.get("account_sid", str, None)
    if account_sid is None or not _SID.fullmatch(account_sid) or not account_sid.startswith("AC"):
        raise base_config.ConfigError(f"{r.key('account_sid')}: required, the account SID: \"AC\" and 32 hex "
                                      f"digits, got {account_sid!r}")
    raw_token = r.get("auth_token", str, None)
    if not raw_token:
        raise base_config.ConfigError(f"{r.key('auth_token')}: required (write \"env:NAME\" to read it from the "
                                      "environment)")
    auth_token = base_config._secret(raw_token, r.key("auth_token"), env)
    from_number = r.get("from_number", str, None)
    if from_number is None or not is_e164(from_number):
        raise base_config.ConfigError(f"{r.key('from_number')}: required, a number of the account in E.164 form "
                                      f"such as \"+14155550100\", got {from_number!r}")
    service = r.get("messaging_service_sid", str, None)
    if service is not None and (not _SID.fullmatch(service) or not service.startswith("MG")):
        raise base_config.ConfigError(f"{r.key('messaging_service_sid')}: must be \"MG\" and 32 hex digits, "
                                      f"got {service!r}")
    base_url = _https_url(r, "base_url", DEFAULT_BASE_URL)
    r.finish()
    return PhoneConfig(gateway="twilio", account_sid=account_sid, auth_token=auth_token, from_number=from_number,
                       messaging_service_sid=service, base_url=base_url.rstrip("/"), timeout=timeout, **common)


def build_phone_gateway(config: PhoneConfig) -> PhoneGateway:
    """The gateway ``config`` describes. ``config`` comes from :func:`phone_config_from_dict`, which has already
    checked every value, so this does not fail for a parsed configuration."""
    if config.gateway == "console":
        return ConsolePhoneGateway(outbox_size=config.outbox_size)
    if config.gateway == "webhook":
        assert config.url is not None and config.secret is not None, "a parsed webhook configuration has both"
        return WebhookPhoneGateway(config.url, config.secret, timeout=config.timeout)
    assert config.account_sid and config.auth_token and config.from_number, "a parsed twilio configuration"
    return TwilioGateway(config.account_sid, config.auth_token, config.from_number, base_url=config.base_url,
                         timeout=config.timeout, messaging_service_sid=config.messaging_service_sid)


def _allowed_countries(r: base_config._Reader) -> tuple[str, ...]:
    codes = r.strings("allowed_countries", ())
    if "*" in codes:
        if len(codes) > 1:
            raise base_config.ConfigError(f"{r.key('allowed_countries')}: \"*\" allows every country and cannot be "
                                          "combined with country codes")
        return ("*",)
    out: list[str] = []
    for code in codes:
        if code.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise base_config.ConfigError(f"{r.key('allowed_countries')}: {code!r} is not an ISO 3166 country "
                                          "code such as \"GB\" or \"US\" (or \"*\" for every country)")
        if code.upper() not in out:
            out.append(code.upper())
    return tuple(out)


def _https_url(r: base_config._Reader, name: str, default: str | None) -> str:
    value = r.get(name, str, default)
    if value is None:
        raise base_config.ConfigError(f"{r.key(name)}: required, an https URL")
    parts = urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or parts.username is not None or parts.password is not None \
            or any(ch.isspace() for ch in value):
        raise base_config.ConfigError(f"{r.key(name)}: must be an https URL without user name or password, got "
                                      f"{value!r}")
    if parts.scheme != "https" and not is_loopback_host(host):
        raise base_config.ConfigError(f"{r.key(name)}: must use https (plain http is allowed only for localhost "
                                      f"or a loopback address), got {value!r}")
    return str(value)
