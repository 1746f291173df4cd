"""A development email gateway: log the message and keep the last few in memory.

For ``mfa-middleware demo`` and local development only. It sends nothing: each message is logged at INFO on the
``mfa_middleware.gateways`` logger - body included, because the developer needs to read the code - and kept in
a bounded :class:`Outbox` that a demo-only page lists. Logging bodies breaks the rule that codes never reach a
log, which is why a real deployment configures ``gateway = "smtp"`` and the outbox page is refused at start-up
when a real gateway is configured.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .base import OutgoingEmail, check_address, compose_message

log = logging.getLogger("mfa_middleware.gateways")

DEFAULT_OUTBOX_SIZE = 50


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message as the console gateway "sent" it."""

    sent_at: datetime
    message_id: str
    sender: str  # the From header: site name and from address
    email: OutgoingEmail


class Outbox:
    """The last ``size`` messages, thread-safe; older ones drop off as new ones arrive."""

    def __init__(self, size: int = DEFAULT_OUTBOX_SIZE) -> None:
        if size < 1:
            raise ValueError(f"outbox size must be at least 1, got {size}")
        self.size = size
        self._entries: deque[OutboxEntry] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, entry: OutboxEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def messages(self) -> tuple[OutboxEntry, ...]:
        """A snapshot, newest first."""
        with self._lock:
            return tuple(reversed(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class ConsoleGateway:
    """Logs each message and keeps it in :attr:`outbox`; never raises :class:`GatewayUnavailable`.

    The message is composed exactly as :class:`~mfa_middleware.gateways.smtp.SmtpGateway` would compose it,
    so a bad message fails here as it would in production.
    """

    def __init__(self, *, site_name: str, from_address: str = "no-reply@localhost", outbox_size: int =
                 DEFAULT_OUTBOX_SIZE, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.site_name = site_name
        self.from_address = check_address(from_address, "from_address")
        self.outbox = Outbox(outbox_size)
        self._clock = clock

    def __repr__(self) -> str:
        return f"ConsoleGateway(outbox_size={self.outbox.size})"

    def send(self, message: OutgoingEmail) -> None:
        now = self._clock()
        mime = compose_message(message, from_address=self.from_address, site_name=self.site_name, now=now)
        entry = OutboxEntry(sent_at=now, message_id=str(mime["Message-ID"]), sender=str(mime["From"]),
                            email=message)
        self.outbox.add(entry)
        log.info("console email (not sent) to %s: %s\n%s", message.to, message.subject, message.text)
