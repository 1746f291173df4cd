"""Caps on texts and calls, against SMS pumping and toll fraud.

A phone method (text message code, phone call) asks :meth:`PhoneSendGuard.reserve` before every send - sign-in,
"Send again", proving a number at enrollment - and sends only when it returns ``None``. The reservation is
counted at once and atomically (:meth:`~mfa_middleware.store.Store.reserve_phone_send`), so concurrent requests
never pass the last slot together, on one server or many.

Rules:

- **Every send counts, whatever the gateway answered.** There is no way to give a reservation back: a send that
  the gateway refused or timed out on may still have reached the provider, and an attacker who makes sends fail
  must not get free retries.
- **Caps** (:class:`SendLimits`, all configurable; 0 = no cap for the ``per_*`` caps): a minimum interval between
  two sends to the same user for the same purpose on the same channel (default 30 s: "Send again" waits; a
  call right after a text is not a resend), and sliding-hour and sliding-day caps, over both channels, per user
  (5/20), per number (5/20, across users) and per country of the number (200/1000, across users: pumping attacks
  pick premium-rate countries).
- **No phone number in the table, the audit log or a log line.** The table keys numbers by HMAC-SHA256 of the
  E.164 form under ``number_key_secret`` (a key kept outside the database, stable across restarts: another key
  starts every number's count afresh); audit rows carry a masked form (``+•••••••••89``) at most.
- A refused send writes an audit row ``phone`` / ``capped`` naming the cap; an allowed one writes nothing here
  (the method audits the send itself, with the gateway's result).

Configuration (inside a method's table, such as ``[methods.sms]``; read by :func:`parse_send_limits`)::

    resend_after = "30s"          # min_interval, between 1 s and 1 h
    per_user_per_hour = 5         # 0: no cap
    per_user_per_day = 20
    per_number_per_hour = 5
    per_number_per_day = 20
    per_country_per_hour = 200
    per_country_per_day = 1000
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from typing import Any

# The module, not its names: mfa_middleware.config may import the method configs while it is being initialised.
from .. import config as base_config
from ..store import Store, UserRecord
from ..store.sql import (PHONE_CHANNELS, SEND_PURPOSES, PhoneChannel, SendLimitName, SendLimits, SendPurpose,
                         SendRefusal)
from .audit import AuditLog

#: the keys :func:`parse_send_limits` reads from a method's table (mark them used in the caller's reader)
SEND_LIMIT_KEYS: tuple[str, ...] = ("resend_after", "per_user_per_hour", "per_user_per_day", "per_number_per_hour",
                                    "per_number_per_day", "per_country_per_hour", "per_country_per_day")
MAX_CAP = 1_000_000
#: "You can ask for a new code in N seconds" for refusals shorter than this; longer ones name the cap
SHORT_WAIT = 120.0

_CAP_FIELDS: tuple[tuple[str, str], ...] = (
    ("per_user_per_hour", "per_user_hour"), ("per_user_per_day", "per_user_day"),
    ("per_number_per_hour", "per_number_hour"), ("per_number_per_day", "per_number_day"),
    ("per_country_per_hour", "per_country_hour"), ("per_country_per_day", "per_country_day"),
)


def parse_send_limits(raw_table: Mapping[str, Any], source: str, key_prefix: str) -> SendLimits:
    """Read the cap keys (:data:`SEND_LIMIT_KEYS`) of a method's table; other keys are left to the caller.

    ``source`` names the file and ``key_prefix`` the table (``"methods.sms."``) in error messages, which raise
    :class:`~mfa_middleware.config.ConfigError`: ``mfa.toml: methods.sms.per_user_per_hour: must be between 0 and
    1000000, got -1``. An hourly cap above the daily one of the same kind (both set) is an error too.
    """
    if not isinstance(raw_table, Mapping):
        raise base_config.ConfigError(f"{source}: {key_prefix.rstrip('.')}: expected a table")
    subset = {k: raw_table[k] for k in SEND_LIMIT_KEYS if k in raw_table}
    r = base_config._Reader(subset, key_prefix, source)
    min_interval = r.duration("resend_after", 30.0)
    if not 1 <= min_interval <= 3600:
        raise base_config.ConfigError(f"{r.key('resend_after')}: must be between 1s and 1h, got {min_interval:g} s")
    values = {field: r.integer(key, getattr(SendLimits(), field), 0, MAX_CAP) for key, field in _CAP_FIELDS}
    for kind in ("user", "number", "country"):
        hour, day = values[f"per_{kind}_hour"], values[f"per_{kind}_day"]
        if hour and day and hour > day:
            raise base_config.ConfigError(f"{r.key(f'per_{kind}_per_hour')}: {hour} is more than "
                                          f"per_{kind}_per_day ({day}); the daily cap would make it unreachable")
    r.finish()
    return SendLimits(min_interval=min_interval, **values)


def number_key(secret: bytes, e164: str) -> str:
    """The digest that stands for a phone number in the store: hex HMAC-SHA256 of its E.164 form (64 chars)."""
    return hmac.new(secret, e164.encode("ascii", "strict"), hashlib.sha256).hexdigest()


def mask_for_audit(e164: str) -> str:
    """``+447700900089`` -> ``+•••••••••89``: the last two digits only, the length kept."""
    digits = e164.lstrip("+")
    return "+" + "•" * max(0, len(digits) - 2) + digits[-2:]


def user_message(refusal: SendRefusal) -> str:
    """Words for the end user about a refused send (no cap values, which would help an attacker pace sends)."""
    wait = max(1, math.ceil(refusal.retry_after))
    if refusal.limit == "min_interval" or wait <= SHORT_WAIT:
        unit = "second" if wait == 1 else "seconds"
        return f"You can ask for a new code in {wait} {unit}."
    by_whom: dict[SendLimitName, str] = {
        "user_hour": "Too many codes were sent to you in the last hour. Try again later or use another method.",
        "user_day": "Too many codes were sent to you today. Try again tomorrow or use another method.",
        "number_hour": "Too many codes were sent to this number in the last hour. Try again later or use another "
                       "method.",
        "number_day": "Too many codes were sent to this number today. Try again tomorrow or use another method.",
        "country_hour": "We cannot send codes to this country right now. Try again later or use another method.",
        "country_day": "We cannot send more codes to this country today. Try again tomorrow or use another method.",
    }
    return by_whom.get(refusal.limit, "Too many codes were sent. Try again later or use another method.")


class PhoneSendGuard:
    """Reserves texts and calls against the caps; built once by the runtime, shared by the phone methods.

    ``number_key_secret``: at least 16 bytes, kept outside the database (derive it from the encryption key with a
    purpose label, for instance), and the same on every server and across restarts.
    """

    def __init__(self, store: Store, audit: AuditLog, number_key_secret: bytes,
                 limits: SendLimits | None = None) -> None:
        if len(number_key_secret) < 16:
            raise ValueError("number_key_secret must be at least 16 bytes")
        self.store = store
        self.audit = audit
        self._secret = number_key_secret
        self.limits = limits if limits is not None else SendLimits()

    def number_key(self, e164: str) -> str:
        return number_key(self._secret, e164)

    @staticmethod
    def user_message(refusal: SendRefusal) -> str:
        """Words for the end user (see :func:`user_message`)."""
        return user_message(refusal)

    def reserve(self, user: UserRecord, e164: str, country: str, channel: PhoneChannel, purpose: SendPurpose, *,
                now: float, limits: SendLimits | None = None, client_ip: str | None = None,
                user_agent: str | None = None) -> SendRefusal | None:
        """Count one send to ``e164`` (already parsed and allowed by the caller) in ``country`` (ISO region, such
        as ``"GB"``), or refuse it.

        *When it runs*: in a request thread, right before the gateway is asked to send; never on a page render.
        *Returns*: ``None`` when the send is counted (send it now; it stays counted whatever the gateway does),
        or a :class:`SendRefusal` (send nothing; show :func:`user_message`). ``limits`` overrides the guard's
        own (a method with its own table). *Raises*: ``ValueError`` for a channel, purpose or number that is not
        one; :class:`~mfa_middleware.store.StoreUnavailable` (fail closed: no send).
        """
        if channel not in PHONE_CHANNELS or purpose not in SEND_PURPOSES:
            raise ValueError(f"channel must be one of {PHONE_CHANNELS} and purpose one of {SEND_PURPOSES}")
        if not (e164.startswith("+") and e164[1:].isdigit() and 2 <= len(e164) <= 16):
            raise ValueError("expected a number in E.164 form (+ and up to 15 digits)")
        region = country.strip().upper()
        refusal = self.store.reserve_phone_send(user.id, self.number_key(e164), region, channel, purpose, now=now,
                                                limits=limits if limits is not None else self.limits)
        if refusal is not None:
            self.audit.write("phone", "capped", now=now, actor=user.username, username=user.username,
                             client_ip=client_ip, user_agent=user_agent, limit=refusal.limit, channel=channel,
                             purpose=purpose, country=region, number=mask_for_audit(e164),
                             retry_after=round(refusal.retry_after))
        return refusal


__all__ = ["SEND_LIMIT_KEYS", "PhoneSendGuard", "SendLimits", "SendRefusal", "mask_for_audit", "number_key",
           "parse_send_limits", "user_message"]
