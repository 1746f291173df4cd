"""The request decision (core/decision.py) as tables with a fixed clock: every row of ``decide`` and
``decide_basic``, with the outcome type, status and location each gives."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest

from mfa_middleware.core.basic import BasicFailure, VerifiedCredential
from mfa_middleware.core.decision import (BASIC_MESSAGES, BasicChallenge, Challenge, DecisionSettings, Deny, Pass,
                                          Redirect, RevocationView, Unavailable, decide, decide_basic)
from mfa_middleware.core.facts import RequestFacts
from mfa_middleware.core.policy import Requirement
from mfa_middleware.core.tokens import Session

NOW = 1_800_000_000.0
SETTINGS = DecisionSettings(prefix="/_mfa", absolute_timeout=12 * 3600, inactivity_timeout=1800,
                            refresh_after=300, revocation_grace=15)
FRESH = RevocationView(MappingProxyType({}), MappingProxyType({}), fetched_at=NOW - 1)
STALE = RevocationView(MappingProxyType({}), MappingProxyType({}), fetched_at=NOW - 16)
USER_REVOKED = RevocationView(MappingProxyType({"alice": NOW - 10}), MappingProxyType({}), fetched_at=NOW - 1)
SID_REVOKED = RevocationView(MappingProxyType({}), MappingProxyType({"sid1": NOW - 10}), fetched_at=NOW - 1)
FULL = Session(sid="sid1", username="alice", groups=("staff",), level=2, methods=("forms", "totp"),
               primary_at=NOW - 60, mfa_at=NOW - 50, issued_at=NOW - 60, last_seen=NOW - 30, exempt=False)
ONE = replace(FULL, level=1, methods=("forms",), mfa_at=None)
EXEMPT = replace(ONE, exempt=True)
HTML = RequestFacts("GET", "/x", "a=1", "https", "10.0.0.1", "cookie", None, False, True)
JSON = HTML._replace(wants_json=True, wants_html=False)
NO_COOKIE = HTML._replace(session_cookie=None)

TWO = Requirement("two_factor")
STRICT = Requirement("two_factor", exempt=False)


def outcome(decision: Any) -> tuple[str, Any]:
    kind = type(decision).__name__
    if isinstance(decision, Pass):
        return kind, None if decision.identity is None else decision.identity.level
    if isinstance(decision, Redirect):
        return kind, (decision.location, decision.clear_session)
    if isinstance(decision, Challenge):
        return kind, (decision.login_url, decision.clear_session)
    if isinstance(decision, Deny):
        return kind, decision.status
    if isinstance(decision, BasicChallenge):
        return kind, decision.reason
    assert isinstance(decision, Unavailable)
    return kind, None


LOGIN = ("/_mfa/login?next=/x%3Fa%3D1", False)
LOGIN_CLEAR = ("/_mfa/login?next=/x%3Fa%3D1", True)
#: a session that expired or was ended says why (a fixed code the login page turns into a sentence)
LOGIN_EXPIRED = ("/_mfa/login?next=/x%3Fa%3D1&reason=expired", True)
LOGIN_SIGNED_OUT = ("/_mfa/login?next=/x%3Fa%3D1&reason=signed_out", True)
STEP_UP = ("/_mfa/step-up?next=/x%3Fa%3D1", False)


@pytest.mark.parametrize(("facts", "requirement", "session", "view", "remote", "expected"), [
    pytest.param(HTML._replace(path=None), TWO, FULL, FRESH, None, ("Deny", 400), id="unparseable-path"),
    pytest.param(HTML, Requirement("deny"), FULL, FRESH, None, ("Deny", 403), id="deny-rule"),
    pytest.param(NO_COOKIE, Requirement("bypass"), None, FRESH, None, ("Pass", None), id="bypass-anonymous"),
    pytest.param(HTML, Requirement("bypass"), FULL, FRESH, None, ("Pass", 2), id="bypass-with-session"),
    pytest.param(HTML, Requirement("bypass"), FULL, STALE, None, ("Pass", None), id="bypass-stale-view-no-identity"),
    pytest.param(HTML, Requirement("bypass"), FULL, USER_REVOKED, None, ("Pass", None), id="bypass-revoked"),
    pytest.param(HTML, TWO, FULL, STALE, None, ("Unavailable", None), id="stale-view-fails-closed"),
    pytest.param(NO_COOKIE, TWO, None, FRESH, None, ("Redirect", LOGIN), id="no-session-redirect"),
    pytest.param(JSON._replace(session_cookie=None), TWO, None, FRESH, None, ("Challenge", LOGIN),
                 id="no-session-json-401"),
    pytest.param(HTML, TWO, None, FRESH, None, ("Redirect", LOGIN_CLEAR), id="bad-cookie-cleared"),
    pytest.param(HTML, TWO, replace(FULL, issued_at=NOW - 13 * 3600, last_seen=NOW - 10), FRESH, None,
                 ("Redirect", LOGIN_EXPIRED), id="absolute-timeout"),
    pytest.param(HTML, TWO, replace(FULL, last_seen=NOW - 1801), FRESH, None, ("Redirect", LOGIN_EXPIRED),
                 id="inactivity-timeout"),
    pytest.param(HTML, TWO, replace(FULL, issued_at=NOW + 120, last_seen=NOW + 120), FRESH, None,
                 ("Redirect", LOGIN_EXPIRED), id="from-the-future"),
    pytest.param(HTML, TWO, FULL, USER_REVOKED, None, ("Redirect", LOGIN_SIGNED_OUT), id="user-wide-revocation"),
    pytest.param(HTML, TWO, FULL, SID_REVOKED, None, ("Redirect", LOGIN_SIGNED_OUT), id="session-revoked"),
    pytest.param(HTML, TWO, FULL, FRESH, "bob", ("Redirect", LOGIN_CLEAR), id="other-windows-user"),
    pytest.param(HTML, TWO, FULL, FRESH, "alice", ("Pass", 2), id="same-windows-user"),
    pytest.param(HTML, Requirement("two_factor", groups=frozenset({"admins"})), FULL, FRESH, None, ("Deny", 403),
                 id="group-not-admitted"),
    pytest.param(HTML, Requirement("two_factor", users=frozenset({"alice"})), FULL, FRESH, None, ("Pass", 2),
                 id="user-admitted"),
    pytest.param(HTML, Requirement("one_factor"), ONE, FRESH, None, ("Pass", 1), id="one-factor"),
    pytest.param(HTML, TWO, FULL, FRESH, None, ("Pass", 2), id="two-factor"),
    pytest.param(HTML, TWO, EXEMPT, FRESH, None, ("Pass", 1), id="exempt-allowed"),
    pytest.param(HTML, STRICT, EXEMPT, FRESH, None, ("Redirect", STEP_UP), id="exempt-refused-steps-up"),
    pytest.param(HTML, TWO, ONE, FRESH, None, ("Redirect", STEP_UP), id="one-factor-session-steps-up"),
    pytest.param(JSON, TWO, ONE, FRESH, None, ("Challenge", STEP_UP), id="one-factor-session-json-401"),
])
def test_decide(facts: RequestFacts, requirement: Requirement, session: Session | None, view: RevocationView,
                remote: str | None, expected: tuple[str, Any]) -> None:
    assert outcome(decide(facts, requirement, session, NOW, view, SETTINGS, remote)) == expected


def test_pass_refreshes_only_when_due() -> None:
    fresh = decide(HTML, TWO, FULL, NOW, FRESH, SETTINGS)
    assert isinstance(fresh, Pass) and fresh.refreshed is None
    due = decide(HTML, TWO, replace(FULL, last_seen=NOW - 300), NOW, FRESH, SETTINGS)
    assert isinstance(due, Pass) and due.refreshed is not None
    assert due.refreshed.sid == FULL.sid and due.refreshed.last_seen == NOW


APP = VerifiedCredential("alice", ("staff",), False, "app_password", "ap:1", NOW - 5)
PRIMARY = replace(APP, kind="primary", marker="pw:alice")
BASIC = Requirement("two_factor", basic=True)


@pytest.mark.parametrize(("facts", "requirement", "verdict", "view", "expected"), [
    pytest.param(HTML._replace(path=None), BASIC, APP, FRESH, ("Deny", 400), id="unparseable-path"),
    pytest.param(HTML, BASIC, APP, STALE, ("Unavailable", None), id="stale-view"),
    pytest.param(HTML, BASIC, BasicFailure("unavailable"), FRESH, ("Unavailable", None), id="store-down"),
    pytest.param(HTML, BASIC, BasicFailure("malformed"), FRESH, ("BasicChallenge", BASIC_MESSAGES["malformed"]),
                 id="malformed"),
    pytest.param(HTML, BASIC, BasicFailure("invalid"), FRESH, ("BasicChallenge", BASIC_MESSAGES["invalid"]),
                 id="invalid"),
    pytest.param(HTML, BASIC, BasicFailure("no-such-reason"), FRESH, ("BasicChallenge", BASIC_MESSAGES["invalid"]),
                 id="unknown-reason-is-invalid"),
    pytest.param(HTML, replace(BASIC, groups=frozenset({"admins"})), APP, FRESH, ("Deny", 403),
                 id="group-not-admitted"),
    pytest.param(HTML, BASIC, APP, FRESH, ("Pass", 2), id="app-password-two-factor"),
    pytest.param(HTML, replace(BASIC, policy="one_factor"), PRIMARY, FRESH, ("Pass", 1), id="primary-one-factor"),
    pytest.param(HTML, BASIC, PRIMARY, FRESH, ("Pass", 1), id="primary-two-factor-exempt-allowed"),
    pytest.param(HTML, replace(BASIC, exempt=False), PRIMARY, FRESH,
                 ("BasicChallenge", BASIC_MESSAGES["app_password_required"]), id="primary-strict-refused"),
])
def test_decide_basic(facts: RequestFacts, requirement: Requirement, verdict: VerifiedCredential | BasicFailure,
                      view: RevocationView, expected: tuple[str, Any]) -> None:
    assert outcome(decide_basic(facts, requirement, verdict, NOW, view, SETTINGS)) == expected


def test_basic_identity_never_claims_a_browser_session() -> None:
    decision = decide_basic(HTML, BASIC, APP, NOW, FRESH, SETTINGS)
    assert isinstance(decision, Pass) and decision.identity is not None
    assert decision.identity.session_id == "basic:ap:1" and decision.identity.methods == ("app_password",)
    assert decision.refreshed is None
