"""The phone gateway protocol: how a factor sends a text message or places a call.

A gateway is the one place that talks to a telephony provider. Factors (the text-message code, the phone call)
call :meth:`PhoneGateway.send_text` or :meth:`PhoneGateway.place_call` with an E.164 number that
:func:`~mfa_middleware.phone.parse_phone` produced, and get back the provider's id for the message or call.

Trust model:

- A gateway never retries on its own, at any layer (no HTTP retries, no redirects followed). A retry after an
  ambiguous failure (the provider took the request but the answer was lost) could text a code twice or ring a
  phone twice; "Send again" and "Call again" are the user's decision, rate-limited and capped by the factor.
- A call is driven by our own ``/_mfa/`` endpoint: the gateway hands the provider ``script_url`` (it fetches
  the call script there when the call connects) and ``status_url`` (it reports how the call ended there). The
  factor makes both URLs carry a one-time, signed challenge id and checks the provider's signature on every
  callback (:func:`~mfa_middleware.gateways.phone.twilio.check_twilio_signature`,
  :func:`~mfa_middleware.gateways.phone.webhook.check_webhook_signature`).
- Nothing secret reaches a log line or an exception message: no message body (it holds the code), no auth
  token, no webhook secret, no full number. Gateways log the masked number and the ``reference`` only.
  ``reference`` is the factor's own opaque id for the attempt (a challenge id, not a secret), checked here to be
  short and printable so it cannot forge a log line.
"""

from __future__ import annotations

import re
from typing import Literal, Protocol, runtime_checkable

from ...phone.numbers import is_e164
from ..base import GatewayUnavailable

__all__ = ["GatewayRefused", "GatewayUnavailable", "PhoneGateway", "check_extension", "check_recipient",
           "check_reference"]

PhoneGatewayKind = Literal["console", "twilio", "webhook"]
MAX_EXTENSION_DIGITS = 10
_REFERENCE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class GatewayRefused(GatewayUnavailable):
    """The provider answered and refused this one request (HTTP 4xx other than an account problem).

    Typically the number: not reachable, not a mobile, a country the provider's account may not call, an
    unsubscribed recipient. Trying again will not help; the user should check the number or use another method.
    ``status`` is the HTTP status and ``provider_code`` the provider's error code when it gave one (Twilio:
    ``21211`` invalid To number, ``21610`` unsubscribed, ...). The message names the status and code only, never
    the number or the provider's own text (which may repeat the number), so it may be logged.
    """

    def __init__(self, message: str, *, status: int, provider_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.provider_code = provider_code


def check_recipient(to_e164: str) -> str:
    """Return ``to_e164`` if it is a canonical, valid E.164 number, else raise ``ValueError`` (a bug in the caller)."""
    if not isinstance(to_e164, str) or not is_e164(to_e164):
        raise ValueError("the recipient must be a valid E.164 number such as +447400123456")
    return to_e164


def check_reference(reference: str) -> str:
    """Return ``reference`` if it is 1-128 characters of ``A-Z a-z 0-9 . _ : -``, else raise ``ValueError``."""
    if not isinstance(reference, str) or not _REFERENCE.fullmatch(reference):
        raise ValueError("reference must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
    return reference


def check_extension(extension: str | None) -> str | None:
    """Return ``extension`` if it is ``None`` or 1-10 ASCII digits, else raise ``ValueError``."""
    if extension is None:
        return None
    if not isinstance(extension, str) or not extension.isascii() or not extension.isdigit() \
            or len(extension) > MAX_EXTENSION_DIGITS:
        raise ValueError(f"an extension must be 1 to {MAX_EXTENSION_DIGITS} digits")
    return extension


@runtime_checkable
class PhoneGateway(Protocol):
    """Sends text messages and places calls through one provider (development console, Twilio, a webhook).

    Built once at start-up by :func:`~mfa_middleware.gateways.phone.build_phone_gateway` and shared by every
    request thread, so both methods must be safe to call from several threads at once.
    """

    kind: str  # "console", "twilio" or "webhook"

    def send_text(self, to_e164: str, body: str, *, reference: str) -> str:
        """Hand one text message to the provider and return the provider's message id.

        *When it runs*: in a request thread of the pages app, when the text-message factor sends a code (sign-in,
        "Send again", proving a number at enrollment), after the factor has checked its caps. It blocks for at
        most about the gateway's configured timeout per network step.

        *What it gets*: ``to_e164``, a canonical E.164 number; ``body``, the full text (it holds the code, so it
        is never logged); ``reference``, the factor's id for this attempt (logged, sent to the provider where it
        has a field for it).

        *What it returns*: the provider's id for the message (Twilio: ``SM...``) once the provider accepted it.
        Acceptance is not delivery.

        *What it may raise*: ``ValueError`` for a malformed argument (a bug in the caller);
        :class:`GatewayRefused` when the provider refused this request (bad number: tell the user);
        :class:`GatewayUnavailable` when the provider could not be reached, timed out, answered 5xx, refused the
        account's credentials or answered something unreadable (fail closed, offer the other methods). Never
        retries, so a caller that gets an exception may offer "Send again" without a double send by the gateway.
        """
        ...

    def place_call(self, to_e164: str, *, extension: str | None, script_url: str, status_url: str,
                   reference: str, timeout: int) -> str:
        """Ask the provider to call ``to_e164`` and return the provider's call id.

        *What it gets*: ``extension`` (1-10 digits or ``None``) is dialled after the call connects (office
        phones); ``script_url`` is our endpoint the provider fetches the call script from when the call is
        answered (TwiML for Twilio-compatible providers); ``status_url`` is where the provider reports the end of
        the call (completed, busy, no-answer, failed); ``timeout`` is how many seconds the phone may ring.

        *What it returns*: the provider's call id (Twilio: ``CA...``), which the callbacks carry too, as soon as
        the provider has queued the call. The answer arrives later, on ``script_url``'s action and on
        ``status_url``.

        *What it may raise*: as :meth:`send_text`.
        """
        ...
