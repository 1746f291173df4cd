"""Email code: a six-digit code sent to an address the user proved at enrollment.

Rules:

- A code is 6 digits from the CSPRNG, valid :attr:`EmailSettings.code_ttl` (10 minutes), bound to the sign-in
  attempt that asked for it (``FactorContext.attempt_id``), and stored as a keyed digest (the key is derived from
  the encryption keys, outside the database). Accepting one code uses up every code of that attempt, in one
  transaction, so a code works once.
- :meth:`EmailCodeFactor.begin` sends at most once per attempt: a page reload sends nothing. "Send again"
  (:meth:`EmailCodeFactor.resend`) waits :attr:`EmailSettings.resend_after` seconds since the last code of the
  attempt, and the codes sent per user and per address are capped per hour. A resend never resets the failure
  count (the count lives with the user, not with the code).
- The address is kept encrypted at rest and shown masked (``m•••@example.com``) everywhere but at entry.
- Enrolling an address proves it: the method stays unconfirmed until the code sent to it comes back.
- The gateway being down raises :class:`~mfa_middleware.gateways.GatewayUnavailable`: the page says so and offers
  the other methods; it is never a pass.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from ...gateways import EmailGateway, OutgoingEmail, check_address
from ...secretbox import SecretBox
from ...store import MethodRecord, Store, UserRecord
from ..base import (Access, EnrollError, EnrollField, EnrollmentView, FactorContext, FactorRoute, Interaction, Prompt,
                    TooSoon)
from ..sent_codes import DIGITS, SentCodes, normalize



@dataclass(frozen=True, slots=True)
class EmailSettings:
    code_ttl: float = 10 * 60
    resend_after: float = 30
    per_user_per_hour: int = 10
    per_address_per_hour: int = 5


def mask(address: str) -> str:
    """``m•••@example.com``: enough for the user to recognise it, not enough to learn it."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}"


class EmailCodeFactor(SentCodes):
    kind = "email"
    label = "Email code"
    description = "Get a 6-digit code by email."
    interaction = Interaction.CODE
    templates = __name__
    enroll_fields: tuple[EnrollField, ...] = (
        EnrollField("address", "Email address", "email", "email",
                    "We send a code to this address to check that it is yours."),)
    standalone = True
    max_per_user = 3
    routes: tuple[FactorRoute, ...] = (FactorRoute("/email/resend", "resend", Access.SIGN_IN, ("POST",)),)

    def __init__(self, store: Store, box: SecretBox, gateway: EmailGateway,
                 settings: EmailSettings | None = None) -> None:
        self.store = store
        self.box = box
        self.gateway = gateway
        self.settings = settings or EmailSettings()
        self._key = box.lookup_keys("email codes")[0]

    # -- codes -----------------------------------------------------------------------------------------------
    def address(self, method: MethodRecord) -> str:
        if method.detail is None:
            raise ValueError(f"email method {method.id} has no address")
        return self.box.decrypt(method.detail)

    def _send(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        """Make a code for this attempt and send it (the caller checked the limits)."""
        s = self.settings
        since = ctx.now - 3600
        if self.store.count_challenges(user_id=user.id, since=since) >= s.per_user_per_hour:
            raise TooSoon("Too many codes were sent to you in the last hour. Wait a while or sign in another way.")
        if self.store.count_challenges(method_id=method.id, since=since) >= s.per_address_per_hour:
            raise TooSoon("Too many codes were sent to this address in the last hour. Wait a while or sign in "
                          "another way.")
        code = f"{secrets.randbelow(10 ** DIGITS):0{DIGITS}d}"
        self.store.add_challenge(user.id, method.id, ctx.attempt_id, self._digest(method.id, ctx.attempt_id, code),
                                 now=ctx.now, expires_at=ctx.now + s.code_ttl)
        site = ctx.site_name or "Sign-in"
        minutes = int(s.code_ttl // 60)
        text = (f"Your {site} verification code is {code}\n\n"
                f"It is valid for {minutes} minutes and works once. If you did not try to sign in, someone may know "
                f"your password: change it and tell your helpdesk.\n")
        html = (f"<p>Your {escape(site)} verification code is</p>"
                f'<p style="font-size:1.6em;font-weight:bold;letter-spacing:.15em">{code}</p>'
                f"<p>It is valid for {minutes} minutes and works once. If you did not try to sign in, someone may "
                "know your password: change it and tell your helpdesk.</p>")
        self.gateway.send(OutgoingEmail(to=self.address(method), subject=f"{code} is your {site} code",
                                        text=text, html=html))

    def resend(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        """"Send again": a new code for the attempt, at most every ``resend_after`` seconds and within the hourly
        caps. Raises :class:`TooSoon` with words for the user."""
        live = self.store.live_challenges(method.id, ctx.attempt_id, now=ctx.now)
        if live and ctx.now - live[0][2] < self.settings.resend_after:
            wait = int(self.settings.resend_after - (ctx.now - live[0][2])) + 1
            raise TooSoon(f"A code was sent a moment ago. Wait {wait} seconds before asking for another.")
        self._send(user, method, ctx)

    # -- the Factor protocol ---------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        raw = (inputs.get("address") or "").strip()
        try:
            address = check_address(raw, "email address")
        except ValueError:
            raise EnrollError("Enter one email address, like name@example.com.") from None
        if len(address) > 254 or "." not in address.rpartition("@")[2]:
            raise EnrollError("Enter one email address, like name@example.com.")
        self.store.delete_methods(user.id, unconfirmed_only=True)  # one enrollment in flight per user
        method_id = self.store.add_method(user.id, self.kind, f"Email {mask(address)}", None, now=ctx.now,
                                          detail=self.box.encrypt(address))
        method = self.store.get_method(method_id)
        assert method is not None
        self._send(user, method, ctx)
        return EnrollmentView(method_id=method_id, fields={"address": mask(address)})

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        return EnrollmentView(method_id=method.id, fields={"address": mask(self.address(method))})

    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        if not self.store.live_challenges(method.id, ctx.attempt_id, now=ctx.now):
            self._send(user, method, ctx)

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        minutes = int(self.settings.code_ttl // 60)
        return Prompt(Interaction.CODE, f"We sent a code to {mask(self.address(method))}. It is valid for "
                                        f"{minutes} minutes.", {"digits": str(DIGITS), "resend": "1"})


__all__ = ["EmailCodeFactor", "EmailSettings", "TooSoon", "mask", "normalize"]
