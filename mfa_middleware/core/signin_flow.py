"""The sign-in as a state machine, written as tables (in the manner of h11's ``_state.py``).

Rules:

1. The stage of a sign-in is DERIVED at every request from the user's CURRENT record and the signed pending
   state; it is never read from a cookie. The pending cookie says only who passed which primary step when, where
   to go afterwards, and which enrollment is in flight. A cookie issued under other circumstances (before the
   user enrolled, before a password change) therefore cannot steer the sign-in anywhere the current record does
   not allow.
2. ``STAGE_RULES`` is read top to bottom; the first row whose condition holds gives the stage. A user who is
   gone ends the sign-in; a blocked user goes no further (and is told so, also when the block revoked the
   sign-in, as a fraud report does); a sign-in revoked after it passed its primary step (password change,
   "revoke sessions", re-registration, delete) ends; a locked user goes no further.
3. Enrollment is possible only while the user has no confirmed method. A user with a method is asked for it,
   whatever their state: an MFA-exempt (``disabled``) user who meets a rule that refuses exemptions is asked for
   the method they have, not offered a new one. Adding a method to an account that has one happens from a full
   session with a fresh second factor, never from a sign-in.
4. Exemption (``disabled``: primary only) applies only where the caller says the target allows it (right after
   the primary step). A pending sign-in exists because a second factor is required, so it never becomes exempt.
5. ``TRANSITIONS`` lists, per stage, the events a request may carry. Anything else raises
   :class:`IllegalMove` naming the stage and the event; the pages turn it into a redirect to the page of the
   current stage (or the "sign-in ended" page).

Pure: no clock, store or request here. Callers gather :class:`UserFacts` and pass them in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Stage(str, Enum):
    EXEMPT = "exempt"  # done with the primary step alone (MFA-exempt user, where the target allows it)
    VERIFY = "verify"  # ask for one of the user's confirmed methods
    ENROLL = "enroll"  # the user has no confirmed method: set one up now
    BLOCKED = "blocked"  # an administrator blocked the account
    LOCKED = "locked"  # too many failed attempts: paused
    ENDED = "ended"  # the sign-in no longer stands (user gone, revoked, expired): start again


class Event(str, Enum):
    SHOW = "show"  # render the page of the stage
    ANSWER = "answer"  # submit an answer for a confirmed method
    ENROLL_START = "enroll_start"  # start setting up a method
    ENROLL_CONFIRM = "enroll_confirm"  # confirm the method being set up with an answer from it
    CANCEL = "cancel"  # give up and sign out


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What the store says about the user NOW, as far as a sign-in in progress is concerned."""

    exists: bool
    state: str  # disabled | enabled | enforced
    confirmed_methods: int
    blocked: bool
    locked: bool
    #: a user-wide revocation (or one of this sign-in) was written at or after the primary step
    revoked: bool
    expired: bool = False


MISSING = UserFacts(exists=False, state="enabled", confirmed_methods=0, blocked=False, locked=False, revoked=False)

#: (condition, stage): the first row that holds decides. ``exempt_ok`` is whether the target allows exemption.
STAGE_RULES: tuple[tuple[Callable[[UserFacts, bool], bool], Stage], ...] = (
    (lambda f, exempt_ok: not f.exists, Stage.ENDED),
    (lambda f, exempt_ok: f.blocked, Stage.BLOCKED),
    (lambda f, exempt_ok: f.revoked or f.expired, Stage.ENDED),
    (lambda f, exempt_ok: f.locked, Stage.LOCKED),
    (lambda f, exempt_ok: exempt_ok and f.state == "disabled", Stage.EXEMPT),
    (lambda f, exempt_ok: f.confirmed_methods > 0, Stage.VERIFY),
    (lambda f, exempt_ok: True, Stage.ENROLL),
)

#: The events each stage accepts. Terminal stages accept only a cancel (sign out).
TRANSITIONS: dict[Stage, frozenset[Event]] = {
    Stage.VERIFY: frozenset({Event.SHOW, Event.ANSWER, Event.CANCEL}),
    Stage.ENROLL: frozenset({Event.SHOW, Event.ENROLL_START, Event.ENROLL_CONFIRM, Event.CANCEL}),
    Stage.EXEMPT: frozenset({Event.CANCEL}),
    Stage.BLOCKED: frozenset({Event.CANCEL}),
    Stage.LOCKED: frozenset({Event.CANCEL}),
    Stage.ENDED: frozenset({Event.CANCEL}),
}

#: The page that serves each stage in progress.
PAGES: dict[Stage, str] = {Stage.VERIFY: "verify", Stage.ENROLL: "enroll"}


class IllegalMove(Exception):
    """An event the current stage does not accept (an old form, a replayed cookie, a forged request)."""

    def __init__(self, stage: Stage, event: Event) -> None:
        super().__init__(f"a sign-in at stage {stage.value!r} cannot take event {event.value!r}")
        self.stage = stage
        self.event = event


def stage_of(facts: UserFacts, *, exempt_ok: bool = False) -> Stage:
    """The stage a sign-in of a user with these ``facts`` is at (rule 2). ``exempt_ok``: right after the primary
    step, when the target allows MFA-exempt users through (rule 4)."""
    for condition, stage in STAGE_RULES:
        if condition(facts, exempt_ok):
            return stage
    raise AssertionError("STAGE_RULES ends with a catch-all row")  # pragma: no cover


def advance(facts: UserFacts, event: Event) -> Stage:
    """The stage for ``facts`` if it accepts ``event``; raises :class:`IllegalMove` otherwise."""
    stage = stage_of(facts)
    if event not in TRANSITIONS[stage]:
        raise IllegalMove(stage, event)
    return stage


__all__ = ["IllegalMove", "MISSING", "PAGES", "STAGE_RULES", "Stage", "TRANSITIONS", "UserFacts", "advance",
           "Event", "stage_of"]
