"""The sign-in state machine (core/signin_flow.py) as tables: every row of STAGE_RULES and TRANSITIONS."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mfa_middleware.core.signin_flow import (MISSING, PAGES, TRANSITIONS, Event, IllegalMove, Stage, UserFacts,
                                             advance, stage_of)

ENROLLED = UserFacts(exists=True, state="enforced", confirmed_methods=1, blocked=False, locked=False, revoked=False)
NEW = replace(ENROLLED, state="enabled", confirmed_methods=0)


@pytest.mark.parametrize(("facts", "exempt_ok", "stage"), [
    pytest.param(MISSING, True, Stage.ENDED, id="user-gone"),
    pytest.param(replace(ENROLLED, revoked=True), False, Stage.ENDED, id="revoked-since-primary"),
    pytest.param(replace(ENROLLED, expired=True), False, Stage.ENDED, id="expired"),
    pytest.param(replace(ENROLLED, revoked=True, blocked=True), False, Stage.BLOCKED, id="blocked-beats-revoked"),
    pytest.param(replace(ENROLLED, blocked=True, locked=True), False, Stage.BLOCKED, id="blocked-beats-locked"),
    pytest.param(replace(ENROLLED, locked=True), False, Stage.LOCKED, id="locked"),
    pytest.param(replace(NEW, state="disabled", locked=True), True, Stage.LOCKED, id="locked-exempt-user"),
    pytest.param(replace(NEW, state="disabled"), True, Stage.EXEMPT, id="exempt-after-primary"),
    pytest.param(replace(ENROLLED, state="disabled"), True, Stage.EXEMPT, id="exempt-with-method-after-primary"),
    pytest.param(replace(ENROLLED, state="disabled"), False, Stage.VERIFY, id="exempt-with-method-strict-rule"),
    pytest.param(replace(NEW, state="disabled"), False, Stage.ENROLL, id="exempt-without-method-strict-rule"),
    pytest.param(ENROLLED, True, Stage.VERIFY, id="enforced-verify"),
    pytest.param(replace(ENROLLED, state="enabled"), False, Stage.VERIFY, id="enabled-with-method-verify"),
    pytest.param(NEW, True, Stage.ENROLL, id="enabled-without-method-enroll"),
    pytest.param(replace(NEW, state="enforced"), False, Stage.ENROLL, id="enforced-without-method-enroll"),
])
def test_stage_rules(facts: UserFacts, exempt_ok: bool, stage: Stage) -> None:
    assert stage_of(facts, exempt_ok=exempt_ok) is stage


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("event", list(Event))
def test_transitions_table_is_total(stage: Stage, event: Event) -> None:
    """Every (stage, event) pair is either listed as allowed or refused; nothing is left undefined."""
    assert stage in TRANSITIONS
    assert (event in TRANSITIONS[stage]) == (
        event is Event.CANCEL
        or (stage is Stage.VERIFY and event in (Event.SHOW, Event.ANSWER))
        or (stage is Stage.ENROLL and event in (Event.SHOW, Event.ENROLL_START, Event.ENROLL_CONFIRM)))


@pytest.mark.parametrize(("facts", "event", "stage"), [
    pytest.param(ENROLLED, Event.ANSWER, Stage.VERIFY, id="verify-answer"),
    pytest.param(NEW, Event.ENROLL_START, Stage.ENROLL, id="enroll-start"),
    pytest.param(NEW, Event.ENROLL_CONFIRM, Stage.ENROLL, id="enroll-confirm"),
    pytest.param(replace(ENROLLED, locked=True), Event.CANCEL, Stage.LOCKED, id="cancel-while-locked"),
])
def test_allowed_moves(facts: UserFacts, event: Event, stage: Stage) -> None:
    assert advance(facts, event) is stage


@pytest.mark.parametrize(("facts", "event", "stage"), [
    pytest.param(ENROLLED, Event.ENROLL_START, Stage.VERIFY, id="enroll-once-enrolled"),
    pytest.param(ENROLLED, Event.ENROLL_CONFIRM, Stage.VERIFY, id="confirm-once-enrolled"),
    pytest.param(NEW, Event.ANSWER, Stage.ENROLL, id="answer-without-method"),
    pytest.param(replace(ENROLLED, revoked=True), Event.ANSWER, Stage.ENDED, id="answer-after-revocation"),
    pytest.param(replace(NEW, revoked=True), Event.ENROLL_CONFIRM, Stage.ENDED, id="enroll-after-revocation"),
    pytest.param(replace(ENROLLED, blocked=True), Event.ANSWER, Stage.BLOCKED, id="answer-while-blocked"),
    pytest.param(replace(ENROLLED, locked=True), Event.ANSWER, Stage.LOCKED, id="answer-while-locked"),
    pytest.param(MISSING, Event.SHOW, Stage.ENDED, id="show-user-gone"),
    pytest.param(replace(ENROLLED, state="disabled"), Event.ENROLL_START, Stage.VERIFY,
                 id="exempt-user-cannot-enroll-a-second-method"),
])
def test_illegal_moves_name_the_stage(facts: UserFacts, event: Event, stage: Stage) -> None:
    with pytest.raises(IllegalMove) as caught:
        advance(facts, event)
    assert caught.value.stage is stage and caught.value.event is event
    assert stage.value in str(caught.value) and event.value in str(caught.value)


def test_every_stage_in_progress_has_a_page() -> None:
    assert set(PAGES) == {Stage.VERIFY, Stage.ENROLL}
