"""The second-factor protocol, shared by every method.

A factor is one kind of second factor (TOTP, SMS code, push, WebAuthn, ...). Each has one of three interaction
kinds, which tells the pages how to talk to the user:

- ``code``: the user types a code (TOTP, backup code, SMS, email, OATH token). ``begin`` may send the code;
  ``verify`` gets ``{"code": ...}`` and answers accepted or rejected.
- ``out_of_band``: a device answers elsewhere (push with number matching, voice call "press #"). ``begin``
  starts it; the page polls ``verify`` with an empty response, which answers pending until the device has
  answered, then accepted, rejected or fraud.
- ``ceremony``: browser JavaScript talks to an authenticator (WebAuthn). ``begin`` returns the options for
  the script; ``verify`` gets what the script posted back.

Every method is called by the pages app (never by the core) with a :class:`FactorContext` carrying the time
and client; a factor reads no clock of its own. Methods may raise
:class:`mfa_middleware.store.StoreUnavailable`, which the pages turn into a 503 page; any other exception is
a bug.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..store import MethodRecord, UserRecord

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response


class Interaction(str, Enum):
    CODE = "code"
    OUT_OF_BAND = "out_of_band"
    CEREMONY = "ceremony"


class Outcome(str, Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # wrong answer: counts as a failed attempt
    REPLAYED = "replayed"  # right answer already used: counts as a failed attempt
    PENDING = "pending"  # out-of-band: not answered yet (does not count)
    FRAUD = "fraud"  # out-of-band: the user reported the attempt


@dataclass(frozen=True, slots=True)
class FactorContext:
    """What a factor may know about the request that calls it (it reads no clock, request or cookie itself)."""

    now: float
    client_ip: str
    user_agent: str
    #: enrollment may confirm a method only while the user has no other confirmed one (a sign-in's enrollment);
    #: adding a method to an account that has one passes False, from a full session with a fresh second factor
    first_method_only: bool = True
    #: the sign-in attempt (or enrollment) this call belongs to: one-time codes are bound to it, and
    #: :meth:`Factor.begin` sends at most once per attempt
    attempt_id: str = ""
    site_name: str = ""
    #: the origin the browser sees (``https://intranet.example.com``): passkeys and links in messages need it
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Verification:
    outcome: Outcome
    #: for TOTP-like factors: the time step that was accepted
    step: int | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


@dataclass(frozen=True, slots=True)
class EnrollField:
    """One input a method asks for before it can be set up (an email address, a token's serial number)."""

    name: str
    label: str
    input_type: str = "text"  # the HTML input type: text | email | tel
    autocomplete: str = "off"
    hint: str = ""
    max_length: int = 200


class EnrollError(ValueError):
    """The enrollment inputs cannot be used; the message says why, in words for the user."""


@dataclass(frozen=True, slots=True)
class EnrollmentView:
    """What the enrollment page shows for a method being set up (never stored in a cookie)."""

    method_id: int
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the second-factor page shows when a sign-in uses a method."""

    interaction: Interaction
    message: str
    data: Mapping[str, str] = field(default_factory=dict)


class TooSoon(Exception):
    """A code or call was asked for too early or too often (a resend before its time, a cap per hour or day); the
    message says when to try again, in words for the user."""


class Access(str, Enum):
    """Who may reach a method's own route; the pages check it before the method's handler runs."""

    #: a sign-in attempt at its second-factor step, using this method (the pending cookie, the state machine's
    #: verify stage); a POST must carry the attempt's CSRF token
    SIGN_IN = "sign_in"
    #: a signed-in user whose second factor is at most ``FRESH_MFA`` seconds old; a POST must carry the session's
    #: CSRF token
    FRESH_SESSION = "fresh_session"
    #: no cookie at all: a provider's callback, which the handler authenticates itself (a signature)
    PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class FactorRoute:
    """A page or endpoint a method owns ("Send a new code", a call's script, a provider's callback). ``path`` is
    a werkzeug rule under the prefix (``/email/resend``, ``/voice/answer/<token>``); its variables reach the
    handler as keyword arguments."""

    path: str
    name: str
    access: Access
    methods: tuple[str, ...] = ("GET",)


class RouteContext(Protocol):
    """What the pages hand a method's route handler, once the route's :class:`Access` has been checked."""

    request: Request
    now: float
    client_ip: str
    user_agent: str
    #: the signed-in user (``FRESH_SESSION``), the user signing in (``SIGN_IN``), None (``PUBLIC``)
    user: UserRecord | None
    #: ``SIGN_IN`` only: the method this attempt uses (the handler's own kind)
    method: MethodRecord | None
    factor_context: FactorContext
    #: a CSRF token for forms the handler renders (bound to the attempt or the session)
    csrf: str
    #: where to continue afterwards (a checked local path)
    next: str

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        """A page in the product's layout (the method's templates are ``<kind>/...``)."""
        ...

    def verify_page(self, *, error: str | None = None, notice: str | None = None, status: int = 200) -> Response:
        """``SIGN_IN`` only: the method's second-factor page again, with a message."""
        ...

    def cannot_send(self, exc: Exception) -> Response:
        """``SIGN_IN`` only: a code or call could not be sent (gateway down, a limit): the other methods."""
        ...

    def message(self, title: str, message: str, status: int = 200) -> Response:
        ...

    def redirect(self, location: str) -> Response:
        ...

    def url(self, page: str) -> str:
        """The address of a page under the prefix (``url("verify")``)."""
        ...

    def audit(self, event: str, result: str, **detail: object) -> None:
        """An audit row for this request's user (or anonymous), client address and user agent."""
        ...


