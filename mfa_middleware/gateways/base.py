"""The email gateway protocol: how a factor hands a message to the outside world.

A gateway is the one place that talks to a mail system. Factors (the email code, later the admin portal's
notices) build an :class:`OutgoingEmail` - recipient, subject, a plain-text body and an HTML body - and pass it
to :meth:`EmailGateway.send`; the gateway adds the envelope and headers (From with the site name, Date,
Message-ID, ``Auto-Submitted``) and delivers it. Rendering stays in the factor; sending stays here.

Trust model:

- The recipient is the one address in :attr:`OutgoingEmail.to`, checked to be a single bare ``local@domain``
  when the message is built: no display name, no list, no CR/LF. An address a user typed at enrollment can
  therefore never add a second recipient or a header.
- A gateway never reports success for a message it did not hand over, and never retries on its own: a retry
  after an ambiguous failure (the server took the data but the reply was lost) could deliver a one-time code
  twice, and "Send again" is the user's decision, rate-limited by the factor.
- Nothing secret reaches a log or an exception message: no SMTP password, and no message body (the body holds
  the code). :class:`GatewayUnavailable` messages name the server and the reason only. The development
  :class:`~mfa_middleware.gateways.console.ConsoleGateway` is the documented exception: it logs bodies so a
  developer can read the code, and must not be configured in production.
"""

from __future__ import annotations

import email.errors
import email.utils
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Protocol, runtime_checkable


class GatewayUnavailable(Exception):
    """The message could not be handed over; nothing was (knowingly) delivered.

    Raised for a refused or timed-out connection, a TLS failure (certificate not trusted, wrong host name, no
    STARTTLS offered), a failed login, a refused sender or recipient, or a refused message. The text names the
    server and the reason, never a password or the message body, so it may be logged; it is meant for
    operators, not for the end user (who gets a generic "we could not send the email" and the other methods).
    """


def check_address(value: str, what: str = "address") -> str:
    """Return ``value`` if it is exactly one bare email address (``local@domain``), else raise ``ValueError``.

    Refuses display names (``Ann <a@example.org>``), lists (``a@x, b@y``), whitespace, control characters and
    anything the standard library's address parser would silently shorten.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty email address")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{what} {value!r} must not contain spaces or control characters")
    try:
        parsed = Address(addr_spec=value)
    except (ValueError, IndexError, email.errors.HeaderParseError):  # the parser raises all three
        raise ValueError(f"{what} {value!r} is not a single email address like name@example.org") from None
    if not parsed.username or not parsed.domain or parsed.addr_spec != value or value.count("@") != 1:
        raise ValueError(f"{what} {value!r} is not a single email address like name@example.org")
    return value


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One message to one recipient, as a factor writes it (no headers beyond the subject).

    ``text`` and ``html`` are both required: every message goes out as ``multipart/alternative`` so that
    plain-text mail readers and screen readers get the same content. Bad values raise ``ValueError`` here, at
    construction, before any gateway sees them.
    """

    to: str
    subject: str
    text: str
    html: str

    def __post_init__(self) -> None:
        check_address(self.to, "recipient")
        if not self.subject or any(ch in self.subject for ch in "\r\n\0"):
            raise ValueError("subject must be one non-empty line")
        if not self.text.strip() or not self.html.strip():
            raise ValueError("a message needs both a plain-text and an HTML body")


def compose_message(outgoing: OutgoingEmail, *, from_address: str, site_name: str,
                    now: datetime) -> EmailMessage:
    """Build the MIME message a gateway sends: ``multipart/alternative`` (text, then HTML) with full headers.

    ``now`` must be timezone-aware (it becomes the Date header). The Message-ID uses the sender's domain, so it
    needs no DNS lookup of the local host name. ``Auto-Submitted: auto-generated`` (RFC 3834) and
    ``X-Auto-Response-Suppress`` keep vacation responders from answering a sign-in code.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    domain = from_address.rpartition("@")[2]
    message = EmailMessage()
    message["From"] = Address(display_name=site_name, addr_spec=from_address)
    message["To"] = Address(addr_spec=outgoing.to)
    message["Subject"] = outgoing.subject
    message["Date"] = email.utils.format_datetime(now)
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(outgoing.text)
    message.add_alternative(outgoing.html, subtype="html")
    return message


@runtime_checkable
class EmailGateway(Protocol):
    """Hands one message to a mail system (SMTP server, development console).

    Implementations are built once at start-up from :class:`~mfa_middleware.gateways.config.EmailConfig` by
    :func:`~mfa_middleware.gateways.build_email_gateway` and shared by every request thread, so ``send`` must
    be safe to call from several threads at once.
    """

    def send(self, message: OutgoingEmail) -> None:
        """Deliver ``message`` to its one recipient, or raise.

        *When it runs*: in a request thread of the pages app, when a factor sends a code (sign-in, "Send
        again", proving an address at enrollment) - never on a page render and never on the hot path. It
        blocks for at most about the gateway's configured timeout per network step.

        *What it gets*: a validated :class:`OutgoingEmail`; the gateway adds From (with the site name), Date,
        Message-ID and ``Auto-Submitted``.

        *What it returns*: ``None`` once the mail system has accepted the message for delivery (for SMTP: the
        server answered 250 to the end of DATA). Acceptance is not delivery to the inbox.

        *What it may raise*: :class:`GatewayUnavailable` when the message could not be handed over (connection
        refused, timeout, TLS failure, login failure, recipient or message refused). It never retries, so a
        caller that gets this exception may offer "Send again" without risking a double send by the gateway.
        Any other exception is a bug.
        """
        ...
