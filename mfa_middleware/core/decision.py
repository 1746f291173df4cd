"""The decision: what to do with one request on a protected route.

Rules (a table in code: the first row that applies wins):

====================================================  ===========================================
situation                                             outcome
====================================================  ===========================================
the path could not be parsed                          Deny 400
policy ``deny``                                       Deny 403
policy ``bypass``                                     Pass (identity attached when a valid session
                                                      came along, else none)
the revocation view is older than its grace period   Unavailable 503 (fail closed)
no valid session (absent, tampered, expired,          Redirect to sign-in, or Challenge 401 for a
revoked, or another Windows user than the session)    JSON client
session user not admitted by the rule's users/groups  Deny 403
``one_factor``                                        Pass
``two_factor`` and the session has a second factor    Pass
``two_factor`` and the user was exempt at sign-in     Pass if the rule allows exemptions, else
                                                      Redirect to step up (enrollment)
``two_factor``, a session made single-factor by a     Pass while the request comes from a network the
trusted network                                       rule trusts; from anywhere else Redirect to step
                                                      up (second factor), or Challenge 401 for JSON
``two_factor`` otherwise                              Redirect to step up (second factor), or
                                                      Challenge 401 for a JSON client
====================================================  ===========================================

A Pass carries a refreshed session when the last refresh is older than ``refresh_after``; the adapter then
sends a new cookie with the same session id and a new last-seen time.

The function gets facts and ``now`` and returns a frozen value. It reads no clock, store or environ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import quote

from .basic import BasicFailure, VerifiedCredential
from .facts import RequestFacts
from .networks import TRUSTED_NETWORK
from .policy import Requirement
from .tokens import Session, session_expired


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is making the request; handed to the app as ``environ["mfa.identity"]``."""

    username: str
    groups: tuple[str, ...]
    level: int  # 1: primary only; 2: second factor done
    methods: tuple[str, ...]
    primary_at: float
    mfa_at: float | None
    session_id: str
    exempt: bool
    admin: bool
    email: str | None = None
    name: str | None = None

    @classmethod
    def from_session(cls, s: Session) -> Identity:
        """The identity of a session, built once per Session object and kept on it (``Session.identity``): a
        browser repeating its cookie gets the Session the verified-cookie cache holds, and with it the same
        (immutable) Identity."""
        identity = s.identity
        if identity is None:
            identity = cls(s.username, s.groups, s.level, s.methods, s.primary_at, s.mfa_at, s.sid, s.exempt,
                           s.admin, s.email, s.name)
            object.__setattr__(s, "identity", identity)  # a memo of derived data: the Session's value is unchanged
        return identity


@dataclass(frozen=True, slots=True)
class RevocationView:
    """A snapshot of server-side revocations: per-user "not before" times, and revoked ids (session ids,
    ``ap:<id>`` for an app password, ``pw:<user>`` for a user's primary password on the Basic path) with the
    time each was revoked."""

    not_before: Mapping[str, float]
    revoked_sessions: Mapping[str, float]
    fetched_at: float

    def stale_credential(self, username: str, marker: str, verified_at: float) -> bool:
        """Whether a credential verified at ``verified_at`` was revoked since (by marker or for the user)."""
        revoked = self.revoked_sessions.get(marker)
        if revoked is not None and revoked >= verified_at:
            return True
        cutoff = self.not_before.get(username)
        return cutoff is not None and cutoff >= verified_at

    def revokes(self, session: Session) -> bool:
        if session.sid in self.revoked_sessions:
            return True
        cutoff = self.not_before.get(session.username)
        return cutoff is not None and session.issued_at <= cutoff


@dataclass(frozen=True, slots=True)
class Pass:
    identity: Identity | None
    refreshed: Session | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str
    clear_session: bool = False


@dataclass(frozen=True, slots=True)
class Challenge:
    """401 for a client that cannot follow a sign-in redirect (asked for JSON)."""

    login_url: str
    reason: str
    clear_session: bool = False


@dataclass(frozen=True, slots=True)
class BasicChallenge:
    """401 with ``WWW-Authenticate: Basic`` for a non-browser client on a Basic route."""

    reason: str


@dataclass(frozen=True, slots=True)
class Deny:
    status: int
    reason: str
    retry_after: int | None = None  # seconds, for 429 (a banned client address)


@dataclass(frozen=True, slots=True)
class Unavailable:
    reason: str


Decision = Pass | Redirect | Challenge | BasicChallenge | Deny | Unavailable

#: why a browser is sent to sign in again, added to the login URL as ``&reason=``: fixed codes the login page maps
#: to its own sentences (it shows nothing for any other value, so a link cannot put words on the page)
RESTART_EXPIRED = "expired"
RESTART_SIGNED_OUT = "signed_out"


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    prefix: str
    absolute_timeout: float
    inactivity_timeout: float
    refresh_after: float
    revocation_grace: float


def target_of(facts: RequestFacts) -> str:
    """The local URL to come back to after signing in."""
    path = facts.path or "/"
    return path + ("?" + facts.query if facts.query else "")


def sign_in_url(prefix: str, page: str, target: str) -> str:
    return f"{prefix}/{page}?next={quote(target, safe='/')}"


