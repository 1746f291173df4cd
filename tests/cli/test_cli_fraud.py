"""``mfa-admin fraud list``: the reports as a table (time, user, method, client address, blocked until, notified),
``--user`` and ``--limit``; and ``mfa-admin user unblock`` lifting a fraud block and saying so."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from mfa_middleware.services.audit import AuditLog
from mfa_middleware.services.fraud import FraudReports, FraudSettings
from tests.cli.helpers import ACTOR, Db, add_user, ok, run

CALLER = {"client_ip": "203.0.113.9", "user_agent": "Twilio/callback"}



def _rows(table: str) -> int:
    """The body rows of a rich table."""
    return sum(1 for line in table.splitlines() if line.startswith("│"))

def report(db: Db, name: str, reference: str, *, at: float, settings: FraudSettings | None = None) -> None:
    FraudReports(db.store, AuditLog(db.store), settings or FraudSettings(), site_name="Contoso").report(
        db.user(name), "phone_call", now=at, reference=reference, **CALLER)


def test_fraud_list_shows_the_reports_newest_first(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")
    add_user(runner, config, "bob")
    now = time.time()
    report(db, "alice", "a1", at=now - 60)
    report(db, "bob", "b1", at=now, settings=FraudSettings(block_on_report=False))
    db.store.set_fraud_report_notified(db.store.list_fraud_reports(username="alice")[0].id,
                                       ["email:security@example.org", "webhook"])

    out = ok(run(runner, config, "fraud", "list")).stdout

    assert _rows(out) == 2
    for header in ("Time", "User", "Method", "Client", "Blocked until", "Notified"):
        assert header in out
    lines = [line for line in out.splitlines() if "phone_call" in line]
    assert [("bob" in line, "alice" in line) for line in lines] == [(True, False), (False, True)]
    assert "not blocked" in lines[0] and "203.0.113.9" in lines[0]
    assert time.strftime("%Y-%m-%d", time.localtime(now + 90 * 86400)) in lines[1]
    assert "email:security@example.org, webhook" in lines[1]


def test_fraud_list_filters_and_limits(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")
    add_user(runner, config, "bob")
    now = time.time()
    for i in range(3):
        report(db, "alice", f"a{i}", at=now + i)
    report(db, "bob", "b1", at=now + 5)

    only_alice = ok(run(runner, config, "fraud", "list", "--user", "alice")).stdout
    assert _rows(only_alice) == 3 and "bob" not in only_alice
    one = ok(run(runner, config, "fraud", "list", "--limit", "1")).stdout
    assert _rows(one) == 1 and "More: mfa-admin fraud list --limit 1 --before" in one
    assert "No fraud reports." in ok(run(runner, config, "fraud", "list", "--user", "carol")).stdout


def test_user_unblock_lifts_a_fraud_block_and_says_so(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")
    report(db, "alice", "a1", at=time.time())
    assert db.user("alice").blocked(time.time())

    out = ok(run(runner, config, "user", "unblock", "alice")).stdout

    assert "alice is unblocked (the block was: fraud report)." in out
    assert not db.user("alice").blocked(time.time())
    assert [e.actor for e in db.audit("user_unblock", "alice")] == [ACTOR]
    assert "alice is unblocked." in ok(run(runner, config, "user", "unblock", "alice")).stdout