@runtime_checkable
class Factor(Protocol):
    """One kind of second factor. See the module docstring for the interaction kinds.

    A factor owns its storage (through the store), its screens (templates named ``<kind>/verify.html`` and
    ``<kind>/enroll.html`` in the package that :attr:`templates` names) and its configuration. The pages app calls
    it; the core never does. Every method may raise :class:`mfa_middleware.store.StoreUnavailable`.
    """

    #: stored in ``mfa_methods.kind``; unique in a registry
    kind: str
    #: shown to users ("Authenticator app")
    label: str
    #: one sentence on the "How should we verify you?" page
    description: str
    interaction: Interaction
    #: the package whose ``templates`` folder holds ``verify.html`` and ``enroll.html`` (mounted as ``<kind>/``)
    templates: str
    #: what the user enters before :meth:`enroll_begin` (empty: nothing)
    enroll_fields: tuple[EnrollField, ...]
    #: False for a method that only backs up the others (backup codes): never offered as the first method and
    #: never the default
    standalone: bool
    #: how many of this kind one user may have
    max_per_user: int
    #: the method's own pages and endpoints (empty for most)
    routes: tuple[FactorRoute, ...]

    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        """Runs when the user chooses to set up this method, with the :attr:`enroll_fields` they entered. Creates
        an unconfirmed method in the store (and sends a proof code where the method needs one) and returns what
        the page shows. Raises :class:`EnrollError` for unusable inputs. Nothing is usable until
        :meth:`enroll_finish` accepts."""
        ...

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        """Shows an unconfirmed method again (after a wrong confirmation code, or a page reload). No side
        effects."""
        ...

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        """Checks the user's proof of possession and, when accepted, confirms the method (atomically, once)."""
        ...

    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        """Runs when a sign-in attempt (``ctx.attempt_id``) first uses this method: send the code, start the push.
        Idempotent per attempt: a second call for the same attempt sends nothing (a page reload must never cost
        a paid message). May raise :class:`mfa_middleware.gateways.GatewayUnavailable`."""
        ...

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        """What the second-factor page shows for this method. No side effects: runs on every render."""
        ...

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        """Checks the user's answer. Must be safe under concurrent calls: an answer is accepted at most once."""
        ...

    def handle(self, route: str, rctx: RouteContext, **args: str) -> Response:
        """Answers one of :attr:`routes` (by name), after the pages checked its :class:`Access`."""
        ...


class NoRoutes:
    """For methods without routes of their own."""

    routes: tuple[FactorRoute, ...] = ()

    def handle(self, route: str, rctx: RouteContext, **args: str) -> Response:
        from werkzeug.exceptions import NotFound

        raise NotFound()


class FactorRegistry:
    """The factors one middleware instance offers, by kind. Instance-level: two middlewares in one process
    may offer different factors."""

    def __init__(self) -> None:
        self._factors: dict[str, Factor] = {}

    def register(self, factor: Factor) -> None:
        if not isinstance(factor, Factor):
            raise TypeError(f"{factor!r} does not implement the Factor protocol")
        if factor.kind in self._factors:
            raise ValueError(f"a factor of kind {factor.kind!r} is already registered")
        self._factors[factor.kind] = factor

    def get(self, kind: str) -> Factor | None:
        return self._factors.get(kind)

    def __iter__(self) -> Iterator[Factor]:
        return iter(self._factors.values())

    def kinds(self) -> tuple[str, ...]:
        return tuple(self._factors)
