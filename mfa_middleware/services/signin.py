"""Sign-in: the primary step, the second factor, enrollment, lockout and their audit rows.

Rules:

- One failure counter per user guards the password form, the second factor and enrollment confirmation, and
  the Basic path; a second counter per client address guards against spraying over many accounts. An attempt is
  RESERVED (counted) on the one lockout service (:mod:`.lockout`) before its secret is checked; a
  reservation refused because the account or the address is locked means the secret is never checked, so
  concurrent attempts across threads, processes and servers never check more than the limit.
- A success gives its reservation back or resets the counter: a correct password gives it back (it is not a
  failure, but it must not reset the counter either, or a stolen password would give unlimited second-factor
  guesses); a completed second factor or enrollment resets it. A correct password whose reservation was refused
  is never seen as correct: it was not checked.
- Unknown user, user without a local password, wrong password, locked account and locked client address give the
  same outcome after exactly one password verification by the configured primary method (against a dummy where
  there is nothing to check), and
  the same audit-free answer to the client. Only a correct password may lead to a distinct answer (blocked).
- Every step writes an audit row (``failure``: checked and wrong; ``locked``: refused unchecked); no row holds a
  password, code or secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.signin_flow import MISSING, UserFacts
from ..factors import EnrollError, EnrollmentView, FactorContext, Interaction, Outcome, Verification
from ..primary.usernames import canonical_username
from ..store import MethodRecord, UserRecord
from .lockout import Client, Lockout

if TYPE_CHECKING:
    from ..factors import FactorRegistry
    from ..primary.base import PasswordMethod
    from ..store import Store
    from .audit import AuditLog


@dataclass(frozen=True, slots=True)
class PrimaryResult:
    user: UserRecord | None
    reason: str  # ok | invalid | locked | blocked | banned (the client address, whatever the username)
    locked_until: float | None = None

    @property
    def ok(self) -> bool:
        return self.reason == "ok" and self.user is not None


@dataclass(frozen=True, slots=True)
class FactorResult:
    outcome: str  # accepted | rejected | replayed | locked | blocked | pending | fraud
    locked_until: float | None = None
    method: str | None = None  # the kind of method that was accepted

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


class SignIn:
    """The sign-in steps. Every secret it checks is reserved on the one :class:`Lockout` first."""

    def __init__(self, store: Store, audit: AuditLog, factors: FactorRegistry, lockout: Lockout,
                 primary: PasswordMethod, *, site_name: str) -> None:
        self.store, self.audit, self.factors, self.lockout = store, audit, factors, lockout
        self.primary, self.site_name = primary, site_name

    # -- primary -------------------------------------------------------------------------------------------
    def forms(self, username: str, password: str, client: Client, now: float) -> PrimaryResult:
        """The forms login. ``invalid`` for an unknown user, a user without a local password, a wrong password, a
        locked account and a locked client address alike; ``blocked`` only after the correct password."""
        store, audit = self.store, self.audit
        name = canonical_username(username)
        user = store.get_user(name) if name else None
        attempt = self.lockout.reserve(user, client, now)
        checked = user if user is not None and attempt.allowed else None
        if not self.primary.check(checked, password, now):  # exactly one password verification, always
            self.lockout.failed("primary", attempt, user, client, now, primary="forms")
            banned = self.lockout.banned_until(attempt)
            if banned is not None:  # the address is banned: told apart from nothing about the user
                return PrimaryResult(None, "banned", banned)
            return PrimaryResult(None, "invalid")
        assert user is not None
        self.lockout.release(attempt, user, client)  # correct: not a failure nor a reset (second factor next)
        if user.blocked(now):
            audit.write("primary", "blocked", now=now, actor=user.username, username=user.username,
                        client_ip=client.ip, user_agent=client.user_agent, primary="forms")
            return PrimaryResult(user, "blocked")
        audit.write("primary", "success", now=now, actor=user.username, username=user.username,
                    client_ip=client.ip, user_agent=client.user_agent, primary="forms")
        return PrimaryResult(user, "ok")

    def remote_user(self, username: str, client: Client, now: float) -> PrimaryResult:
        """The server authenticated ``username`` (already mapped); check that the store knows and allows it."""
        user = self.store.get_user(username)
        if user is None:
            self.audit.write("primary", "unknown_user", now=now, actor=username, username=None,
                                client_ip=client.ip, user_agent=client.user_agent, primary="remote_user")
            return PrimaryResult(None, "invalid")
        if user.locked(now) or user.blocked(now):
            reason = "blocked" if user.blocked(now) else "locked"
            self.audit.write("primary", reason, now=now, actor=username, username=username,
                                client_ip=client.ip, user_agent=client.user_agent, primary="remote_user")
            return PrimaryResult(user, reason, user.locked_until)
        self.audit.write("primary", "success", now=now, actor=username, username=username, client_ip=client.ip,
                            user_agent=client.user_agent, primary="remote_user")
        return PrimaryResult(user, "ok")

    def facts(self, user: UserRecord | None, now: float, *, since: float | None = None,
              sign_in_id: str | None = None) -> UserFacts:
        """What the sign-in state machine needs to know about ``user`` now (``core/signin_flow.py``). With
        ``since``/``sign_in_id`` (a sign-in in progress), whether a revocation was written since its primary step,
        read from the store so that it holds at once on every server."""
        if user is None:
            return MISSING
        revoked = False
        if since is not None and sign_in_id is not None:
            revoked = self.store.sign_in_revoked(user.username, since=since, session_id=sign_in_id)
        return UserFacts(exists=True, state=user.state, confirmed_methods=len(self.store.list_methods(user.id)),
                         blocked=user.blocked(now), locked=user.locked(now), revoked=revoked)

    def complete_exempt(self, user: UserRecord, client: Client, now: float) -> None:
        """An MFA-exempt user finished signing in: that address's failures for the user are cleared."""
        self.lockout.succeeded(user, client, now)

    def complete_trusted_network(self, user: UserRecord, client: Client, now: float, primary: str) -> None:
        """A browser on a trusted network finished signing in with the primary factor alone: audited as such, and
        that address's failures for the user are cleared."""
        self.lockout.succeeded(user, client, now)
        self.audit.write("primary", "trusted_network", now=now, actor=user.username, username=user.username,
                         client_ip=client.ip, user_agent=client.user_agent, primary=primary, reason="trusted_network")

    def use_bypass(self, user: UserRecord, client: Client, now: float) -> bool:
        """Consume a pending one-time bypass of the second factor (once, atomically); True if there was one."""
        if user.bypass_until is None or user.bypass_until <= now:
            return False
        if not self.store.consume_bypass(user.id, now=now):
            return False
        self.lockout.succeeded(user, client, now)
        self.audit.write("second_factor", "bypassed", now=now, actor=user.username, username=user.username,
                            client_ip=client.ip, user_agent=client.user_agent, method="bypass")
        return True

    # -- second factor ---------------------------------------------------------------------------------------
    def methods(self, user: UserRecord) -> list[MethodRecord]:
        """The user's confirmed methods of a kind this site offers: the default first, then by age."""
        usable = [m for m in self.store.list_methods(user.id) if self.factors.get(m.kind) is not None]
        return sorted(usable, key=lambda m: (not m.is_default, m.id))

    def chosen(self, user: UserRecord, method_id: int | None) -> tuple[list[MethodRecord], MethodRecord | None]:
        """The usable methods, and the one an attempt uses: ``method_id`` when it is one of them, else the default
        (a method that only backs up the others is never the default)."""
        usable = self.methods(user)
        for m in usable:
            if m.id == method_id:
                return usable, m
        for m in usable:
            factor = self.factors.get(m.kind)
            if factor is not None and factor.standalone:
                return usable, m
        return usable, (usable[0] if usable else None)

    def context(self, client: Client, now: float, attempt_id: str = "", *,
                first_method_only: bool = True) -> FactorContext:
        return FactorContext(now=now, client_ip=client.ip, user_agent=client.user_agent,
                             first_method_only=first_method_only, attempt_id=attempt_id,
                             site_name=self.site_name, origin=client.origin)

    def verify(self, user: UserRecord, response: Mapping[str, str], client: Client, now: float,
               kind: str | None = None, *, method_id: int | None = None, attempt_id: str = "") -> FactorResult:
        """Check a second-factor answer against the user's method ``method_id`` (or, without one, against the
        confirmed methods of ``kind``, or any code method).

        The attempt is reserved before any method is checked; an accepted answer resets the counter, a pending
        one (out-of-band, not answered yet) gives the reservation back, anything else keeps it as a failure."""
        fresh = self.store.get_user(user.username)
        if fresh is None:
            return FactorResult("rejected")
        if fresh.blocked(now):
            return FactorResult("blocked")
        attempt = self.lockout.reserve(fresh, client, now)
        if not attempt.allowed:
            self.audit.write("second_factor", "locked", now=now, actor=user.username, username=user.username,
                                client_ip=client.ip, user_agent=client.user_agent)
            return FactorResult("locked", attempt.locked_until)
        ctx = self.context(client, now, attempt_id)
        outcome = Outcome.REJECTED
        used: str | None = None
        for method in self.methods(fresh):
            factor = self.factors.get(method.kind)
            if factor is None or (kind is not None and method.kind != kind):
                continue
            if method_id is not None and method.id != method_id:
                continue
            if method_id is None and kind is None and factor.interaction is not Interaction.CODE:
                continue
            result = factor.verify(fresh, method, response, ctx)
            if result.outcome in (Outcome.ACCEPTED, Outcome.PENDING):
                outcome, used = result.outcome, method.kind
                break
            if result.outcome is not Outcome.REJECTED:
                outcome, used = result.outcome, method.kind
        if outcome is Outcome.ACCEPTED:
            self.lockout.release(attempt, fresh, client)
            self.lockout.succeeded(fresh, client, now)
            self.audit.write("second_factor", "success", now=now, actor=user.username, username=user.username,
                                client_ip=client.ip, user_agent=client.user_agent, method=used)
            return FactorResult("accepted", method=used)
        if outcome is Outcome.PENDING:
            self.lockout.release(attempt, fresh, client)
            return FactorResult("pending", method=used)
        count = self.lockout.keep_failure(attempt, fresh, now)
        self.audit.write("second_factor", outcome.value, now=now, actor=user.username, username=user.username,
                            client_ip=client.ip, user_agent=client.user_agent, method=used or kind, count=count)
        if attempt.user is not None and attempt.user.started_lock:
            return FactorResult("locked", attempt.locked_until)
        return FactorResult(outcome.value)

    # -- enrollment ------------------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, kind: str, client: Client, now: float,
                     inputs: Mapping[str, str] | None = None, *, attempt_id: str = "",
                     first_method_only: bool = True) -> EnrollmentView:
        """Start setting up a method of ``kind``; raises :class:`~mfa_middleware.factors.EnrollError` (with words
        for the user) for unusable inputs, a method that cannot be the first one, or one too many of a kind."""
        factor = self.factors.get(kind)
        if factor is None:
            raise KeyError(kind)
        if first_method_only and not factor.standalone:
            raise EnrollError(f"{factor.label} back up another method: choose another method first.")
        existing = [m for m in self.store.list_methods(user.id) if m.kind == kind]
        if factor.standalone and len(existing) >= factor.max_per_user:
            raise EnrollError(f"You already have {len(existing)} of this kind, the most allowed. Remove one first.")
        ctx = self.context(client, now, attempt_id, first_method_only=first_method_only)
        view = factor.enroll_begin(user, inputs or {}, ctx)
        self.audit.write("enroll", "started", now=now, actor=user.username, username=user.username,
                            client_ip=client.ip, user_agent=client.user_agent, method=kind)
        return view

    def enroll_view(self, user: UserRecord, method_id: int, client: Client, now: float) -> EnrollmentView | None:
        method = self.store.get_method(method_id)
        if method is None or method.user_id != user.id or method.confirmed:
            return None
        factor = self.factors.get(method.kind)
        if factor is None:
            return None
        return factor.enroll_view(user, method, self.context(client, now))

    def enroll_finish(self, user: UserRecord, method_id: int, response: Mapping[str, str], client: Client,
                      now: float, *, attempt_id: str = "", first_method_only: bool = True) -> FactorResult:
        """Confirm a method being set up. ``first_method_only=False`` adds a method to an account that has one
        (from a full session with a fresh second factor; the pages check that)."""
        fresh = self.store.get_user(user.username)
        method = self.store.get_method(method_id)
        if fresh is None or method is None or method.user_id != fresh.id or method.confirmed:
            return FactorResult("rejected")
        if fresh.blocked(now):
            return FactorResult("blocked")
        factor = self.factors.get(method.kind)
        if factor is None:
            return FactorResult("rejected")
        attempt = self.lockout.reserve(fresh, client, now)  # before the code is checked, as on every path
        if not attempt.allowed:
            self.audit.write("enroll", "locked", now=now, actor=user.username, username=user.username,
                                client_ip=client.ip, user_agent=client.user_agent, method=method.kind)
            return FactorResult("locked", attempt.locked_until)
        result: Verification = factor.enroll_finish(
            fresh, method, response, self.context(client, now, attempt_id, first_method_only=first_method_only))
        if result.outcome is Outcome.PENDING:
            self.lockout.release(attempt, fresh, client)
            return FactorResult("pending", method=method.kind)
        if not result.accepted:
            count = self.lockout.keep_failure(attempt, fresh, now)
            self.audit.write("enroll", "failure", now=now, actor=user.username, username=user.username,
                                client_ip=client.ip, user_agent=client.user_agent, method=method.kind, count=count)
            if attempt.user is not None and attempt.user.started_lock:
                return FactorResult("locked", attempt.locked_until)
            return FactorResult(result.outcome.value, method=method.kind)
        self.lockout.release(attempt, fresh, client)
        self.lockout.succeeded(fresh, client, now)
        if not any(m.is_default for m in self.store.list_methods(fresh.id)):
            self.store.set_default_method(fresh.id, method.id)  # the first method becomes the default
        detail: dict[str, object] = {"method": method.kind}
        if fresh.state == "enabled":
            # Registration complete: the user is now enforced (DESIGN.md section 4).
            self.store.update_user(fresh.id, now=now, state="enforced")
            # The primary password stops working on the Basic path: tell every process's Basic cache.
            self.store.add_revocation(fresh.username, now=now, session_id=f"pw:{fresh.username}")
            detail.update(state="enforced", previous_state="enabled")
        self.audit.write("enroll", "success", now=now, actor=user.username, username=user.username,
                            client_ip=client.ip, user_agent=client.user_agent, **detail)
        return FactorResult("accepted", method=method.kind)
