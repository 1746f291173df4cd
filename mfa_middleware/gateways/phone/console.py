"""A development phone gateway: texts and calls go to the log (masked) and to a bounded in-memory outbox.

For ``mfa-middleware demo`` and local development only; it reaches no phone. Each text and call is logged at
INFO on the ``mfa_middleware.gateways.phone`` logger with the masked number and the reference only (never the
body: the code is read on the demo-only outbox page, which lists :meth:`ConsolePhoneGateway.texts`). A call
waits in :meth:`ConsolePhoneGateway.calls` until the outbox page's keypad answers it with
:meth:`ConsolePhoneGateway.record_answer`; the factor's polling then reads the answer with
:meth:`ConsolePhoneGateway.call`.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ...phone.numbers import mask_e164
from .base import check_extension, check_recipient, check_reference

log = logging.getLogger("mfa_middleware.gateways.phone")

DEFAULT_OUTBOX_SIZE = 50
MAX_ANSWER_CHARS = 32
_KEYPAD = frozenset("0123456789*#")


@dataclass(frozen=True, slots=True)
class ConsoleText:
    """One text message as the console gateway "sent" it."""

    id: str  # "SM" + 32 hex, shaped like a provider id
    to: str  # E.164
    masked: str
    body: str
    reference: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ConsoleCall:
    """One call as the console gateway "placed" it; ``digits`` stays ``None`` until someone answers."""

    id: str  # "CA" + 32 hex
    to: str
    masked: str
    extension: str | None
    script_url: str
    status_url: str
    reference: str
    timeout: int
    at: datetime
    digits: str | None = None  # keys pressed, as typed on the keypad ("#", "0#", "1234#")
    answered_at: datetime | None = None


class ConsolePhoneGateway:
    """Keeps the last ``outbox_size`` texts and the last ``outbox_size`` calls; never raises
    :class:`~mfa_middleware.gateways.base.GatewayUnavailable`. Thread-safe."""

    kind = "console"

    def __init__(self, outbox_size: int = DEFAULT_OUTBOX_SIZE, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if outbox_size < 1:
            raise ValueError(f"outbox size must be at least 1, got {outbox_size}")
        self.outbox_size = outbox_size
        self._clock = clock
        self._lock = threading.Lock()
        self._texts: OrderedDict[str, ConsoleText] = OrderedDict()
        self._calls: OrderedDict[str, ConsoleCall] = OrderedDict()

    def __repr__(self) -> str:
        return f"ConsolePhoneGateway(outbox_size={self.outbox_size})"

    def send_text(self, to_e164: str, body: str, *, reference: str) -> str:
        check_recipient(to_e164)
        check_reference(reference)
        if not isinstance(body, str) or not body:
            raise ValueError("a text message needs a body")
        entry = ConsoleText(id="SM" + secrets.token_hex(16), to=to_e164, masked=mask_e164(to_e164), body=body,
                            reference=reference, at=self._clock())
        with self._lock:
            self._texts[entry.id] = entry
            while len(self._texts) > self.outbox_size:
                self._texts.popitem(last=False)
        log.info("console text (not sent) to %s, reference %s, id %s", entry.masked, reference, entry.id)
        return entry.id

    def place_call(self, to_e164: str, *, extension: str | None, script_url: str, status_url: str,
                   reference: str, timeout: int) -> str:
        check_recipient(to_e164)
        check_reference(reference)
        check_extension(extension)
        if timeout < 1:
            raise ValueError("timeout must be at least 1 second")
        entry = ConsoleCall(id="CA" + secrets.token_hex(16), to=to_e164, masked=mask_e164(to_e164),
                            extension=extension, script_url=script_url, status_url=status_url,
                            reference=reference, timeout=timeout, at=self._clock())
        with self._lock:
            self._calls[entry.id] = entry
            while len(self._calls) > self.outbox_size:
                self._calls.popitem(last=False)
        log.info("console call (not placed) to %s, reference %s, id %s", entry.masked, reference, entry.id)
        return entry.id

    def texts(self) -> tuple[ConsoleText, ...]:
        """A snapshot, newest first."""
        with self._lock:
            return tuple(reversed(self._texts.values()))

    def calls(self) -> tuple[ConsoleCall, ...]:
        """A snapshot, newest first."""
        with self._lock:
            return tuple(reversed(self._calls.values()))

    def call(self, call_id: str) -> ConsoleCall | None:
        """The call with this id, or ``None`` when it is unknown or has dropped out of the outbox."""
        with self._lock:
            return self._calls.get(call_id)

    def record_answer(self, call_id: str, digits: str) -> ConsoleCall:
        """Record the keys pressed on the outbox keypad for a call (``"#"``, ``"0#"``, ``"1234#"``).

        Only the first answer counts, as on a real call: a second answer raises ``ValueError``, as does an
        unknown call id or a key outside ``0-9 * #`` (at most 32 keys). Returns the updated call.
        """
        if not isinstance(digits, str) or len(digits) > MAX_ANSWER_CHARS or not set(digits) <= _KEYPAD:
            raise ValueError("digits must be keypad keys (0-9, * and #), at most 32")
        with self._lock:
            entry = self._calls.get(call_id)
            if entry is None:
                raise ValueError("no such call in the outbox")
            if entry.digits is not None:
                raise ValueError("this call has already been answered")
            entry = replace(entry, digits=digits, answered_at=self._clock())
            self._calls[call_id] = entry
        log.info("console call %s to %s answered, reference %s", call_id, entry.masked, entry.reference)
        return entry

    def clear(self) -> None:
        with self._lock:
            self._texts.clear()
            self._calls.clear()
