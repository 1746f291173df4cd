"""`mfa-admin bans list` (a table paged like the other listings, or CSV/JSON) and `mfa-admin bans lift`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mfa_middleware.store.sql import LOCKED_FOR_GOOD
from tests.cli.helpers import Db, add_user, ok, run


def ban_user(db: Db, name: str, *, for_good: bool = False) -> None:
    user = db.user(name)
    for _ in range(100 if for_good else 1):  # 100 consecutive failures lock the account until unlocked
        db.store.reserve_attempt(user.id, now=time.time(), max_failures=1 if not for_good else 1000,
                                 reset_after=600, lock_for=600)
    assert db.user(name).locked_until == (LOCKED_FOR_GOOD if for_good else db.user(name).locked_until)


def ban_address(db: Db, address: str) -> None:
    db.store.reserve_client_attempt(address, now=time.time(), max_failures=1, reset_after=600, lock_for=600)


@pytest.fixture
def banned(runner: CliRunner, config: Path, db: Db) -> Db:
    for name in ("alice", "bob", "carol"):
        add_user(runner, config, name)
    ban_user(db, "alice")
    ban_user(db, "carol", for_good=True)
    ban_address(db, "203.0.113.9")
    ban_address(db, "2001:db8::/64")
    return db


def test_bans_list_table_and_pages(runner: CliRunner, config: Path, banned: Db) -> None:
    out = ok(run(runner, config, "bans", "list")).output
    for subject in ("alice", "carol", "203.0.113.9", "2001:db8::/64"):
        assert subject in out
    assert "bob" not in out and "until unlocked" in out
    first = ok(run(runner, config, "bans", "list", "--limit", "2")).output
    assert "alice" in first and "carol" in first and "203.0.113.9" not in first
    assert "mfa-admin bans list --limit 2 --after user:carol" in first
    second = ok(run(runner, config, "bans", "list", "--limit", "2", "--after", "user:carol")).output
    assert "203.0.113.9" in second and "alice" not in second


@pytest.mark.parametrize("fmt", [pytest.param("json", id="json"), pytest.param("csv", id="csv")])
def test_bans_list_streams(runner: CliRunner, config: Path, banned: Db, fmt: str) -> None:
    out = ok(run(runner, config, "bans", "list", "--format", fmt)).output
    if fmt == "json":
        rows = json.loads(out)
        assert [(r["kind"], r["subject"]) for r in rows] == [("user", "alice"), ("user", "carol"),
                                                             ("address", "2001:db8::/64"),
                                                             ("address", "203.0.113.9")]
        assert rows[1]["until"] == "9999-12-31T23:59:59Z"
    else:
        assert out.splitlines()[0] == "kind,subject,failures,until"


def test_bans_lift(runner: CliRunner, config: Path, banned: Db) -> None:
    ok(run(runner, config, "bans", "lift", "--user", "carol"))
    assert not banned.user("carol").locked(time.time())
    ok(run(runner, config, "bans", "lift", "--address", "2001:db8::1"))  # its /64
    ok(run(runner, config, "bans", "lift", "--address", "::ffff:203.0.113.9"))  # IPv4-mapped
    out = ok(run(runner, config, "bans", "list", "--format", "json")).output
    assert [r["subject"] for r in json.loads(out)] == ["alice"]
    assert len(banned.audit("ban_lift")) == 3


@pytest.mark.parametrize("args, message", [
    pytest.param(("bans", "lift"), "exactly one of --user NAME or --address IP", id="neither"),
    pytest.param(("bans", "lift", "--user", "a", "--address", "192.0.2.1"), "exactly one", id="both"),
    pytest.param(("bans", "lift", "--address", "not-an-ip"), "is not an IP address", id="bad-address"),
    pytest.param(("bans", "lift", "--user", "nobody"), "no user named 'nobody'", id="unknown-user"),
    pytest.param(("bans", "list", "--after", "alice"), "user:NAME or address:IP", id="bad-after"),
])
def test_bans_errors(runner: CliRunner, config: Path, args: tuple[str, ...], message: str) -> None:
    result = run(runner, config, *args)
    assert result.exit_code != 0 and message in result.output, result.output
