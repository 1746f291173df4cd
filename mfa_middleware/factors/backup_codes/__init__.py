"""Backup codes: ten single-use look-up secrets for the day the phone is lost.

Rules:

- A set is ten codes of ten characters from a 32-character alphabet without look-alikes (50 bits each, shown as
  ``abcde-fghjk``), made with the operating system's CSPRNG and shown once. NIST SP 800-63B (5.1.2.1) asks that
  look-up secrets of less than 112 bits be stored salted and hashed with a key-derivation function: each code is
  stored as an argon2id hash, with a keyed look-up digest (a key derived from the encryption keys, which live
  outside the database) so that a sign-in checks one hash, not ten, and a copy of the database alone cannot test
  guesses.
- A code works once: it is used up by one conditional UPDATE, so twenty requests carrying it at the same moment
  get one acceptance.
- Making a new set ends the old one in the same transaction.
- Backup codes only back up other methods: never the first method of an account (``standalone = False``), so a
  sign-in's enrollment cannot end with codes alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ...secretbox import SecretBox
from ...services.passwords import Passwords
from ...store import MethodRecord, Store, UserRecord
from ..base import (Access, EnrollError, EnrollField, EnrollmentView, FactorContext, FactorRoute, Interaction, Outcome,
                    Prompt, RouteContext, Verification)

ALPHABET = "abcdefghjkmnpqrstuvwxyz023456789"  # 32 symbols: 5 bits each; no i, l, o, 1
CODE_LENGTH = 10
COUNT = 10
_TYPED = re.compile(r"[\s-]")


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def display(code: str) -> str:
    return f"{code[:5]}-{code[5:]}"


def normalize(typed: str) -> str | None:
    """The code as stored, from what a person typed (any case, spaces or dashes), or None if it cannot be one."""
    code = _TYPED.sub("", typed or "")[:64].lower()
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


class BackupCodesFactor:
    kind = "backup_codes"
    label = "Backup codes"
    description = "Single-use codes to print or save, for when you cannot use your other methods."
    interaction = Interaction.CODE
    templates = __name__
    enroll_fields: tuple[EnrollField, ...] = ()
    standalone = False
    max_per_user = 1
    routes: tuple[FactorRoute, ...] = (FactorRoute("/backup-codes", "codes", Access.FRESH_SESSION, ("GET", "POST")),)

    def __init__(self, store: Store, box: SecretBox, passwords: Passwords) -> None:
        self.store = store
        self.passwords = passwords
        self._keys = box.lookup_keys("backup codes")

    def handle(self, route: str, rctx: RouteContext, **args: str) -> Response:
        """The backup-codes page (``/backup-codes``): offered at the end of enrollment and from the security info
        page. A new set (POST) replaces the old one at once and is shown once, with a .txt download and a print
        view."""
        user = rctx.user
        if route != "codes" or user is None:
            raise NotFound()
        if rctx.request.method == "POST":
            _method_id, codes = self.generate(user, rctx.factor_context)
            rctx.audit("backup_codes", "created", count=len(codes))
            shown = [display(c) for c in codes]
            download = (f"Backup codes for {user.username} at {rctx.factor_context.site_name}\n"
                        "Each code works once.\n\n" + "\n".join(shown) + "\n")
            return rctx.render("backup_codes/codes.html", title="Your backup codes", codes=shown,
                               download=download, continue_to=rctx.next)
        return rctx.render("backup_codes/offer.html", title="Backup codes", csrf=rctx.csrf,
                           remaining=self.remaining(user), continue_to=rctx.next, next=rctx.next)

    def _lookups(self, user_id: int, code: str) -> list[str]:
        message = f"{user_id}:{code}".encode()
        return [hmac.new(key, message, hashlib.sha256).hexdigest()[:32] for key in self._keys]

    # -- a new set -------------------------------------------------------------------------------------------
    def generate(self, user: UserRecord, ctx: FactorContext) -> tuple[int, list[str]]:
        """A new set for ``user`` (the old one stops working); returns the method id and the codes, shown once."""
        existing = [m for m in self.store.list_methods(user.id) if m.kind == self.kind]
        method_id = existing[0].id if existing else self.store.add_method(user.id, self.kind, self.label, None,
                                                                          now=ctx.now, confirmed=True)
        codes = [new_code() for _ in range(COUNT)]
        self.store.replace_backup_codes(
            user.id, method_id, [(self._lookups(user.id, c)[0], self.passwords.hash(c)) for c in codes], now=ctx.now)
        return method_id, codes

    def remaining(self, user: UserRecord) -> int:
        return self.store.count_backup_codes(user.id)

    # -- the Factor protocol ---------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        if ctx.first_method_only:
            raise EnrollError("Backup codes back up another method: set up an authenticator app first.")
        method_id, codes = self.generate(user, ctx)
        return EnrollmentView(method_id=method_id, fields={"codes": "\n".join(display(c) for c in codes)})

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        return EnrollmentView(method_id=method.id, fields={"remaining": str(self.remaining(user))})

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        return Verification(Outcome.ACCEPTED if method.confirmed else Outcome.REJECTED)

    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        """Nothing to send."""

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        return Prompt(Interaction.CODE, "Enter one of your backup codes. Each code works once.",
                      {"remaining": str(self.remaining(user))})

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        if method.user_id != user.id or method.kind != self.kind or not method.confirmed:
            return Verification(Outcome.REJECTED)
        code = normalize(response.get("code", ""))
        if code is None:
            self.passwords.verify(None, "")  # the same argon2 work as a well-formed wrong code
            return Verification(Outcome.REJECTED)
        candidates = [row for lookup in self._lookups(user.id, code)
                      for row in self.store.find_backup_codes(user.id, lookup)]
        if not candidates:
            self.passwords.verify(None, code)
            return Verification(Outcome.REJECTED)
        for code_id, code_hash in candidates:
            if self.passwords.verify(code_hash, code):
                if self.store.use_backup_code(code_id, now=ctx.now):
                    return Verification(Outcome.ACCEPTED)
                return Verification(Outcome.REPLAYED)
        return Verification(Outcome.REJECTED)


__all__ = ["ALPHABET", "BackupCodesFactor", "COUNT", "display", "new_code", "normalize"]
