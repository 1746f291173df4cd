"""`mfa-admin usage --month YYYY-MM`: enabled users (per-user billing) and second-factor authentications by method
(per-authentication billing), with the rules services/usage.py states, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from mfa_middleware.services.usage import Usage, UsageError, month_bounds
from tests.cli.helpers import Db, fails, ok, run


def at(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def seed(db: Db) -> None:
    """March 2026: alice, dave, frank and ivan count; erin, gina, hank and jill do not."""
    store = db.store

    def user(name: str, state: str, created: str = "2026-01-05") -> None:
        store.create_user(name, now=at(created), state=state)
        store.write_audit(at=at(created), actor="cli:x", username=name, event="user_add", result="success",
                          detail={"state": state})

    def change(name: str, when: str, before: str, after: str) -> None:
        store.write_audit(at=at(when), actor="cli:x", username=name, event="user_state", result="success",
                          detail={"state": after, "previous_state": before})

    user("alice", "enforced")  # enabled all along
    user("dave", "enabled")
    change("dave", "2026-03-15", "disabled", "enabled")  # enabled during the month
    user("erin", "disabled")
    change("erin", "2026-02-10", "enabled", "disabled")  # disabled before the month
    user("frank", "disabled")
    change("frank", "2026-03-05", "enforced", "disabled")  # enabled at the start of the month
    user("gina", "enabled")
    change("gina", "2026-04-02", "disabled", "enabled")  # enabled only after the month
    user("hank", "enabled", created="2026-04-05")  # created after the month
    store.write_audit(at=at("2026-01-05"), actor="cli:x", username="ivan", event="user_add", result="success",
                      detail={"state": "enabled"})
    store.write_audit(at=at("2026-03-20"), actor="cli:x", username="ivan", event="user_delete", result="success")
    store.write_audit(at=at("2026-01-05"), actor="cli:x", username="jill", event="user_add", result="success",
                      detail={"state": "enabled"})
    store.write_audit(at=at("2026-02-01"), actor="cli:x", username="jill", event="user_delete", result="success")
    for when, result, method in [("2026-03-01T00:00:00", "success", "totp"), ("2026-03-09", "success", "totp"),
                                 ("2026-03-31T23:59:59", "success", "totp"), ("2026-03-10", "success", "sms"),
                                 ("2026-03-11", "success", "sms"), ("2026-03-12", "bypassed", "bypass"),
                                 ("2026-03-12", "rejected", "totp"), ("2026-04-01T00:00:00", "success", "totp"),
                                 ("2026-02-28T23:59:59", "success", "sms")]:
        store.write_audit(at=at(when), actor="alice", username="alice", event="second_factor", result=result,
                          detail={"method": method})
    store.write_audit(at=at("2026-03-03"), actor="alice", username="alice", event="passwordless", result="success",
                      detail={"method": "webauthn"})


def test_json(runner: CliRunner, config: Path, db: Db) -> None:
    seed(db)
    report = json.loads(ok(run(runner, config, "usage", "--month", "2026-03", "--format", "json")).stdout)
    assert report == {"month": "2026-03", "start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z",
                      "enabled_users": 4, "authentications": {"totp": 3, "sms": 2}, "total_authentications": 5,
                      "passwordless": 1}


def test_csv_and_table(runner: CliRunner, config: Path, db: Db) -> None:
    seed(db)
    rows = list(csv.DictReader(io.StringIO(ok(run(runner, config, "usage", "--month", "2026-03", "--format",
                                                  "csv")).stdout)))
    assert [(r["measure"], r["method"], r["count"]) for r in rows] == [
        ("enabled_users", "", "4"), ("authentications", "totp", "3"), ("authentications", "sms", "2"),
        ("authentications_total", "", "5"), ("passwordless", "", "1")]
    table = ok(run(runner, config, "usage", "--month", "2026-03")).stdout
    assert "Enabled users (per-user billing): 4" in table and "totp" in table and "Passwordless" in table
    quiet = ok(run(runner, config, "usage", "--month", "2025-01")).stdout
    assert "Enabled users (per-user billing): 0" in quiet


@pytest.mark.parametrize("month", [
    pytest.param("2026-13", id="month-13"),
    pytest.param("2026-3", id="one-digit"),
    pytest.param("March", id="word"),
    pytest.param("1969-12", id="before-1970"),
])
def test_bad_months_say_what_to_write(runner: CliRunner, config: Path, month: str) -> None:
    fails(run(runner, config, "usage", "--month", month), "YYYY-MM" if month != "1969-12" else "1970", code=2)


def test_month_bounds_are_utc_and_december_wraps() -> None:
    assert month_bounds("2026-12") == (at("2026-12-01"), at("2027-01-01"))
    with pytest.raises(UsageError):
        month_bounds("2026-00")


def test_the_portal_and_the_cli_agree(db: Db) -> None:
    seed(db)
    report = Usage(db.store).month("2026-03")
    assert report.enabled_users == 4 and report.total_authentications == 5
