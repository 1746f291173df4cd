"""``mfa-admin`` helpdesk commands of issue 3: app passwords, set-state from a file, block, unblock, bypass.

Each command runs through click's CliRunner on a configuration written by ``mfa-admin init``; the store is read
back through the same configuration. Every command must write an audit row naming the actor (``cli:helpdesk``).
"""

from __future__ import annotations

import gc
import re
import time
from typing import Any
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from sqlalchemy.pool import QueuePool

from mfa_middleware.runtime import Runtime
from mfa_middleware.services import app_passwords
from tests.cli.helpers import ACTOR, PASSWORD, Db, add_user, fails, ok, run

APP_PASSWORD = re.compile(r"[a-z]{16}")


def _app_password_markers(db: Db) -> list[Any]:
    """Revocation rows of app passwords (``ap:<id>``); creating one also cuts off the primary password on Basic
    (``pw:<user>``), which is not what these tests look at."""
    return [r for r in db.store.revocations_since(0, newer_than=0) if (r.session_id or "").startswith("ap:")]


@pytest.fixture
def alice(runner: CliRunner, config: Path) -> str:
    add_user(runner, config, "alice", "--state", "enforced")
    return "alice"


def with_basic_settings(config: Path, **settings: object) -> None:
    """Append a ``[basic]`` table to the configuration file."""
    lines = [f"{key} = {str(value).lower() if isinstance(value, bool) else value}" for key, value in settings.items()]
    config.write_text(config.read_text() + "\n[basic]\n" + "\n".join(lines) + "\n")


def create(runner: CliRunner, config: Path, name: str, label: str) -> Result:
    return run(runner, config, "app-password", "create", name, "--label", label)


@dataclass(frozen=True)
class Finished:
    exit_code: int
    stdout: str
    stderr: str
    output: str


def run_and_collect(runner: CliRunner, config: Path, *args: str, input: str | None = None) -> Finished:
    """Run a command, keep only its outcome and collect garbage at once: if the command left the names file
    open, the ResourceWarning is raised in this test, not in whichever test the collector next runs in."""
    result = run(runner, config, *args, input=input)
    finished = Finished(result.exit_code, result.stdout, result.stderr, result.output)
    del result
    gc.collect()
    return finished


