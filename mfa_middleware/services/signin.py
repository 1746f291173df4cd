"""Sign-in: the primary step, the second factor, enrollment, lockout and their audit rows.

Rules:

- One failure counter per user guards the password form, the second factor and enrollment confirmation. It is
  raised in one SQL UPDATE per failure (see ``Store.record_failure``); a locked account is refused before any
  secret is checked, on every path.
- A correct password does not reset the counter (otherwise a stolen password would give unlimited second-factor
  guesses); only a completed sign-in does.
- "No such user" and "wrong password" give the same outcome, after the same argon2 work.
- Every step writes an audit row; no row holds a password, code or secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.signin_flow import MISSING, UserFacts
from ..factors import EnrollmentView, FactorContext, Interaction, Outcome, Verification
from ..primary.usernames import canonical_username
from ..store import MethodRecord, UserRecord

if TYPE_CHECKING:
    from ..runtime import Runtime


@dataclass(frozen=True, slots=True)
class Client:
    ip: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class PrimaryResult:
    user: UserRecord | None
    reason: str  # ok | invalid | locked | blocked
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
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    # -- primary -------------------------------------------------------------------------------------------
    def forms(self, username: str, password: str, client: Client, now: float) -> PrimaryResult:
        store, audit = self.rt.store, self.rt.audit
        client_lock = self.client_locked(client, now)
        if client_lock is not None:
            self.rt.passwords.verify(None, password)
            audit.write("primary", "client_locked", now=now, actor="anonymous", username=None, client_ip=client.ip,
                        user_agent=client.user_agent, primary="forms")
            return PrimaryResult(None, "locked", client_lock)
        name = canonical_username(username)
        user = store.get_user(name) if name else None
        logged_name = name if user else None
        if user is not None and user.locked(now):
            self.rt.passwords.verify(None, password)  # same work as any other answer
            audit.write("primary", "locked", now=now, actor=user.username, username=user.username,
                        client_ip=client.ip, user_agent=client.user_agent, primary="forms")
            return PrimaryResult(user, "locked", user.locked_until)
        if not self.rt.passwords.verify(user.password_hash if user else None, password):
            detail: dict[str, object] = {"primary": "forms"}
            self.fail_client(client, now)
            if user is not None:
                count, locked_until = self.fail(user, now)
                detail.update(count=count)
                if locked_until is not None and locked_until > now:
                    detail.update(locked_until=locked_until)
            audit.write("primary", "failure", now=now, actor=logged_name or "anonymous", username=logged_name,
                        client_ip=client.ip, user_agent=client.user_agent, **detail)
            if "locked_until" in detail:  # this failure started the lockout: say so now, not on the next try
                return PrimaryResult(user, "locked", float(detail["locked_until"]))  # type: ignore[arg-type]
            return PrimaryResult(None, "invalid")
        assert user is not None and user.password_hash is not None
        if user.blocked(now):
            audit.write("primary", "blocked", now=now, actor=user.username, username=user.username,
                        client_ip=client.ip, user_agent=client.user_agent, primary="forms")
            return PrimaryResult(user, "blocked")
        if self.rt.passwords.needs_rehash(user.password_hash):
            store.update_user(user.id, now=now, password_hash=self.rt.passwords.hash(password))
        audit.write("primary", "success", now=now, actor=user.username, username=user.username,
                    client_ip=client.ip, user_agent=client.user_agent, primary="forms")
        return PrimaryResult(user, "ok")

    def remote_user(self, username: str, client: Client, now: float) -> PrimaryResult:
        """The server authenticated ``username`` (already mapped); check that the store knows and allows it."""
        user = self.rt.store.get_user(username)
        if user is None:
            self.rt.audit.write("primary", "unknown_user", now=now, actor=username, username=None,
                                client_ip=client.ip, user_agent=client.user_agent, primary="remote_user")
            return PrimaryResult(None, "invalid")
        if user.locked(now) or user.blocked(now):
            reason = "blocked" if user.blocked(now) else "locked"
            self.rt.audit.write("primary", reason, now=now, actor=username, username=username,
                                client_ip=client.ip, user_agent=client.user_agent, primary="remote_user")
            return PrimaryResult(user, reason, user.locked_until)
        self.rt.audit.write("primary", "success", now=now, actor=username, username=username, client_ip=client.ip,
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
            revoked = self.rt.store.sign_in_revoked(user.username, since=since, session_id=sign_in_id)
        return UserFacts(exists=True, state=user.state, confirmed_methods=len(self.rt.store.list_methods(user.id)),
                         blocked=user.blocked(now), locked=user.locked(now), revoked=revoked)

    def complete_exempt(self, user: UserRecord, client: Client, now: float) -> None:
        """An MFA-exempt user finished signing in: the failure counter starts again."""
        self.rt.store.reset_failures(user.id)

    def use_bypass(self, user: UserRecord, client: Client, now: float) -> bool:
        """Consume a pending one-time bypass of the second factor (once, atomically); True if there was one."""
        if user.bypass_until is None or user.bypass_until <= now:
            return False
        if not self.rt.store.consume_bypass(user.id, now=now):
            return False
        self.rt.store.reset_failures(user.id)
        self.rt.audit.write("second_factor", "bypassed", now=now, actor=user.username, username=user.username,
                            client_ip=client.ip, user_agent=client.user_agent, method="bypass")
        return True

    # -- second factor ---------------------------------------------------------------------------------------
    def methods(self, user: UserRecord) -> list[MethodRecord]:
        return [m for m in self.rt.store.list_methods(user.id) if self.rt.factors.get(m.kind) is not None]

    def verify(self, user: UserRecord, response: Mapping[str, str], client: Client, now: float,
               kind: str | None = None) -> FactorResult:
        """Check a second-factor answer against the user's confirmed methods of ``kind`` (or any code method)."""
        fresh = self.rt.store.get_user(user.username)
        if fresh is None:
            return FactorResult("rejected")
        if fresh.blocked(now):
            return FactorResult("blocked")
        client_lock = self.client_locked(client, now)
        if fresh.locked(now) or client_lock is not None:
            self.rt.audit.write("second_factor", "locked", now=now, actor=user.username, username=user.username,
                                client_ip=client.ip, user_agent=client.user_agent)
            return FactorResult("locked", fresh.locked_until if fresh.locked(now) else client_lock)
        ctx = FactorContext(now=now, client_ip=client.ip, user_agent=client.user_agent)
        outcome = Outcome.REJECTED
        used: str | None = None
        for method in self.methods(fresh):
            factor = self.rt.factors.get(method.kind)
            if factor is None or (kind is not None and method.kind != kind):
                continue
            if kind is None and factor.interaction is not Interaction.CODE:
                continue
            result = factor.verify(fresh, method, response, ctx)
            if result.outcome is Outcome.ACCEPTED:
                outcome, used = result.outcome, method.kind
                break
            if result.outcome is Outcome.REPLAYED:
                outcome, used = result.outcome, method.kind
        if outcome is Outcome.ACCEPTED:
            self.rt.store.reset_failures(fresh.id)
            self.rt.audit.write("second_factor", "success", now=now, actor=user.username, username=user.username,
                                client_ip=client.ip, user_agent=client.user_agent, method=used)
            return FactorResult("accepted", method=used)
        self.fail_client(client, now)
        count, locked_until = self.fail(fresh, now)
        self.rt.audit.write("second_factor", outcome.value, now=now, actor=user.username, username=user.username,
                            client_ip=client.ip, user_agent=client.user_agent, method=used or kind, count=count)
        if locked_until is not None and locked_until > now:
            return FactorResult("locked", locked_until)
        return FactorResult(outcome.value)

    # -- enrollment ------------------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, kind: str, client: Client, now: float) -> EnrollmentView:
        factor = self.rt.factors.get(kind)
        if factor is None:
            raise KeyError(kind)
        ctx = FactorContext(now=now, client_ip=client.ip, user_agent=client.user_agent)
        view = factor.enroll_begin(user, ctx)
        self.rt.audit.write("enroll", "started", now=now, actor=user.username, username=user.username,
                            client_ip=client.ip, user_agent=client.user_agent, method=kind)
        return view

    def enroll_view(self, user: UserRecord, method_id: int, client: Client, now: float) -> EnrollmentView | None:
        method = self.rt.store.get_method(method_id)
        if method is None or method.user_id != user.id or method.confirmed:
            return None
        factor = self.rt.factors.get(method.kind)
        if factor is None:
            return None
        return factor.enroll_view(user, method, FactorContext(now=now, client_ip=client.ip,
                                                              user_agent=client.user_agent))

    def enroll_finish(self, user: UserRecord, method_id: int, response: Mapping[str, str], client: Client,
                      now: float) -> FactorResult:
        fresh = self.rt.store.get_user(user.username)
        method = self.rt.store.get_method(method_id)
        if fresh is None or method is None or method.user_id != fresh.id or method.confirmed:
            return FactorResult("rejected")
        if fresh.blocked(now):
            return FactorResult("blocked")
        if fresh.locked(now):
            return FactorResult("locked", fresh.locked_until)
        factor = self.rt.factors.get(method.kind)
        if factor is None:
            return FactorResult("rejected")
        result: Verification = factor.enroll_finish(
            fresh, method, response, FactorContext(now=now, client_ip=client.ip, user_agent=client.user_agent))
        if not result.accepted:
            self.fail_client(client, now)
            count, locked_until = self.fail(fresh, now)
            self.rt.audit.write("enroll", "failure", now=now, actor=user.username, username=user.username,
                                client_ip=client.ip, user_agent=client.user_agent, method=method.kind, count=count)
            if locked_until is not None and locked_until > now:
                return FactorResult("locked", locked_until)
            return FactorResult(result.outcome.value)
        self.rt.store.reset_failures(fresh.id)
        detail: dict[str, object] = {"method": method.kind}
        if fresh.state == "enabled":
            # Registration complete: the user is now enforced (DESIGN.md section 4).
            self.rt.store.update_user(fresh.id, now=now, state="enforced")
            # The primary password stops working on the Basic path: tell every process's Basic cache.
            self.rt.store.add_revocation(fresh.username, now=now, session_id=f"pw:{fresh.username}")
            detail.update(state="enforced", previous_state="enabled")
        self.rt.audit.write("enroll", "success", now=now, actor=user.username, username=user.username,
                            client_ip=client.ip, user_agent=client.user_agent, **detail)
        return FactorResult("accepted", method=method.kind)

    # -- lockout ---------------------------------------------------------------------------------------------
    def client_locked(self, client: Client, now: float) -> float | None:
        """Until when this client address is refused (too many failures over all accounts), or None."""
        if not self.rt.config.lockout.max_failures_per_client:
            return None
        return self.rt.store.client_locked_until(client.ip, now)

    def fail_client(self, client: Client, now: float) -> None:
        lo = self.rt.config.lockout
        if lo.max_failures_per_client:
            self.rt.store.record_client_failure(client.ip, now=now, max_failures=lo.max_failures_per_client,
                                                reset_after=lo.reset_after, lock_for=lo.client_lock_for)

    def fail(self, user: UserRecord, now: float) -> tuple[int, float | None]:
        """Count one failed attempt (any path). When it starts a lockout, tell every process's Basic cache."""
        lo = self.rt.config.lockout
        count, locked_until = self.rt.store.record_failure(user.id, now=now, max_failures=lo.max_failures,
                                                           reset_after=lo.reset_after, lock_for=lo.lock_for)
        if locked_until is not None and locked_until > now and not user.locked(now):
            self.rt.store.add_revocation(user.username, now=now, session_id=f"lock:{user.username}")
            self.rt.revocations.refresh(now)  # this process holds the lockout at once; the others within the interval
        return count, locked_until
