"""Notification emails to a user about changes to their own sign-in settings (the security info page).

Rules:

- Sent only when an email gateway is configured (``[email]``) and the user has an email address; otherwise
  nothing happens and nothing is audited.
- Sending never fails the change: the message goes out on a background thread after the change was stored, and a
  gateway error (or a store error while auditing the result) is logged and swallowed there. Each attempt is
  audited (``notify`` / ``sent`` or ``failed``) with the change it was about, never with the message text.
- The message says what changed, when, from which address and device, and what to do if it was not the user;
  it never holds a secret (no app password, no backup code).
"""

from __future__ import annotations

import html
import logging
import threading
from datetime import UTC, datetime

from ..gateways import EmailGateway, GatewayUnavailable
from ..gateways.base import OutgoingEmail
from ..store import StoreUnavailable, UserRecord
from .audit import AuditLog
from .devices import device_name

log = logging.getLogger("mfa_middleware.notices")


class AccountNotices:
    def __init__(self, gateway: EmailGateway | None, audit: AuditLog, *, site_name: str) -> None:
        self.gateway = gateway
        self.audit = audit
        self.site_name = site_name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def notify(self, user: UserRecord, change: str, *, reason: str, client_ip: str, user_agent: str,
               now: float) -> bool:
        """Tell ``user`` that ``change`` (one sentence, e.g. "An app password named "Outlook" was created.")
        happened; returns whether a message was queued. ``reason`` is the short key the audit row keeps."""
        if self.gateway is None or not user.email:
            return False
        when = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        device = device_name(user_agent)
        text = (f"Hello {user.display_name or user.username},\n\n{change}\n\nWhen: {when}\n"
                f"From: {client_ip or 'unknown'} ({device})\n\n"
                f"If this was you, there is nothing to do. If it was not, sign in to {self.site_name},"
                " open Security info, sign out your other sessions and change your password, or contact your "
                "helpdesk.\n")
        body = "".join(f"<p>{html.escape(line)}</p>" for line in text.strip().split("\n\n"))
        try:
            message = OutgoingEmail(to=user.email, subject=f"{self.site_name}: your security info changed",
                                    text=text, html=f"<!doctype html><html><body>{body}</body></html>")
        except ValueError as exc:
            log.warning("security notice for %s not sent: %s", user.username, exc)
            return False
        thread = threading.Thread(target=self._send, args=(user, message, reason, client_ip, user_agent, now),
                                  name="mfa-account-notice", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return True

    def _send(self, user: UserRecord, message: OutgoingEmail, reason: str, client_ip: str, user_agent: str,
              now: float) -> None:
        gateway = self.gateway
        assert gateway is not None
        try:
            gateway.send(message)
            result = "sent"
        except (GatewayUnavailable, OSError, ValueError) as exc:
            log.warning("security notice for %s not sent: %s", user.username, exc)
            result = "failed"
        try:
            self.audit.write("notify", result, now=now, actor=user.username, username=user.username,
                             client_ip=client_ip, user_agent=user_agent, reason=reason, channel="email")
        except StoreUnavailable:
            pass  # the audit log already logged it; a notice never fails anything

    def wait(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds each) for the notices under way: for tests and orderly shutdown."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