def table_rows(out: str) -> dict[str, str]:
    """Rows of a rich table keyed by their first cell."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = line
    return rows


# -- app-password create ----------------------------------------------------------------------------------------
def test_create_prints_the_password_alone(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    result = ok(create(runner, config, alice, "Outlook on laptop"))

    assert APP_PASSWORD.fullmatch(result.stdout[:-1]) and result.stdout.endswith("\n"), repr(result.stdout)
    assert result.stderr == ""
    password = result.stdout[:-1]
    user = db.user(alice)
    (record,) = db.store.list_app_passwords(user.id)
    assert record.label == "Outlook on laptop"
    assert record.password_hash.startswith("$argon2id$") and password not in record.password_hash
    assert PasswordHasher().verify(record.password_hash, password)
    assert [r.id for r in db.store.find_app_passwords(user.id, app_passwords.lookup_of(password))] == [record.id]
    (row,) = db.audit("app_password_create", alice)
    assert (row.actor, row.result, row.detail) == (ACTOR, "success", {"label": "Outlook on laptop"})


def test_create_generates_a_new_password_each_time(runner: CliRunner, config: Path, alice: str) -> None:
    first = ok(create(runner, config, alice, "laptop")).stdout
    second = ok(create(runner, config, alice, "phone")).stdout

    assert first != second


def test_create_twice_with_one_label_is_a_clear_error(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    ok(create(runner, config, alice, "laptop"))

    result = fails(create(runner, config, alice, "laptop"), "already has an app password named 'laptop'")

    assert result.stdout == ""
    assert len(db.store.list_app_passwords(db.user(alice).id)) == 1


@pytest.mark.parametrize("label", [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("x" * 65, id="too-long"),
    pytest.param("bell\x07", id="control-character"),
    pytest.param("del\x7f", id="delete-character"),
])
def test_create_with_a_bad_label_is_a_clear_error(runner: CliRunner, config: Path, db: Db, alice: str,
                                                  label: str) -> None:
    result = fails(create(runner, config, alice, label), "device name must be 1-64 printable characters")

    assert result.stdout == ""
    assert db.store.list_app_passwords(db.user(alice).id) == []


def test_admins_are_refused_unless_the_config_allows(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "root", "--admin", "--groups", "admins")

    refused = fails(create(runner, config, "root", "laptop"), "root is an administrator", "admins_may_create")

    assert refused.stdout == ""
    assert db.store.list_app_passwords(db.user("root").id) == []
    assert db.audit("app_password_create") == []
    with_basic_settings(config, admins_may_create=True)
    allowed = ok(create(runner, config, "root", "laptop"))
    assert APP_PASSWORD.fullmatch(allowed.stdout.strip())
    assert len(db.store.list_app_passwords(db.user("root").id)) == 1


def test_limit_reached_is_a_clear_error(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    with_basic_settings(config, max_app_passwords=2)
    ok(create(runner, config, alice, "one"))
    ok(create(runner, config, alice, "two"))

    result = fails(create(runner, config, alice, "three"), "the limit is 2", "revoke one first")

    assert result.stdout == ""
    assert [r.label for r in db.store.list_app_passwords(db.user(alice).id)] == ["one", "two"]


def test_blocked_user_gets_no_app_password(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    ok(run(runner, config, "user", "block", alice, "--reason", "stolen laptop"))

    fails(create(runner, config, alice, "laptop"), "alice is blocked", "unblock")

    assert db.store.list_app_passwords(db.user(alice).id) == []


# -- app-password list ----------------------------------------------------------------------------------------
def test_list_shows_labels_never_passwords(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    passwords = [ok(create(runner, config, alice, label)).stdout.strip() for label in ("laptop", "Phone (mail)")]
    user = db.user(alice)
    laptop = db.store.list_app_passwords(user.id)[0]
    db.store.touch_app_password(laptop.id, now=time.time(), client_ip="192.0.2.7")

    out = ok(run(runner, config, "app-password", "list", alice)).stdout

    assert "2 app password(s) of alice" in out
    for header in ("Label", "Created", "Last used", "Last client"):
        assert header in out
    rows = table_rows(out)
    assert "192.0.2.7" in rows["laptop"]
    assert "Phone (mail)" in rows and rows["Phone (mail)"].count("-") >= 2  # never used: no time, no client
    for password in passwords:
        assert password not in out
        assert app_passwords.display(password) not in out
    for record in db.store.list_app_passwords(user.id):
        assert record.password_hash not in out and record.lookup not in out


def test_list_of_a_user_without_app_passwords(runner: CliRunner, config: Path, alice: str) -> None:
    assert "alice has no app passwords." in ok(run(runner, config, "app-password", "list", alice)).stdout


# -- app-password revoke / revoke-all -------------------------------------------------------------------------
def test_revoke_by_label(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    ok(create(runner, config, alice, "laptop"))
    ok(create(runner, config, alice, "phone"))
    user = db.user(alice)
    laptop = next(r for r in db.store.list_app_passwords(user.id) if r.label == "laptop")

    out = ok(run(runner, config, "app-password", "revoke", alice, "laptop")).output

    assert "Revoked 'laptop' of alice" in out
    assert [r.label for r in db.store.list_app_passwords(user.id)] == ["phone"]
    (revocation,) = _app_password_markers(db)
    assert (revocation.username, revocation.session_id) == (alice, f"ap:{laptop.id}")
    (row,) = db.audit("app_password_revoke", alice)
    assert (row.actor, row.detail) == (ACTOR, {"label": "laptop", "count": 1})


def test_revoke_of_an_unknown_label_names_it(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    ok(create(runner, config, alice, "laptop"))

    fails(run(runner, config, "app-password", "revoke", alice, "tablet"),
          "alice has no app password named 'tablet'", "mfa-admin app-password list alice")

    assert [r.label for r in db.store.list_app_passwords(db.user(alice).id)] == ["laptop"]
    assert _app_password_markers(db) == []
    assert db.audit("app_password_revoke") == []


def test_revoke_all(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    add_user(runner, config, "bob")
    for label in ("laptop", "phone", "tablet"):
        ok(create(runner, config, alice, label))
    ok(create(runner, config, "bob", "laptop"))
    ids = {r.id for r in db.store.list_app_passwords(db.user(alice).id)}

    out = ok(run(runner, config, "app-password", "revoke-all", alice)).output

    assert "Revoked 3 app password(s) of alice" in out
    assert db.store.list_app_passwords(db.user(alice).id) == []
    assert len(db.store.list_app_passwords(db.user("bob").id)) == 1, "other users keep theirs"
    markers = {r.session_id for r in _app_password_markers(db)}
    assert markers == {f"ap:{i}" for i in ids}
    (row,) = db.audit("app_password_revoke", alice)
    assert (row.actor, row.detail) == (ACTOR, {"label": "*", "count": 3})


def test_revoke_all_of_none(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    assert "Revoked 0 app password(s) of alice" in ok(run(runner, config, "app-password", "revoke-all", alice)).output
    (row,) = db.audit("app_password_revoke", alice)
    assert row.actor == ACTOR


# -- user set-state for many ----------------------------------------------------------------------------------
def test_set_state_from_a_file(runner: CliRunner, config: Path, db: Db, tmp_path: Path) -> None:
    for name in ("amy", "ben", "cat"):
        add_user(runner, config, name, "--state", "disabled")
    names = tmp_path / "names.txt"
    names.write_text("amy\n# a comment\n\nben\nghost\n  cat  \n")

    result = run_and_collect(runner, config, "user", "set-state", "--file", str(names), "enforced")

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert [db.user(n).state for n in ("amy", "ben", "cat")] == ["enforced"] * 3
    assert "3 of 4 user(s) are now enforced" in result.stdout
    rows = table_rows(result.stdout)
    assert "Not changed" in result.stdout
    assert set(rows) - {"Name"} == {"ghost"}
    assert "no user named 'ghost'" in rows["ghost"]
    assert "Setting state" in result.stderr and "4/4" in result.stderr, "a progress bar on standard error"
    rows_by_user = {r.username: r for r in db.audit("user_state")}
    assert set(rows_by_user) == {"amy", "ben", "cat"}
    assert {r.actor for r in rows_by_user.values()} == {ACTOR}


def test_set_state_from_standard_input(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "amy")
    add_user(runner, config, "ben")

    result = ok(run(runner, config, "user", "set-state", "--file", "-", "disabled", input="amy\nben\n"))

    assert "2 of 2 user(s) are now disabled" in result.stdout
    assert "Not changed" not in result.stdout
    assert [db.user(n).state for n in ("amy", "ben")] == ["disabled", "disabled"]


@pytest.mark.parametrize("args", [
    pytest.param(["alice", "--file", "NAMES", "enforced"], id="both"),
    pytest.param(["enforced"], id="neither"),
])
def test_set_state_needs_exactly_one_of_name_and_file(runner: CliRunner, config: Path, db: Db, alice: str,
                                                      tmp_path: Path, args: list[str]) -> None:
    names = tmp_path / "names.txt"
    names.write_text("alice\n")
    argv = [str(names) if a == "NAMES" else a for a in args]

    fails(run(runner, config, "user", "set-state", *argv), "give either NAME or --file FILE", code=2)

    assert db.user(alice).state == "enforced"
    assert db.audit("user_state") == []


# -- user block / unblock -------------------------------------------------------------------------------------
def test_block_with_days_and_reason(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    before = time.time()

    out = ok(run(runner, config, "user", "block", alice, "--reason", "laptop stolen", "--days", "7")).output

    after = time.time()
    assert "alice is blocked until" in out
    user = db.user(alice)
    assert user.blocked(after)
    assert user.blocked_until is not None and before + 7 * 86400 <= user.blocked_until <= after + 7 * 86400
    assert user.blocked_reason == "laptop stolen"
    (revocation,) = db.store.revocations_since(0, newer_than=0)
    assert (revocation.username, revocation.session_id) == (alice, None), "sessions end"
    (row,) = db.audit("user_block", alice)
    assert (row.actor, row.detail["reason"]) == (ACTOR, "laptop stolen")
    assert row.detail["until"] == user.blocked_until


def test_block_defaults_to_ninety_days(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    before = time.time()
    ok(run(runner, config, "user", "block", alice, "--reason", "left the company"))

    until = db.user(alice).blocked_until
    assert until is not None and before + 90 * 86400 <= until <= time.time() + 90 * 86400


def test_unblock(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    ok(run(runner, config, "user", "block", alice, "--reason", "laptop stolen"))

    out = ok(run(runner, config, "user", "unblock", alice)).output

    assert "alice is unblocked" in out
    user = db.user(alice)
    assert not user.blocked(time.time())
    assert (user.blocked_until, user.blocked_reason) == (None, None)
    (row,) = db.audit("user_unblock", alice)
    assert row.actor == ACTOR


# -- user bypass ----------------------------------------------------------------------------------------------
def test_bypass_sets_a_deadline(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    before = time.time()

    out = ok(run(runner, config, "user", "bypass", alice, "--seconds", "600", "--reason", "lost phone")).output

    after = time.time()
    assert "alice may sign in once without a second factor" in out
    until = db.user(alice).bypass_until
    assert until is not None and before + 600 <= until <= after + 600
    (row,) = db.audit("user_bypass", alice)
    assert row.actor == ACTOR
    assert row.detail == {"reason": "lost phone", "seconds": 600, "until": until}


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["bypass", "alice", "--seconds", "0", "--reason", "r"], "--seconds", id="bypass-zero"),
    pytest.param(["bypass", "alice", "--seconds", "86401", "--reason", "r"], "--seconds", id="bypass-over-a-day"),
    pytest.param(["bypass", "alice", "--seconds", "-5", "--reason", "r"], "--seconds", id="bypass-negative"),
    pytest.param(["bypass", "alice", "--seconds", "soon", "--reason", "r"], "--seconds", id="bypass-not-a-number"),
    pytest.param(["bypass", "alice", "--seconds", "60"], "--reason", id="bypass-no-reason"),
    pytest.param(["block", "alice", "--reason", "r", "--days", "0"], "--days", id="block-zero-days"),
    pytest.param(["block", "alice", "--reason", "r", "--days", "3651"], "--days", id="block-too-long"),
    pytest.param(["block", "alice"], "--reason", id="block-no-reason"),
])
def test_out_of_range_options_are_usage_errors(runner: CliRunner, config: Path, db: Db, alice: str,
                                               args: list[str], message: str) -> None:
    fails(run(runner, config, "user", *args), message, code=2)

    user = db.user(alice)
    assert (user.bypass_until, user.blocked_until) == (None, None)
    assert db.audit("user_bypass") == [] and db.audit("user_block") == []


@pytest.mark.parametrize("command", [
    pytest.param(["user", "bypass", "alice", "--seconds", "60", "--reason", " "], id="bypass"),
    pytest.param(["user", "block", "alice", "--reason", "  "], id="block"),
])
def test_blank_reason_is_refused(runner: CliRunner, config: Path, db: Db, alice: str, command: list[str]) -> None:
    fails(run(runner, config, *command), "give a reason")

    user = db.user(alice)
    assert (user.bypass_until, user.blocked_until) == (None, None)


# -- every command: the actor, unknown users, closing the store -----------------------------------------------
EVERY_COMMAND = [
    pytest.param(["app-password", "create", "alice", "--label", "new"], "app_password_create", id="ap-create"),
    pytest.param(["app-password", "revoke", "alice", "laptop"], "app_password_revoke", id="ap-revoke"),
    pytest.param(["app-password", "revoke-all", "alice"], "app_password_revoke", id="ap-revoke-all"),
    pytest.param(["user", "set-state", "alice", "disabled"], "user_state", id="set-state"),
    pytest.param(["user", "set-state", "--file", "-", "disabled"], "user_state", id="set-state-file"),
    pytest.param(["user", "block", "alice", "--reason", "r"], "user_block", id="block"),
    pytest.param(["user", "unblock", "alice"], "user_unblock", id="unblock"),
    pytest.param(["user", "bypass", "alice", "--seconds", "60", "--reason", "r"], "user_bypass", id="bypass"),
]


@pytest.mark.parametrize(("command", "event"), EVERY_COMMAND)
def test_every_command_writes_an_audit_row_naming_the_actor(runner: CliRunner, config: Path, db: Db, alice: str,
                                                            command: list[str], event: str,
                                                            cli_runtimes: list[Runtime]) -> None:
    ok(create(runner, config, alice, "laptop"))
    before = {r.id for r in db.store.list_audit(limit=1000)}
    cli_runtimes.clear()

    ok(run(runner, config, *command, input="alice\n"))

    new = [r for r in db.store.list_audit(limit=1000) if r.id not in before]
    assert [(r.event, r.actor, r.username) for r in new] == [(event, ACTOR, alice)]
    assert len(cli_runtimes) == 1
    pool = cli_runtimes[0].store.engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() == 0, "pooled connections left open"


@pytest.mark.parametrize("command", [
    pytest.param(["app-password", "create", "ghost", "--label", "x"], id="ap-create"),
    pytest.param(["app-password", "list", "ghost"], id="ap-list"),
    pytest.param(["app-password", "revoke", "ghost", "x"], id="ap-revoke"),
    pytest.param(["app-password", "revoke-all", "ghost"], id="ap-revoke-all"),
    pytest.param(["user", "block", "ghost", "--reason", "r"], id="block"),
    pytest.param(["user", "unblock", "ghost"], id="unblock"),
    pytest.param(["user", "bypass", "ghost", "--seconds", "60", "--reason", "r"], id="bypass"),
])
def test_unknown_user_is_a_clear_error(runner: CliRunner, config: Path, db: Db, command: Sequence[str]) -> None:
    result = fails(run(runner, config, *command), "no user named 'ghost'", "mfa-admin user list")

    assert result.stdout == ""
    assert db.store.list_audit(limit=1000) == []
    assert _app_password_markers(db) == []


def test_nothing_secret_reaches_the_audit_log(runner: CliRunner, config: Path, db: Db, alice: str) -> None:
    password = ok(create(runner, config, alice, "laptop")).stdout.strip()
    ok(run(runner, config, "app-password", "revoke", alice, "laptop"))

    out = ok(run(runner, config, "audit", "--user", alice)).stdout

    assert "app_password_create" in out and "app_password_revoke" in out
    assert password not in out and password not in repr(db.store.list_audit(limit=1000))
    assert PASSWORD not in out
