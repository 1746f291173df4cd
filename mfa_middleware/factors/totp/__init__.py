"""Authenticator app (TOTP, RFC 6238).

Verification, after django-otp's TOTP device: compute the codes for the current step and ``drift_steps`` on
either side, compare each in constant time, and accept the matching step only if the store can move the
method's ``last_step`` forward past it in one conditional UPDATE. A code (and every code older than the newest
accepted one) therefore works once, even when twenty requests carry it at the same moment.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

import pyotp
import segno

from ...config import TotpConfig
from ...secretbox import SecretBox
from ...store import MethodRecord, Store, UserRecord
from ..base import NoRoutes, EnrollField, EnrollmentView, FactorContext, Interaction, Outcome, Prompt, Verification

_CODE = re.compile(r"^[0-9]{6,8}$")


def normalize_code(raw: str) -> str:
    """Drop the spaces and dashes people type ("123 456")."""
    return re.sub(r"[\s-]", "", raw or "")[:32]


def totp_match(secret_b32: str, code: str, now: float, *, digits: int = 6, period: int = 30, drift: int = 1,
               digest: str = "sha1") -> int | None:
    """The time step ``code`` is valid for (within ``drift`` steps of ``now``), or ``None``.

    Every candidate step is computed and compared in constant time, whether or not an earlier one matched.
    """
    code = normalize_code(code)
    if len(code) != digits or not _CODE.match(code):
        return None
    algorithm = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}[digest]
    totp = pyotp.TOTP(secret_b32, digits=digits, interval=period, digest=algorithm)
    current = int(now // period)
    found: int | None = None
    for step in range(current - drift, current + drift + 1):
        if step < 0:
            continue
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()) and found is None:
            found = step
    return found


class TotpFactor(NoRoutes):
    kind = "totp"
    label = "Authenticator app"
    description = "Use an authenticator app on your phone to get a 6-digit code."
    interaction = Interaction.CODE
    templates = __name__
    enroll_fields: tuple[EnrollField, ...] = ()
    standalone = True

    def __init__(self, store: Store, box: SecretBox, config: TotpConfig, *, max_per_user: int = 5) -> None:
        self.store = store
        self.box = box
        self.config = config
        self.max_per_user = max_per_user

    # -- enrollment ----------------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        # Only one enrollment in flight per user: a new start replaces an unconfirmed one.
        self.store.delete_methods(user.id, unconfirmed_only=True)
        secret = pyotp.random_base32(32)  # 160 bits, as RFC 4226 recommends
        method_id = self.store.add_method(user.id, self.kind, self.label, self.box.encrypt(secret), now=ctx.now)
        return self._view(user, method_id, secret)

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        return self._view(user, method.id, self._secret(method))

    def _view(self, user: UserRecord, method_id: int, secret: str) -> EnrollmentView:
        uri = self.provisioning_uri(user.username, secret)
        qr = segno.make(uri, error="m")
        svg = qr.svg_inline(scale=5, dark="#111827", light="#ffffff", title="Authenticator app QR code")
        grouped = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
        return EnrollmentView(method_id=method_id, fields={"secret": grouped, "uri": uri, "qr_svg": svg,
                                                           "digits": str(self.config.digits),
                                                           "period": str(self.config.period)})

    def provisioning_uri(self, username: str, secret: str) -> str:
        totp = pyotp.TOTP(secret, digits=self.config.digits, interval=self.config.period)
        return totp.provisioning_uri(name=username, issuer_name=self.config.issuer)

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        if method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        step = self._match(method, response.get("code", ""), ctx.now)
        if step is None:
            return Verification(Outcome.REJECTED)
        if not self.store.confirm_method(method.id, user.id, step=step, now=ctx.now,
                                         only_if_first=ctx.first_method_only):
            return Verification(Outcome.REPLAYED)
        return Verification(Outcome.ACCEPTED, step)

    # -- sign-in -------------------------------------------------------------------------------------------
    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        """Nothing to send: the app makes the code."""

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        return Prompt(Interaction.CODE, "Enter the code shown in your authenticator app.",
                      {"digits": str(self.config.digits)})

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        if not method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        step = self._match(method, response.get("code", ""), ctx.now)
        if step is None:
            return Verification(Outcome.REJECTED)
        if not self.store.consume_step(method.id, step, now=ctx.now):
            return Verification(Outcome.REPLAYED, step)
        return Verification(Outcome.ACCEPTED, step)

    def _secret(self, method: MethodRecord) -> str:
        if method.secret is None:
            raise ValueError(f"method {method.id} has no secret")
        return self.box.decrypt(method.secret)

    def _match(self, method: MethodRecord, code: str, now: float) -> int | None:
        return totp_match(self._secret(method), code, now, digits=self.config.digits, period=self.config.period,
                          drift=self.config.drift_steps)
