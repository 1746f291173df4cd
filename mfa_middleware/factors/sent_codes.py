"""What the methods that send a one-time code have in common (email, text message): the code's keyed digest, bound
to the method and the sign-in attempt; accepting it once; confirming the method being set up; and the "Send a new
code" route. Each method keeps its own sending (gateway, limits, wording) in ``resend`` and ``begin``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ..gateways import GatewayUnavailable
from ..store import MethodRecord, Store, UserRecord
from .base import FactorContext, Outcome, RouteContext, TooSoon, Verification

DIGITS = 6


def normalize(typed: str) -> str | None:
    """The 6 ASCII digits the user typed (spaces and dashes dropped), or None."""
    code = "".join(ch for ch in (typed or "")[:64] if not ch.isspace() and ch != "-")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    return code


class SentCodes:
    """A mixin: the subclass sets ``kind``, ``store`` and ``_key`` (its purpose-bound lookup key) and implements
    :meth:`resend`."""

    kind: str
    store: Store
    _key: bytes

    def resend(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        raise NotImplementedError

    def _digest(self, method_id: int, attempt_id: str, code: str) -> str:
        return hmac.new(self._key, f"{method_id}:{attempt_id}:{code}".encode(), hashlib.sha256).hexdigest()

    def _accept(self, method: MethodRecord, response: Mapping[str, str], ctx: FactorContext) -> bool:
        """Whether the code is one of this attempt's live codes; accepting it uses up the attempt's codes, once."""
        code = normalize(response.get("code", ""))
        if code is None or not ctx.attempt_id:
            return False
        expected = self._digest(method.id, ctx.attempt_id, code)
        match = None
        for challenge_id, digest, _created in self.store.live_challenges(method.id, ctx.attempt_id, now=ctx.now):
            if hmac.compare_digest(digest, expected) and match is None:
                match = challenge_id
        return match is not None and self.store.use_challenge(match, now=ctx.now)

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        if method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        if not self._accept(method, response, ctx):
            return Verification(Outcome.REJECTED)
        if not self.store.confirm_method(method.id, user.id, step=None, now=ctx.now,
                                         only_if_first=ctx.first_method_only):
            return Verification(Outcome.REPLAYED)
        return Verification(Outcome.ACCEPTED)

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        if not method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        return Verification(Outcome.ACCEPTED if self._accept(method, response, ctx) else Outcome.REJECTED)

    def handle(self, route: str, rctx: RouteContext, **args: str) -> Response:
        """ "Send a new code" (``POST /<kind>/resend``): limited by :meth:`resend`; the failure count is left as
        it is."""
        if route != "resend" or rctx.user is None or rctx.method is None:
            raise NotFound()
        if rctx.request.form.get("method_id") != str(rctx.method.id):
            return rctx.redirect(rctx.url("verify"))  # a form for another method than this attempt's
        try:
            self.resend(rctx.user, rctx.method, rctx.factor_context)
        except (GatewayUnavailable, TooSoon) as exc:
            return rctx.cannot_send(exc)
        rctx.audit("second_factor", "resent", method=self.kind)
        return rctx.verify_page(notice="We sent a new code. Earlier codes still work until they expire.")
