"""The OATH hardware token as a sign-in method: a user activates a token from the inventory by its serial number
and a current code, then signs in with its codes.

Rules:

- A token can be activated by the user it is assigned to, or by anyone while it is unassigned; never once it is
  activated. Every refusal at activation says the same thing, so serial numbers cannot be probed.
- A code is consumed in one conditional UPDATE (``OathTokens.check``): it works once.
- HOTP tokens that drifted past the look-ahead window are resynchronised by two consecutive codes typed together
  on the sign-in page (``code`` and ``next_code``); a successful resynchronisation signs in.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...secretbox import SecretBox
from ...services.oath_tokens import CodeCheck, OathTokens
from ...store import MethodRecord, Store, UserRecord
from ...store.sql import OathTokenRecord
from ..base import (EnrollError, EnrollField, EnrollmentView, FactorContext, Interaction, NoRoutes, Outcome, Prompt,
                    Verification)

_UNAVAILABLE = ("No token with that serial number is available to you. Check the number on the back of the token, "
                "or ask your helpdesk.")
_OUTCOMES = {CodeCheck.ACCEPTED: Outcome.ACCEPTED, CodeCheck.REPLAYED: Outcome.REPLAYED,
             CodeCheck.REJECTED: Outcome.REJECTED}


class OathTokenFactor(NoRoutes):
    kind = "oath"
    label = "Hardware token"
    description = "Use the codes of a hardware token your organisation gave you."
    interaction = Interaction.CODE
    templates = "mfa_middleware.factors.oath"
    enroll_fields: tuple[EnrollField, ...] = (
        EnrollField("serial", "Serial number", "text", "off", "Printed on the back of the token.", 64),)
    standalone = True

    def __init__(self, store: Store, box: SecretBox, tokens: OathTokens, *, max_per_user: int = 5) -> None:
        self.store = store
        self.box = box
        self.tokens = tokens
        self.max_per_user = max_per_user

    def _available(self, user: UserRecord, serial: str) -> OathTokenRecord | None:
        token = self.store.get_oath_token(serial) or self.store.get_oath_token(serial.upper())
        if token is None or token.method_id is not None or token.user_id not in (None, user.id):
            return None
        return token

    def _serial(self, method: MethodRecord) -> str:
        if method.detail is None:
            raise ValueError(f"hardware token method {method.id} has no serial number")
        return self.box.decrypt(method.detail)

    # -- enrollment ----------------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        serial = (inputs.get("serial") or "").strip()
        if not serial or len(serial) > 64 or self._available(user, serial) is None:
            raise EnrollError(_UNAVAILABLE)
        self.store.delete_methods(user.id, unconfirmed_only=True)
        method_id = self.store.add_method(user.id, self.kind, f"Hardware token {serial}", None, now=ctx.now,
                                          detail=self.box.encrypt(serial))
        return EnrollmentView(method_id=method_id, fields={"serial": serial})

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        return EnrollmentView(method_id=method.id, fields={"serial": self._serial(method)})

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        if method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        token = self._available(user, self._serial(method))
        if token is None:
            return Verification(Outcome.REJECTED)
        checked = self.tokens.check(token, response.get("code", ""))
        if checked.outcome is not CodeCheck.ACCEPTED:
            return Verification(_OUTCOMES[checked.outcome])
        if not self.store.confirm_method(method.id, user.id, step=None, now=ctx.now,
                                         only_if_first=ctx.first_method_only):
            return Verification(Outcome.REPLAYED)
        if not self.store.link_oath_token(token.id, user.id, method.id):
            self.store.delete_method(user.id, method.id)  # someone activated it first
            return Verification(Outcome.REPLAYED)
        return Verification(Outcome.ACCEPTED, checked.matched)

    # -- sign-in -------------------------------------------------------------------------------------------
    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        """Nothing to send: the token makes the code."""

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        token = self.store.get_oath_token_by_method(method.id)
        kind = token.kind if token is not None else "totp"
        return Prompt(Interaction.CODE, "Enter the code your hardware token shows.",
                      {"digits": str(token.digits if token else 6), "token_kind": kind})

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        if not method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        token = self.store.get_oath_token_by_method(method.id)
        if token is None or token.user_id != user.id:
            return Verification(Outcome.REJECTED)
        code, following = response.get("code", "")[:16], response.get("next_code", "")[:16]
        if following.strip() and token.kind == "hotp":
            checked = self.tokens.resync(token, code, following)
        else:
            checked = self.tokens.check(token, code)
        return Verification(_OUTCOMES[checked.outcome], checked.matched)


__all__ = ["OathTokenFactor"]
