"""Fraud reports (:mod:`mfa_middleware.services.fraud`): a report blocks for 90 days by default and ends every
session, the blocked user is refused at the forms sign-in, ``block_on_report = false`` only records, a replayed
reference writes once (also when replays race), administrators are notified by email through a real SMTP server
and by a signed webhook to a real receiver that checks the signature, failed notifications never undo the block,
``user unblock`` ends it, and the ``[fraud]`` table's errors name the key. Store tests run on SQLite and
PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mfa_middleware.config import ConfigError
from mfa_middleware.gateways.smtp import SmtpGateway
from mfa_middleware.services.audit import AuditLog
from mfa_middleware.services.fraud import (BLOCK_REASON, FraudReports, FraudResult, FraudSettings,
                                           fraud_settings_from_dict, reference_digest, sign_webhook)
from mfa_middleware.store import Store, UserRecord
from tests.store.test_concurrency import run_together
from tests.support.fraud_webhook import webhook_receiver
from tests.support.mfa import START, Browser, Clock, make_middleware
from tests.support.servers import free_port
from tests.support.smtp import smtp_server

PASSWORD = "correct horse battery staple"
DAYS = 86400.0
WEBHOOK_SECRET = "w" * 32
CALLER = {"client_ip": "203.0.113.9", "user_agent": "Twilio/callback"}


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    try:
        store.upgrade()
        yield store
    finally:
        store.close()


@pytest.fixture
def alice(store: Store) -> UserRecord:
    return store.create_user("alice", now=START)


def service(store: Store, settings: FraudSettings | None = None, **kwargs: Any) -> FraudReports:
    return FraudReports(store, AuditLog(store), settings or FraudSettings(), site_name="Contoso sign-in", **kwargs)


def current(store: Store, name: str = "alice") -> UserRecord:
    user = store.get_user(name)
    assert user is not None
    return user


# -- blocking -----------------------------------------------------------------------------------------------------
def test_a_report_blocks_for_90_days_and_ends_every_session(store: Store, alice: UserRecord) -> None:
    outcome = service(store).report(alice, "phone_call", now=START, reference="challenge-1", **CALLER)

    assert outcome.result is FraudResult.REPORTED and outcome.blocked_until == START + 90 * DAYS
    user = current(store)
    assert user.blocked(START + 90 * DAYS - 1) and not user.blocked(START + 90 * DAYS)
    assert user.blocked_reason == BLOCK_REASON
    # a user-wide revocation: sign-ins in progress and sessions issued up to now end on every server
    assert store.sign_in_revoked("alice", since=START - 60, session_id="any")
    [report] = store.list_fraud_reports()
    assert (report.username, report.method_kind, report.at, report.client_ip, report.user_agent) == (
        "alice", "phone_call", START, "203.0.113.9", "Twilio/callback")
    assert report.blocked_until == START + 90 * DAYS and report.notified == ()
    assert report.reference == reference_digest("challenge-1") != "challenge-1"


def test_the_report_writes_audit_rows(store: Store, alice: UserRecord) -> None:
    outcome = service(store).report(alice, "phone_call", now=START, reference="challenge-1", **CALLER)

    rows = {(e.event, e.result): e for e in store.list_audit(username="alice")}
    reported = rows[("fraud", "reported")]
    assert reported.actor == "alice" and reported.client_ip == "203.0.113.9"
    assert reported.detail == {"method": "phone_call", "report": outcome.report_id, "until": START + 90 * DAYS}
    blocked = rows[("user_block", "success")]
    assert blocked.actor == "fraud-report" and blocked.detail["reason"] == BLOCK_REASON


def test_block_on_report_false_only_records(store: Store, alice: UserRecord) -> None:
    outcome = service(store, FraudSettings(block_on_report=False)).report(alice, "phone_call", now=START,
                                                                          reference="c1", **CALLER)

    assert outcome.result is FraudResult.REPORTED and outcome.blocked_until is None
    assert not current(store).blocked(START)
    assert not store.sign_in_revoked("alice", since=START - 60, session_id="any")
    assert [r.blocked_until for r in store.list_fraud_reports()] == [None]
    assert not [e for e in store.list_audit(username="alice") if e.event == "user_block"]


def test_reporting_off_records_nothing_but_says_so(store: Store, alice: UserRecord) -> None:
    outcome = service(store, FraudSettings(allow_users_to_report=False)).report(alice, "phone_call", now=START,
                                                                                reference="c1", **CALLER)

    assert outcome.result is FraudResult.REPORTING_OFF and outcome.report_id is None
    assert "not approved" in outcome.message
    assert store.list_fraud_reports() == [] and not current(store).blocked(START)
    assert [(e.event, e.result) for e in store.list_audit(username="alice")] == [("fraud", "refused")]


def test_a_longer_block_in_place_is_kept(store: Store, alice: UserRecord) -> None:
    store.set_block(alice.id, now=START, until=START + 365 * DAYS, reason="left the company")

    service(store).report(alice, "phone_call", now=START + 1, reference="c1", **CALLER)

    user = current(store)
    assert user.blocked_until == START + 365 * DAYS and user.blocked_reason == "left the company"


def test_block_for_is_configurable(store: Store, alice: UserRecord) -> None:
    outcome = service(store, FraudSettings(block_for=3 * DAYS)).report(alice, "push", now=START, reference="c1",
                                                                       **CALLER)
    assert outcome.blocked_until == current(store).blocked_until == START + 3 * DAYS


# -- replays ------------------------------------------------------------------------------------------------------
def test_a_replayed_reference_writes_once(store: Store, alice: UserRecord) -> None:
    fraud = service(store)
    first = fraud.report(alice, "phone_call", now=START, reference="c1", **CALLER)
    store.set_block(alice.id, now=START + 5, until=None, reason=None)  # the helpdesk unblocks

    replay = fraud.report(alice, "phone_call", now=START + 10, reference="c1", **CALLER)

    assert replay.result is FraudResult.REPLAYED and replay.report_id == first.report_id
    assert len(store.list_fraud_reports()) == 1
    assert not current(store).blocked(START + 10)  # the replay did not block again
    assert len([e for e in store.list_audit(username="alice") if e.event == "fraud"]) == 1


def test_racing_replays_write_one_row_and_block_once(store: Store, alice: UserRecord) -> None:
    fraud = service(store)

    outcomes = run_together(10, lambda: fraud.report(alice, "phone_call", now=START, reference="c1", **CALLER))

    assert [o.result for o in outcomes].count(FraudResult.REPORTED) == 1
    assert len(store.list_fraud_reports()) == 1
    assert len([e for e in store.list_audit(username="alice") if e.event == "user_block"]) == 1


# -- notifications ------------------------------------------------------------------------------------------------
def test_email_notification_through_a_real_smtp_server(store: Store, alice: UserRecord) -> None:
    settings = FraudSettings(notify_emails=("security@example.org", "soc@example.org"))
    with smtp_server() as smtp:
        gateway = SmtpGateway(host=smtp.host, port=smtp.port, security="none", from_address="mfa@example.org",
                              site_name="Contoso sign-in", timeout=5)
        outcome = service(store, settings, email_gateway=gateway).report(alice, "phone_call", now=START,
                                                                         reference="c1", **CALLER)
        received = smtp.recorder.messages()

    assert outcome.notified == ("email:security@example.org", "email:soc@example.org")
    assert store.list_fraud_reports()[0].notified == outcome.notified
    assert sorted(m.rcpt_tos for m in received) == [("security@example.org",), ("soc@example.org",)]
    message = received[0].message
    assert message["Subject"] == "Fraud report: alice (Contoso sign-in)"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    for part in (text.get_content(), html.get_content()):
        assert "alice" in part and "phone_call" in part and "203.0.113.9" in part
        assert "mfa-admin user unblock alice" in part
    assert "c1" not in text.get_content().split("Report:")[0]  # the attempt's id is not sent around


def test_signed_webhook_to_a_receiver_that_checks_the_signature(store: Store, alice: UserRecord) -> None:
    with webhook_receiver(WEBHOOK_SECRET, clock=lambda: START) as receiver:
        settings = FraudSettings(notify_webhook_url=receiver.url, notify_webhook_secret=WEBHOOK_SECRET)
        outcome = service(store, settings).report(alice, "phone_call", now=START, reference="c1", **CALLER)

    assert outcome.notified == ("webhook",)
    [request] = receiver.requests
    assert request.valid, request.reason
    assert request.path == "/hooks/mfa" and request.headers["x-mfa-timestamp"] == str(int(START))
    assert request.json() == {"event": "fraud_report", "report_id": outcome.report_id, "username": "alice",
                              "method": "phone_call", "at": START, "client_ip": "203.0.113.9",
                              "user_agent": "Twilio/callback", "blocked_until": START + 90 * DAYS,
                              "site": "Contoso sign-in"}
    assert request.headers["x-mfa-signature"] == sign_webhook(WEBHOOK_SECRET, str(int(START)), request.body)


def test_a_webhook_signed_with_another_secret_is_refused_and_not_counted(store: Store, alice: UserRecord,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    with webhook_receiver(WEBHOOK_SECRET, clock=lambda: START) as receiver:
        settings = FraudSettings(notify_webhook_url=receiver.url, notify_webhook_secret="x" * 32)
        with caplog.at_level(logging.WARNING, logger="mfa_middleware.fraud"):
            outcome = service(store, settings).report(alice, "phone_call", now=START, reference="c1", **CALLER)

    assert [r.reason for r in receiver.requests] == ["bad signature"]
    assert outcome.notified == () and current(store).blocked(START)
    assert "answered 401" in caplog.text and "x" * 32 not in caplog.text


def test_refused_connections_still_block(store: Store, alice: UserRecord, caplog: pytest.LogCaptureFixture) -> None:
    dead_smtp, dead_hook = free_port(), free_port()
    gateway = SmtpGateway(host="127.0.0.1", port=dead_smtp, security="none", from_address="mfa@example.org",
                          site_name="Contoso sign-in", timeout=5)
    settings = FraudSettings(notify_emails=("security@example.org",),
                             notify_webhook_url=f"http://127.0.0.1:{dead_hook}/hook",
                             notify_webhook_secret=WEBHOOK_SECRET)
    with caplog.at_level(logging.WARNING, logger="mfa_middleware.fraud"):
        outcome = service(store, settings, email_gateway=gateway, webhook_timeout=5).report(
            alice, "phone_call", now=START, reference="c1", **CALLER)

    assert outcome.result is FraudResult.REPORTED and outcome.notified == ()
    assert current(store).blocked(START) and store.list_fraud_reports()[0].notified == ()
    assert "email to security@example.org failed" in caplog.text and "webhook to 127.0.0.1 failed" in caplog.text
    assert WEBHOOK_SECRET not in caplog.text


def test_notify_emails_without_a_gateway_is_logged(store: Store, alice: UserRecord,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mfa_middleware.fraud"):
        outcome = service(store, FraudSettings(notify_emails=("security@example.org",))).report(
            alice, "phone_call", now=START, reference="c1", **CALLER)
    assert outcome.notified == () and "no email gateway" in caplog.text


# -- through the middleware ---------------------------------------------------------------------------------------
def test_the_blocked_user_is_refused_at_sign_in_until_unblocked(tmp_path: Path) -> None:
    clock = Clock()
    mw = make_middleware(f"sqlite:///{tmp_path / 'mfa.db'}", clock)
    rt = mw.runtime
    rt.accounts.add("alice", actor="test", password=PASSWORD)
    browser = Browser(mw)
    browser.sign_in_and_enroll("alice", PASSWORD, clock, "/hello")
    assert browser.get("/hello").text == "app path=/hello user=alice level=2"
    user = rt.store.get_user("alice")
    assert user is not None

    FraudReports(rt.store, rt.audit, FraudSettings(), site_name="Contoso").report(
        user, "phone_call", now=clock.now, reference="attempt-1", **CALLER)
    clock.advance(6)  # past the revocation interval

    assert browser.get("/hello").status_code == 302  # the session ended
    refused = Browser(mw).login("alice", PASSWORD, "/hello")
    assert refused.status_code == 403 and "Account blocked" in refused.text

    rt.accounts.unblock("alice", actor="helpdesk")
    again = Browser(mw).login("alice", PASSWORD, "/hello")
    assert again.status_code == 303 and again.headers["Location"].endswith("/_mfa/verify")


# -- configuration ------------------------------------------------------------------------------------------------
def test_settings_defaults_and_values() -> None:
    assert fraud_settings_from_dict({}) == FraudSettings()
    parsed = fraud_settings_from_dict({"allow_users_to_report": True, "block_on_report": False, "block_for": "30d",
                                       "notify_emails": ["security@example.org"],
                                       "notify_webhook_url": "https://hooks.example.org/mfa",
                                       "notify_webhook_secret": "env:HOOK"}, "mfa.toml", {"HOOK": WEBHOOK_SECRET})
    assert parsed == replace(FraudSettings(), block_on_report=False, block_for=30 * DAYS,
                             notify_emails=("security@example.org",),
                             notify_webhook_url="https://hooks.example.org/mfa", notify_webhook_secret=WEBHOOK_SECRET)
    assert WEBHOOK_SECRET not in repr(parsed)


HOOK = "https://hooks.example.org/mfa"


@pytest.mark.parametrize(("table", "message"), [
    pytest.param({"block_on_reports": True}, "mfa.toml: fraud.block_on_reports: unknown key", id="unknown-key"),
    pytest.param({"block_on_report": "yes"}, "mfa.toml: fraud.block_on_report: expected true or false",
                 id="not-bool"),
    pytest.param({"block_for": "ever"}, "mfa.toml: fraud.block_for: expected a duration", id="duration"),
    pytest.param({"block_for": "30s"}, "fraud.block_for: must be between 1m and 3650d", id="too-short"),
    pytest.param({"block_for": "4000d"}, "fraud.block_for: must be between 1m and 3650d", id="too-long"),
    pytest.param({"notify_emails": ["Ann <a@example.org>"]}, "fraud.notify_emails: 'Ann <a@example.org>' is not",
                 id="display-name"),
    pytest.param({"notify_emails": "a@example.org"}, "fraud.notify_emails: expected a list", id="not-a-list"),
    pytest.param({"notify_emails": ["a@example.org", "a@example.org"]}, "listed twice", id="twice"),
    pytest.param({"notify_webhook_url": HOOK}, "fraud.notify_webhook_secret: required with notify_webhook_url",
                 id="url-without-secret"),
    pytest.param({"notify_webhook_secret": WEBHOOK_SECRET}, "fraud.notify_webhook_secret: only used with",
                 id="secret-without-url"),
    pytest.param({"notify_webhook_url": HOOK, "notify_webhook_secret": "short"}, "at least 16 characters",
                 id="short-secret"),
    pytest.param({"notify_webhook_url": HOOK, "notify_webhook_secret": "env:MISSING"},
                 "fraud.notify_webhook_secret: environment variable MISSING is not set", id="env-missing"),
    pytest.param({"notify_webhook_url": "http://hooks.example.org/", "notify_webhook_secret": WEBHOOK_SECRET},
                 "fraud.notify_webhook_url: http:// is allowed only for localhost", id="plain-http"),
    pytest.param({"notify_webhook_url": "ftp://hooks.example.org/", "notify_webhook_secret": WEBHOOK_SECRET},
                 "fraud.notify_webhook_url: expected an https:// URL", id="scheme"),
    pytest.param({"notify_webhook_url": "https://user:pw@hooks.example.org/", "notify_webhook_secret": WEBHOOK_SECRET},
                 "without user or password", id="credentials-in-url"),
    pytest.param({"notify_webhook_url": "https://hooks.example.org:99999/", "notify_webhook_secret": WEBHOOK_SECRET},
                 "is not a URL", id="bad-port"),
])
def test_settings_errors_name_the_file_and_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        fraud_settings_from_dict(table, "mfa.toml", {})
    assert message in str(caught.value)
