"""The OATH hardware token inventory: import, list, assign, unassign, delete, and checking a token's code.

Rules:

- Every change writes an audit row naming the actor and the token's serial number; never its secret, and never a
  code. Secrets are encrypted with the runtime's :class:`~mfa_middleware.secretbox.SecretBox` before they reach
  the store, like TOTP seeds.
- An import stores each accepted line on its own (one short transaction each): a line whose serial is taken, or
  whose user does not exist, is refused and reported; the other lines go in. Importing the same file twice
  imports nothing the second time and says why for every line.
- Unassigning or deleting a token that a user activated also deletes the method row it signed in with, and ends
  that user's sessions (a revocation): the usual reason is a lost token.
- A code is checked by :mod:`mfa_middleware.factors.oath.otp` (constant time, every candidate) and accepted only
  if the store then consumes the matched counter or step in one conditional UPDATE: once, under any concurrency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..factors.oath.inventory import InventoryError, ParsedInventory, Refusal, Refused, parse_inventory
from ..factors.oath.otp import HOTP_WINDOW, RESYNC_WINDOW, TOTP_DRIFT, hotp_match, hotp_resync, totp_step
from ..primary.usernames import canonical_username
from ..secretbox import SecretBox
from ..store import Store, UserRecord
from ..store.sql import OathTokenRecord, SerialTaken
from .accounts import AccountError
from .audit import AuditLog


class TokenError(AccountError):
    """A token request cannot be carried out; the message says why and what to do."""


class CodeCheck(str, Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # no candidate matched
    REPLAYED = "replayed"  # matched, but another request consumed that counter or step first


@dataclass(frozen=True, slots=True)
class CheckResult:
    outcome: CodeCheck
    #: the HOTP counter or TOTP step that matched
    matched: int | None = None


@dataclass(frozen=True, slots=True)
class ImportReport:
    imported: tuple[str, ...]  # serial numbers, in file order
    refused: tuple[Refusal, ...]  # in line order

    @property
    def lines(self) -> int:
        return len(self.imported) + len(self.refused)


class OathTokens:
    def __init__(self, store: Store, box: SecretBox, audit: AuditLog, clock: Callable[[], float], *,
                 hotp_window: int = HOTP_WINDOW, resync_window: int = RESYNC_WINDOW,
                 totp_drift: int = TOTP_DRIFT) -> None:
        self.store = store
        self.box = box
        self.audit = audit
        self.clock = clock
        self.hotp_window = hotp_window
        self.resync_window = resync_window
        self.totp_drift = totp_drift

    # -- inventory -------------------------------------------------------------------------------------------
    @staticmethod
    def parse(data: bytes | str) -> ParsedInventory:
        try:
            return parse_inventory(data)
        except InventoryError as exc:
            raise TokenError(str(exc)) from None

    def import_rows(self, parsed: ParsedInventory, *, actor: str,
                    on_row: Callable[[], None] | None = None) -> ImportReport:
        """Store the accepted rows of a parsed file; ``on_row`` is called after each (for a progress bar)."""
        refused = list(parsed.refused)
        imported: list[str] = []
        users: dict[str, UserRecord | None] = {}
        taken = self.store.oath_serials([row.serial for row in parsed.accepted])
        for row in parsed.accepted:
            try:
                if row.serial in taken:
                    refused.append(Refusal(row.line, row.serial, Refused.ALREADY_IN_STORE,
                                           f"serial {row.serial} is in the inventory already"))
                    continue
                user: UserRecord | None = None
                if row.upn is not None:
                    if row.upn not in users:
                        users[row.upn] = self.store.get_user(row.upn)
                    user = users[row.upn]
                    if user is None:
                        refused.append(Refusal(row.line, row.serial, Refused.UNKNOWN_USER,
                                               f"no user named {row.upn!r}"))
                        continue
                now = self.clock()
                try:
                    self.store.add_oath_token(row.serial, row.kind, self.box.encrypt(row.secret), digits=row.digits,
                                              now=now, period=row.period, counter=row.counter,
                                              user_id=None if user is None else user.id,
                                              manufacturer=row.manufacturer, model=row.model)
                except SerialTaken:
                    refused.append(Refusal(row.line, row.serial, Refused.ALREADY_IN_STORE,
                                           f"serial {row.serial} is in the inventory already"))
                    continue
                imported.append(row.serial)
                self.audit.write("oath_token_import", "success", now=now, actor=actor,
                                 username=None if user is None else user.username, serial=row.serial,
                                 method=row.kind)
            finally:
                if on_row is not None:
                    on_row()
        refused.sort(key=lambda r: r.line)
        self.audit.write("oath_tokens_import", "success" if imported else "failure", now=self.clock(), actor=actor,
                         username=None, count=len(imported), refused=len(refused))
        return ImportReport(tuple(imported), tuple(refused))

    def import_file(self, data: bytes | str, *, actor: str) -> ImportReport:
        return self.import_rows(self.parse(data), actor=actor)

    def list(self, username: str | None = None, *, after: str | None = None,
             limit: int | None = None) -> list[OathTokenRecord]:
        """The inventory (or one user's tokens) in serial order, one page after the serial ``after``."""
        user_id = None if username is None else self._user(username).id
        return self.store.list_oath_tokens(user_id=user_id, after=after, limit=limit)

    def get(self, serial: str) -> OathTokenRecord:
        token = self.store.get_oath_token(serial.strip())
        if token is None:
            raise TokenError(f"no token with serial number {serial.strip()!r} (see `mfa-admin tokens list`)")
        return token

    def _user(self, username: str) -> UserRecord:
        name = canonical_username(username)
        user = self.store.get_user(name) if name is not None else None
        if user is None:
            raise TokenError(f"no user named {username.strip()!r} (see `mfa-admin user list`)")
        return user

    def assign(self, serial: str, username: str, *, actor: str) -> OathTokenRecord:
        token = self.get(serial)
        user = self._user(username)
        if not self.store.assign_oath_token(token.serial, user.id):
            current = self.store.get_oath_token(token.serial)
            if current is None:
                raise TokenError(f"token {token.serial} was deleted meanwhile")
            raise TokenError(f"token {token.serial} is assigned to {current.username}; unassign it first "
                             f"(`mfa-admin tokens unassign {token.serial}`)")
        self.audit.write("oath_token_assign", "success", now=self.clock(), actor=actor, username=user.username,
                         serial=token.serial, previous_state="assigned" if token.user_id == user.id else "unassigned")
        return self.get(token.serial)

    def unassign(self, serial: str, *, actor: str) -> OathTokenRecord:
        """Back to the pool; returns the token as it was (its ``username`` and ``activated`` say what changed)."""
        return self._release(self.store.unassign_oath_token, serial, actor, "oath_token_unassign")

    def delete(self, serial: str, *, actor: str) -> OathTokenRecord:
        return self._release(self.store.delete_oath_token, serial, actor, "oath_token_delete")

    def _release(self, change: Callable[[str], OathTokenRecord | None], serial: str, actor: str,
                 event: str) -> OathTokenRecord:
        """Unassign or delete: an activated token's method goes with it, so the holder's sessions end."""
        before = change(self.get(serial).serial)
        if before is None:
            raise TokenError(f"no token with serial number {serial.strip()!r} (see `mfa-admin tokens list`)")
        now = self.clock()
        if before.activated and before.username is not None:
            self.store.add_revocation(before.username, now=now)
        self.audit.write(event, "success", now=now, actor=actor, username=before.username, serial=before.serial,
                         methods_removed=int(before.activated))
        return before

    # -- codes -----------------------------------------------------------------------------------------------
    def check(self, token: OathTokenRecord, code: str) -> CheckResult:
        """Check a code typed from ``token`` and consume what it matched, at most once (see the module rules).

        The caller decides whether this user may use this token, and counts the attempt (lockout) first."""
        secret = self.box.decrypt(token.secret)
        now = self.clock()
        if token.kind == "hotp":
            counter = hotp_match(secret, code, token.counter or 0, digits=token.digits, window=self.hotp_window)
            if counter is None:
                return CheckResult(CodeCheck.REJECTED)
            if not self.store.consume_oath_counter(token.id, counter, now=now):
                return CheckResult(CodeCheck.REPLAYED, counter)
            return CheckResult(CodeCheck.ACCEPTED, counter)
        step = totp_step(secret, code, now, period=token.period or 30, digits=token.digits, drift=self.totp_drift)
        if step is None:
            return CheckResult(CodeCheck.REJECTED)
        if not self.store.consume_oath_step(token.id, step, now=now):
            return CheckResult(CodeCheck.REPLAYED, step)
        return CheckResult(CodeCheck.ACCEPTED, step)

    def resync(self, token: OathTokenRecord, first: str, second: str) -> CheckResult:
        """HOTP: accept two consecutive codes found within the resynchronisation window, and move the token's
        counter past them (once). TOTP tokens cannot drift in counter: always rejected."""
        if token.kind != "hotp":
            return CheckResult(CodeCheck.REJECTED)
        secret = self.box.decrypt(token.secret)
        counter = hotp_resync(secret, first, second, token.counter or 0, digits=token.digits,
                              window=self.resync_window)
        if counter is None:
            return CheckResult(CodeCheck.REJECTED)
        if not self.store.resync_oath_counter(token.id, counter, now=self.clock()):
            return CheckResult(CodeCheck.REPLAYED, counter)
        return CheckResult(CodeCheck.ACCEPTED, counter)
