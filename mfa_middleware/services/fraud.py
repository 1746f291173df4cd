"""Fraud reports: "this sign-in was not me", from a phone call answered with the fraud code (``0#``) or a denied push.

Rules:

- **A report always ends the attempt it answers.** :meth:`FraudReports.report` never says "go on": with reporting
  switched off (``allow_users_to_report = false``) it records nothing and returns
  :attr:`FraudResult.REPORTING_OFF`, and the caller still fails the attempt (the person who answered did not
  approve it) and shows the other methods.
- **One report per attempt.** ``reference`` names the challenge or attempt the report answers; it is stored as
  a SHA-256 digest (never the id itself) under a unique constraint, so a replayed report (a callback delivered
  twice, a double click) writes one row, blocks once and notifies once: the replay gets
  :attr:`FraudResult.REPLAYED` with the first report's facts.
- **Blocking** (``block_on_report``, default on): the user is blocked until ``now + block_for`` (default 90
  days) with the reason ``"fraud report"``, and every session and sign-in in progress ends (a user-wide
  revocation), in the same transaction as the report row (:meth:`~mfa_middleware.store.Store.add_fraud_report`).
  A longer block already in place is kept. The block ends when it expires or with ``mfa-admin user unblock``.
- **Notifications** go to administrators after the block is stored: a plain-text + HTML email to each
  ``notify_emails`` address (through the email gateway), and a JSON POST to ``notify_webhook_url`` signed with
  HMAC-SHA256 (below). Each is tried once (no retries: a retry after an ambiguous failure could notify twice), in
  the request thread, bounded by the gateway's timeout and ``webhook_timeout``. A failure is logged (the
  destination's host and the reason, never the secret or the body) and left out of the report's ``notified``
  column; it never undoes the block.
- Audit rows: ``fraud``/``reported`` (or ``fraud``/``refused`` when reporting is off) and, when the report
  blocked, ``user_block``/``success`` with the actor ``fraud-report``.

The webhook request::

    POST <notify_webhook_url>
    Content-Type: application/json
    X-MFA-Timestamp: <now as whole Unix seconds>
    X-MFA-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>

    {"event": "fraud_report", "report_id": 7, "username": "alice", "method": "phone_call", "at": 1800000000.0,
     "client_ip": "203.0.113.9", "user_agent": "...", "blocked_until": 1807776000.0, "site": "Contoso sign-in"}

A receiver recomputes the HMAC over the raw body, compares in constant time, and refuses timestamps more than a
few minutes from its own clock (a replayed request).

Configuration (the ``[fraud]`` table; every key optional)::

    [fraud]
    allow_users_to_report = true
    block_on_report = true
    block_for = "90d"                          # between 1 minute and 3650 days
    notify_emails = ["security@example.org"]   # needs the [email] table
    notify_webhook_url = "https://hooks.example.org/mfa"   # http only for localhost
    notify_webhook_secret = "env:MFA_FRAUD_WEBHOOK_SECRET"  # required with the URL, at least 16 characters
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, UTC
from enum import Enum
from html import escape
from typing import Any
from urllib.parse import urlsplit

# The module, not its names (see mfa_middleware.gateways.config): no import cycle with mfa_middleware.config.
from .. import config as base_config
from ..gateways.base import EmailGateway, GatewayUnavailable, OutgoingEmail, check_address
from ..gateways.smtp import is_loopback_host
from ..store import Store, UserRecord
from ..store.sql import FraudReportExists
from .audit import AuditLog

log = logging.getLogger("mfa_middleware.fraud")

BLOCK_REASON = "fraud report"
AUDIT_ACTOR = "fraud-report"
MIN_WEBHOOK_SECRET = 16
MAX_BLOCK_FOR = 3650 * 86400.0


@dataclass(frozen=True)
class FraudSettings:
    """The ``[fraud]`` table (:func:`fraud_settings_from_dict`)."""

    allow_users_to_report: bool = True
    block_on_report: bool = True
    block_for: float = 90 * 86400.0  # seconds
    notify_emails: tuple[str, ...] = ()
    notify_webhook_url: str | None = None
    notify_webhook_secret: str | None = field(default=None, repr=False)  # resolved from env: at load
    #: the keys a caller presses before ``#`` to report a call as fraud (``"0"``: ``0#``)
    code: str = "0"


def fraud_settings_from_dict(data: Mapping[str, Any], source: str = "<config>",
                             environ: Mapping[str, str] | None = None) -> FraudSettings:
    """Parse the contents of the ``[fraud]`` table.

    ``source`` names the file in error messages; ``environ`` resolves ``env:`` secrets (default ``os.environ``).
    Raises :class:`~mfa_middleware.config.ConfigError` naming the file and the dotted key, for an unknown key too.
    """
    env = os.environ if environ is None else environ
    if not isinstance(data, Mapping):
        raise base_config.ConfigError(f"{source}: fraud: expected a table")
    r = base_config._Reader(data, "fraud.", source)
    allow = bool(r.get("allow_users_to_report", bool, True))
    block = bool(r.get("block_on_report", bool, True))
    block_for = r.duration("block_for", 90 * 86400.0)
    if not 60 <= block_for <= MAX_BLOCK_FOR:
        raise base_config.ConfigError(f"{r.key('block_for')}: must be between 1m and 3650d, got {block_for:g} s")
    emails = r.strings("notify_emails", ())
    for address in emails:
        try:
            check_address(address, "address")
        except ValueError:
            raise base_config.ConfigError(f"{r.key('notify_emails')}: {address!r} is not a single email address "
                                          "like security@example.org") from None
    if len(set(emails)) != len(emails):
        raise base_config.ConfigError(f"{r.key('notify_emails')}: an address is listed twice")
    url = r.get("notify_webhook_url", str, None)
    raw_secret = r.get("notify_webhook_secret", str, None)
    if url is not None:
        _check_webhook_url(url, r.key("notify_webhook_url"))
        if raw_secret is None:
            raise base_config.ConfigError(f"{r.key('notify_webhook_secret')}: required with notify_webhook_url "
                                          "(write \"env:NAME\" to read it from the environment)")
    elif raw_secret is not None:
        raise base_config.ConfigError(f"{r.key('notify_webhook_secret')}: only used with notify_webhook_url")
    secret = None if raw_secret is None else base_config._secret(raw_secret, r.key("notify_webhook_secret"), env)
    if secret is not None and len(secret) < MIN_WEBHOOK_SECRET:
        raise base_config.ConfigError(f"{r.key('notify_webhook_secret')}: must be at least {MIN_WEBHOOK_SECRET} "
                                      "characters (a random string, such as 32 hex digits)")
    code = r.get("code", str, "0")
    if not (code.isascii() and code.isdigit() and 1 <= len(code) <= 4):
        raise base_config.ConfigError(f"{r.key('code')}: must be 1 to 4 digits pressed before # (such as \"0\"), "
                                      f"got {code!r}")
    r.finish()
    return FraudSettings(allow_users_to_report=allow, block_on_report=block, block_for=block_for,
                         notify_emails=emails, notify_webhook_url=url, notify_webhook_secret=secret, code=code)


def _check_webhook_url(url: str, where: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise base_config.ConfigError(f"{where}: {url!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not host or parts.username or parts.password \
            or any(ch.isspace() for ch in url):
        raise base_config.ConfigError(f"{where}: expected an https:// URL without user or password, got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise base_config.ConfigError(f"{where}: http:// is allowed only for localhost or a loopback address, "
                                      f"not {host!r}; use https://")


class FraudResult(Enum):
    REPORTED = "reported"  # a new report was recorded (and the user blocked, when configured)
    REPLAYED = "replayed"  # a report of this reference existed: nothing new was written or sent
    REPORTING_OFF = "reporting_off"  # allow_users_to_report is off: nothing was recorded


@dataclass(frozen=True, slots=True)
class FraudOutcome:
    """What :meth:`FraudReports.report` did. In every case the caller ends the attempt."""

    result: FraudResult
    report_id: int | None = None
    blocked_until: float | None = None  # the block this report set (None: not blocked by it)
    notified: tuple[str, ...] = ()  # "email:<address>", "webhook": the notifications that succeeded

    @property
    def message(self) -> str:
        """Words for the person who reported (the page after ``0#`` or "Deny, report fraud")."""
        if self.result is FraudResult.REPORTING_OFF:
            return "The sign-in was not approved. If you did not try to sign in, tell your helpdesk."
        if self.blocked_until is not None:
            return ("Thank you. The sign-in was stopped and reported, and the account is blocked to protect it. "
                    "Contact your helpdesk to unblock it.")
        return "Thank you. The sign-in was stopped and reported to your administrators."


def reference_digest(reference: str) -> str:
    """How a report's reference is stored: hex SHA-256 (64 characters)."""
    return hashlib.sha256(reference.encode("utf-8")).hexdigest()


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-MFA-Signature`` value of a webhook request: ``v1=<hex HMAC-SHA256(secret, ts + "." + body)>``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class FraudReports:
    """Records fraud reports, blocks, and notifies administrators. Built once by the runtime; thread-safe."""

    def __init__(self, store: Store, audit: AuditLog, settings: FraudSettings, *,
                 email_gateway: EmailGateway | None = None, site_name: str, webhook_timeout: float = 5.0) -> None:
        self.store = store
        self.audit = audit
        self.settings = settings
        self.email_gateway = email_gateway
        self.site_name = site_name
        self.webhook_timeout = webhook_timeout

    def report(self, user: UserRecord, method_kind: str, *, now: float, client_ip: str | None,
               user_agent: str | None, reference: str) -> FraudOutcome:
        """Record that ``user`` reported the attempt ``reference`` (a challenge or attempt id) as fraud.

        *When it runs*: in a request thread (the pages, or a gateway's answer callback) once the report is
        authentic - the caller has checked the callback's signature and that the challenge is the user's and
        still open. *Returns*: a :class:`FraudOutcome`; in every case the caller ends the attempt. *Raises*:
        :class:`~mfa_middleware.store.StoreUnavailable` when the report or the block could not be stored
        (fail closed: the caller ends the attempt with the 503 page); notification failures never raise.
        """
        s = self.settings
        if not s.allow_users_to_report:
            self.audit.write("fraud", "refused", now=now, actor=user.username, username=user.username,
                             client_ip=client_ip, user_agent=user_agent, method=method_kind,
                             reason="reporting is switched off")
            return FraudOutcome(FraudResult.REPORTING_OFF)
        until = now + s.block_for if s.block_on_report else None
        digest = reference_digest(reference)
        try:
            report_id = self.store.add_fraud_report(user.id, user.username, method_kind, now=now, reference=digest,
                                                    client_ip=client_ip, user_agent=user_agent, block_until=until,
                                                    block_reason=BLOCK_REASON)
        except FraudReportExists as exc:
            first = exc.existing
            log.info("fraud report %s for %s replayed; nothing new written", first.id, user.username)
            return FraudOutcome(FraudResult.REPLAYED, first.id, first.blocked_until, first.notified)
        self.audit.write("fraud", "reported", now=now, actor=user.username, username=user.username,
                         client_ip=client_ip, user_agent=user_agent, method=method_kind, report=report_id,
                         until=until)
        if until is not None:
            self.audit.write("user_block", "success", now=now, actor=AUDIT_ACTOR, username=user.username,
                             client_ip=client_ip, reason=BLOCK_REASON, until=until, report=report_id)
        facts = {"event": "fraud_report", "report_id": report_id, "username": user.username,
                 "method": method_kind, "at": now, "client_ip": client_ip, "user_agent": user_agent,
                 "blocked_until": until, "site": self.site_name}
        notified = self._notify_by_email(facts) + self._notify_by_webhook(facts, now)
        if notified:
            self.store.set_fraud_report_notified(report_id, notified)
        return FraudOutcome(FraudResult.REPORTED, report_id, until, notified)

    # -- notifications -------------------------------------------------------------------------------------------
    def _notify_by_email(self, facts: Mapping[str, Any]) -> tuple[str, ...]:
        addresses = self.settings.notify_emails
        if not addresses:
            return ()
        if self.email_gateway is None:
            log.warning("fraud report %s: notify_emails is set but no email gateway is configured ([email])",
                        facts["report_id"])
            return ()
        subject, text, html = self._email_body(facts)
        sent: list[str] = []
        for address in addresses:
            try:
                self.email_gateway.send(OutgoingEmail(to=address, subject=subject, text=text, html=html))
            except GatewayUnavailable as exc:
                log.warning("fraud report %s: email to %s failed: %s", facts["report_id"], address, exc)
                continue
            sent.append(f"email:{address}")
        return tuple(sent)

    def _email_body(self, facts: Mapping[str, Any]) -> tuple[str, str, str]:
        when = _utc(float(facts["at"]))
        until = facts["blocked_until"]
        blocked = (f"blocked until {_utc(float(until))} (lift it with `mfa-admin user unblock {facts['username']}`)"
                   if until is not None else "not blocked (block_on_report is off)")
        rows = [("User", str(facts["username"])), ("Method", str(facts["method"])), ("Time", when),
                ("Client address", str(facts["client_ip"] or "-")), ("User agent", str(facts["user_agent"] or "-")),
                ("Account", blocked), ("Report", f"#{facts['report_id']} (mfa-admin fraud list)")]
        subject = f"Fraud report: {facts['username']} ({self.site_name})"
        intro = (f"{facts['username']} reported a sign-in attempt at {self.site_name} as fraud: someone who knows "
                 "their password may be trying to sign in.")
        text = intro + "\n\n" + "\n".join(f"{k}: {v}" for k, v in rows) + "\n"
        html = (f"<p>{escape(intro)}</p><table>"
                + "".join(f"<tr><th align=\"left\">{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
                + "</table>")
        return subject, text, html

    def _notify_by_webhook(self, facts: Mapping[str, Any], now: float) -> tuple[str, ...]:
        url, secret = self.settings.notify_webhook_url, self.settings.notify_webhook_secret
        if url is None or secret is None:
            return ()
        import httpx

        body = json.dumps(dict(facts), sort_keys=True, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(now))
        headers = {"Content-Type": "application/json", "X-MFA-Timestamp": timestamp,
                   "X-MFA-Signature": sign_webhook(secret, timestamp, body), "User-Agent": "mfa_middleware"}
        host = urlsplit(url).hostname
        try:
            with httpx.Client(timeout=self.webhook_timeout, follow_redirects=False) as client:
                response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("fraud report %s: webhook to %s failed: %s", facts["report_id"], host, type(exc).__name__)
            return ()
        if not 200 <= response.status_code < 300:
            log.warning("fraud report %s: webhook to %s answered %s", facts["report_id"], host,
                        response.status_code)
            return ()
        return ("webhook",)


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


__all__ = ["BLOCK_REASON", "FraudOutcome", "FraudReports", "FraudResult", "FraudSettings", "fraud_settings_from_dict",
           "reference_digest", "sign_webhook"]
