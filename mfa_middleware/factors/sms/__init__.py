"""Text message code: a six-digit code sent by text to a mobile number the user proved at enrollment.

Rules:

- A number is parsed with ``phonenumbers`` (:func:`mfa_middleware.phone.parse_phone`): it must be a mobile number
  (or one that may be mobile) in a country of ``[phone] allowed_countries``; it is stored in E.164 form,
  encrypted at rest, and shown masked (``+44 •••• ••6789``) everywhere but at entry.
- A code is 6 digits from the CSPRNG, valid ``[methods.sms] code_ttl`` (5 minutes), bound to the sign-in attempt
  that asked for it, stored as a keyed digest (the key is derived from the encryption keys, outside the
  database). Accepting one code uses up every code of that attempt, in one transaction: a code works once.
- :meth:`SmsCodeFactor.begin` sends at most once per attempt (a page reload sends nothing). Every send, the
  first included, is first counted by :class:`~mfa_middleware.services.phone_limits.PhoneSendGuard`: at least
  ``resend_after`` (30 s) between two texts to a user, and caps per user, per number and per country, per hour
  and per day (against SMS pumping and toll fraud). A send the provider refused still counts. "Send a new code"
  never resets the failure count (it lives with the user, not with the code).
- Enrolling a number proves it: the method stays unconfirmed until the code sent to it comes back.
- The gateway being down raises :class:`~mfa_middleware.gateways.GatewayUnavailable`: the page says so and offers
  the other methods; it is never a pass. Every send writes an audit row (masked number, never the code).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from ...gateways import GatewayUnavailable
from ...gateways.phone import PhoneGateway
from ...phone import PhoneNumberError, parse_phone, phone_from_e164
from ...secretbox import SecretBox
from ...services.audit import AuditLog
from ...services.phone_limits import PhoneSendGuard, mask_for_audit
from ...store import MethodRecord, Store, UserRecord
from ...store.sql import SendPurpose
from ..base import (Access, EnrollError, EnrollField, EnrollmentView, FactorContext, FactorRoute, Interaction, Prompt,
                    TooSoon)
from ..sent_codes import DIGITS, SentCodes



@dataclass(frozen=True, slots=True)
class SmsSettings:
    code_ttl: float = 5 * 60
    allowed_countries: tuple[str, ...] = ()
    default_region: str | None = None


def reference_of(method_id: int, attempt_id: str) -> str:
    """The id the provider and the log see for one attempt's texts (never the attempt id itself)."""
    return f"sms-{method_id}-" + hashlib.sha256(attempt_id.encode()).hexdigest()[:16]


class SmsCodeFactor(SentCodes):
    kind = "sms"
    label = "Text message"
    description = "Get a 6-digit code by text message on your mobile phone."
    interaction = Interaction.CODE
    templates = __name__
    enroll_fields: tuple[EnrollField, ...] = (
        EnrollField("phone", "Mobile phone number", "tel", "tel",
                    "Include the country code, like +44 7700 900123. We send a code to check it is yours.", 64),)
    standalone = True
    max_per_user = 2
    routes: tuple[FactorRoute, ...] = (FactorRoute("/sms/resend", "resend", Access.SIGN_IN, ("POST",)),)

    def __init__(self, store: Store, box: SecretBox, gateway: PhoneGateway, guard: PhoneSendGuard, audit: AuditLog,
                 settings: SmsSettings) -> None:
        self.store, self.box, self.gateway, self.guard, self.audit = store, box, gateway, guard, audit
        self.settings = settings
        self._key = box.lookup_keys("sms codes")[0]

    # -- numbers and codes -----------------------------------------------------------------------------------
    def number(self, method: MethodRecord) -> str:
        if method.detail is None:
            raise ValueError(f"text-message method {method.id} has no number")
        return self.box.decrypt(method.detail)

    def masked(self, method: MethodRecord) -> str:
        return phone_from_e164(self.number(method)).masked

    def _send(self, user: UserRecord, method: MethodRecord, ctx: FactorContext, purpose: SendPurpose) -> None:
        """Count the send against the caps, then make a code for this attempt and text it."""
        e164 = self.number(method)
        phone = phone_from_e164(e164)
        refusal = self.guard.reserve(user, e164, phone.region, "text", purpose,
                                     now=ctx.now, client_ip=ctx.client_ip, user_agent=ctx.user_agent)
        if refusal is not None:
            raise TooSoon(self.guard.user_message(refusal))
        code = f"{secrets.randbelow(10 ** DIGITS):0{DIGITS}d}"
        self.store.add_challenge(user.id, method.id, ctx.attempt_id, self._digest(method.id, ctx.attempt_id, code),
                                 now=ctx.now, expires_at=ctx.now + self.settings.code_ttl)
        site = ctx.site_name or "Sign-in"
        minutes = int(self.settings.code_ttl // 60)
        body = f"{code} is your {site} verification code. It expires in {minutes} minutes. Never share it."
        reference = reference_of(method.id, ctx.attempt_id)
        try:
            self.gateway.send_text(e164, body, reference=reference)
        except GatewayUnavailable:
            self.audit.write("phone", "send_failed", now=ctx.now, actor=user.username, username=user.username,
                             client_ip=ctx.client_ip, user_agent=ctx.user_agent, channel="text", purpose=purpose,
                             number=mask_for_audit(e164), reference=reference)
            raise
        self.audit.write("phone", "sent", now=ctx.now, actor=user.username, username=user.username,
                         client_ip=ctx.client_ip, user_agent=ctx.user_agent, channel="text", purpose=purpose,
                         number=mask_for_audit(e164), reference=reference)

    def resend(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        """"Send a new code" for the attempt; the guard decides whether it is too soon or too many."""
        self._send(user, method, ctx, "sign_in")

    # -- the Factor protocol ---------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        try:
            phone = parse_phone(inputs.get("phone") or "", default_region=self.settings.default_region,
                                allowed_countries=self.settings.allowed_countries, need_mobile=True)
        except PhoneNumberError as exc:
            raise EnrollError(str(exc)) from None
        self.store.delete_methods(user.id, unconfirmed_only=True)  # one enrollment in flight per user
        method_id = self.store.add_method(user.id, self.kind, f"Mobile {phone.masked}", None, now=ctx.now,
                                          detail=self.box.encrypt(phone.e164))
        method = self.store.get_method(method_id)
        assert method is not None
        self._send(user, method, ctx, "enroll")
        return EnrollmentView(method_id=method_id, fields={"phone": phone.masked})

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        return EnrollmentView(method_id=method.id, fields={"phone": self.masked(method)})

    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        if not self.store.live_challenges(method.id, ctx.attempt_id, now=ctx.now):
            self._send(user, method, ctx, "sign_in")

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        minutes = int(self.settings.code_ttl // 60)
        return Prompt(Interaction.CODE, f"We texted a code to {self.masked(method)}. It is valid for {minutes} "
                                        "minutes.", {"digits": str(DIGITS), "resend": "1"})


__all__ = ["SmsCodeFactor", "SmsSettings", "reference_of"]