def decide(facts: RequestFacts, requirement: Requirement, session: Session | None, now: float,
           revocations: RevocationView, settings: DecisionSettings,
           remote_user: str | None = None) -> Decision:
    """Decide one request. ``session`` is the verified cookie payload (or None); ``remote_user`` is the
    store username the server's Windows authentication maps to, when that method is trusted."""
    if facts.path is None:
        return Deny(400, "The request path could not be understood.")
    policy = requirement.policy
    if policy == "deny":
        return Deny(403, "Access to this address is not allowed.")

    valid = session
    reason = "Sign-in required."
    restart = ""
    if valid is not None:
        if session_expired(valid, now, settings.absolute_timeout, settings.inactivity_timeout):
            valid, reason, restart = None, "Your session has expired. Sign in again.", RESTART_EXPIRED
        elif remote_user is not None and remote_user != valid.username:
            valid = None

    if policy == "bypass":
        if valid is None or now - revocations.fetched_at > settings.revocation_grace or revocations.revokes(valid):
            return Pass(None)
        return Pass(Identity.from_session(valid))

    if now - revocations.fetched_at > settings.revocation_grace:
        return Unavailable("The sign-in service cannot reach its store.")
    if valid is not None and revocations.revokes(valid):
        valid, reason, restart = None, "Your session has ended. Sign in again.", RESTART_SIGNED_OUT
    if valid is None:
        stale = facts.session_cookie is not None  # expired, revoked, tampered or unreadable: clear it
        login = sign_in_url(settings.prefix, "login", target_of(facts))
        if facts.wants_json:
            return Challenge(login, reason, clear_session=stale)
        return Redirect(login + "&reason=" + restart if restart else login, clear_session=stale)

    if not requirement.admits(valid.username, valid.groups):
        return Deny(403, "Your account is not allowed to open this address.")
    if policy == "two_factor" and valid.level < 2:
        on_network = TRUSTED_NETWORK in valid.methods and requirement.trusts(facts.client_ip)
        if not (valid.exempt and requirement.exempt) and not on_network:
            step_up = sign_in_url(settings.prefix, "step-up", target_of(facts))
            if facts.wants_json:
                return Challenge(step_up, "A second factor is required.")
            return Redirect(step_up)

    refreshed = None
    if now - valid.last_seen >= settings.refresh_after:
        refreshed = replace(valid, last_seen=now)
    return Pass(Identity.from_session(valid), refreshed)


BASIC_MESSAGES = {
    "malformed": "Send a username and an app password with HTTP Basic authentication.",
    # One answer for a wrong password, an unknown user, a user without a local password and a locked account or
    # client address: a lockout must not tell an attacker which accounts exist (DESIGN.md section 5).
    "invalid": ("The username or password is not correct. After repeated failures sign-in is paused for a while; "
                "wait and try again, or ask your helpdesk."),
    "blocked": "This account is blocked. Contact your helpdesk.",
    "banned": ("There were too many failed sign-in attempts from your network. Sign-in from here is paused; try "
               "again later, or ask your helpdesk."),
    "app_password_required": ("This account uses multi-factor authentication: this client needs an app password, "
                              "not your main password. Create one on your security info page."),
}


def decide_basic(facts: RequestFacts, requirement: Requirement, verdict: VerifiedCredential | BasicFailure,
                 now: float, revocations: RevocationView, settings: DecisionSettings) -> Decision:
    """Decide a request on a ``basic = true`` rule that came with (or needs) HTTP Basic credentials.

    ==========================================  ==========================================================
    situation                                   outcome
    ==========================================  ==========================================================
    the path could not be parsed                Deny 400
    the store or the revocation view is down    Unavailable 503
    the client address is banned (regulation)   Deny 429 with Retry-After (names no account)
    no or bad credential                        BasicChallenge 401
    the user is not admitted by users/groups    Deny 403
    app password                                Pass, level 2 (satisfies two_factor on Basic routes only)
    primary password (state allows it)          Pass on one_factor; on two_factor only if the rule allows
                                                exemptions, else BasicChallenge (app password required)
    primary password accepted only because the  Pass (level 1) while the request comes from a network the
    client was on a trusted network             rule trusts; from elsewhere BasicChallenge (app password
                                                required)
    ==========================================  ==========================================================
    """
    if facts.path is None:
        return Deny(400, "The request path could not be understood.")
    if now - revocations.fetched_at > settings.revocation_grace:
        return Unavailable("The sign-in service cannot reach its store.")
    if isinstance(verdict, BasicFailure):
        if verdict.reason == "unavailable":
            return Unavailable("The sign-in service cannot reach its store.")
        if verdict.reason == "banned":  # the client address: the same whatever username was sent
            seconds = 86400 if verdict.until is None else max(1, min(86400, int(verdict.until - now + 0.999)))
            return Deny(429, BASIC_MESSAGES["banned"], retry_after=seconds)
        return BasicChallenge(BASIC_MESSAGES.get(verdict.reason, BASIC_MESSAGES["invalid"]))
    if not requirement.admits(verdict.username, verdict.groups):
        return Deny(403, "Your account is not allowed to open this address.")
    methods: tuple[str, ...]
    if verdict.kind == "app_password":
        level, methods = 2, ("app_password",)
    elif verdict.kind == TRUSTED_NETWORK:
        if not requirement.trusts(facts.client_ip):
            return BasicChallenge(BASIC_MESSAGES["app_password_required"])
        level, methods = 1, ("basic", TRUSTED_NETWORK)
    else:
        if requirement.policy == "two_factor" and not requirement.exempt:
            return BasicChallenge(BASIC_MESSAGES["app_password_required"])
        level, methods = 1, ("basic",)
    identity = Identity(username=verdict.username, groups=verdict.groups, level=level, methods=methods,
                        primary_at=verdict.verified_at, mfa_at=verdict.verified_at if level == 2 else None,
                        session_id="basic:" + verdict.marker, exempt=level == 1, admin=verdict.admin,
                        email=verdict.email, name=verdict.name)
    return Pass(identity)
