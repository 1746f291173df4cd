"""The factor protocol admits all three interaction kinds; the registry is per instance."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from mfa_middleware.factors import (Access, EnrollField, EnrollmentView, Factor, FactorContext, FactorRegistry,
                                    FactorRoute, Interaction, NoRoutes, Outcome, Prompt, Verification)
from mfa_middleware.store import MethodRecord, UserRecord


class PushFactor(NoRoutes):
    """An out-of-band factor: the page polls verify() until the device answers; its phone calls back on a route of
    its own."""

    routes = (FactorRoute("/push/answer/<token>", "answer", Access.PUBLIC, ("POST",)),)

    kind = "push"
    label = "Push notification"
    description = "Approve a notification on your phone."
    interaction = Interaction.OUT_OF_BAND
    templates = __name__
    enroll_fields: tuple[EnrollField, ...] = ()
    standalone = True
    max_per_user = 5

    def __init__(self) -> None:
        self.answer = Outcome.PENDING

    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        return EnrollmentView(method_id=1, fields={"activation_code": "123-456-789"})

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        return EnrollmentView(method_id=method.id)

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        return Verification(Outcome.ACCEPTED)

    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        self.begun = ctx.attempt_id

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        return Prompt(Interaction.OUT_OF_BAND, "Approve the sign-in on your phone.", {"number": "42"})

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        return Verification(self.answer)


class WebAuthnFactor(PushFactor):
    kind = "webauthn"
    label = "Security key or passkey"
    interaction = Interaction.CEREMONY


def test_every_interaction_kind_fits_the_protocol() -> None:
    registry = FactorRegistry()
    push, webauthn = PushFactor(), WebAuthnFactor()
    registry.register(push)
    registry.register(webauthn)
    assert isinstance(push, Factor) and isinstance(webauthn, Factor)
    assert registry.kinds() == ("push", "webauthn")
    assert {f.interaction for f in registry} == {Interaction.OUT_OF_BAND, Interaction.CEREMONY}
    assert not Verification(Outcome.PENDING).accepted and Verification(Outcome.ACCEPTED).accepted


def test_registry_refuses_duplicates_and_non_factors() -> None:
    registry = FactorRegistry()
    registry.register(PushFactor())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(PushFactor())
    with pytest.raises(TypeError, match="Factor protocol"):
        registry.register(object())  # type: ignore[arg-type]
    assert FactorRegistry().kinds() == ()  # instance-level: a new registry starts empty
