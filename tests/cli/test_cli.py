"""The command line: ``mfa-admin`` (users and the store) and ``mfa-middleware check``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.pool import QueuePool

from mfa_middleware.cli import admin, main
from mfa_middleware.config import load_config
from mfa_middleware.runtime import Runtime
from mfa_middleware.store import Store
from tests.cli.helpers import ACTOR, OPERATOR, PASSWORD, Db, add_user, fails, ok, run

# -- init -----------------------------------------------------------------------------------------------------
def test_init_writes_a_private_config_that_loads(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "mfa.toml"

    result = ok(runner.invoke(admin, ["init", str(path), "--database", "sqlite:///store.db",
                                      "--issuer", "Contoso"]))

    assert "db upgrade" in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_config(path)
    assert loaded.database == f"sqlite:///{(tmp_path / 'store.db').resolve()}"
    assert loaded.totp.issuer == "Contoso"
    assert len(loaded.secret_keys) == 1 and len(loaded.secret_keys[0]) >= 32
    assert len(loaded.encryption_keys) == 1


def test_init_generates_new_keys_each_time(runner: CliRunner, tmp_path: Path) -> None:
    ok(runner.invoke(admin, ["init", str(tmp_path / "a.toml")]))
    ok(runner.invoke(admin, ["init", str(tmp_path / "b.toml")]))

    a, b = load_config(tmp_path / "a.toml"), load_config(tmp_path / "b.toml")
    assert a.secret_keys != b.secret_keys
    assert a.encryption_keys != b.encryption_keys


def test_init_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "mfa.toml"
    path.write_text("# mine\n")

    fails(runner.invoke(admin, ["init", str(path)]), str(path), "already exists")

    assert path.read_text() == "# mine\n"


# -- db -------------------------------------------------------------------------------------------------------
def test_db_upgrade_migrates_and_is_idempotent(runner: CliRunner, fresh_config: Path) -> None:
    first = ok(run(runner, fresh_config, "db", "upgrade"))
    second = ok(run(runner, fresh_config, "db", "upgrade"))

    store = Store(load_config(fresh_config).database)
    try:
        store.check_schema()
        current, head = store.schema_revision()
        assert current == head
    finally:
        store.close()
    assert f"schema revision {head}" in first.output
    assert f"schema revision {head}" in second.output


def test_db_status(runner: CliRunner, fresh_config: Path) -> None:
    before = ok(run(runner, fresh_config, "db", "status"))
    assert "out of date" in before.output and "mfa-admin db upgrade" in before.output

    ok(run(runner, fresh_config, "db", "upgrade"))

    assert "up to date" in ok(run(runner, fresh_config, "db", "status")).output


# -- user add / list / show -----------------------------------------------------------------------------------
def test_user_add_with_every_option(runner: CliRunner, config: Path, db: Db) -> None:
    result = add_user(runner, config, "Alice", "--groups", "admins, finance", "--admin", "--state", "enforced",
                      "--email", "alice@example.org", "--name", "Alice Liddell")

    assert "Added alice (enforced)" in result.output
    alice = db.user("alice")
    assert (alice.email, alice.display_name, alice.groups, alice.is_admin, alice.state) == (
        "alice@example.org", "Alice Liddell", ("admins", "finance"), True, "enforced")
    assert alice.password_hash is not None and alice.password_hash.startswith("$argon2id$")
    assert PASSWORD not in alice.password_hash
    (row,) = db.audit("user_add", "alice")
    assert (row.actor, row.result) == (ACTOR, "success")
    assert row.detail == {"admin": True, "groups": "admins,finance", "state": "enforced"}


def test_user_add_defaults(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "bob")

    bob = db.user("bob")
    assert (bob.state, bob.is_admin, bob.groups, bob.email) == ("enabled", False, (), None)


def test_user_add_without_a_password(runner: CliRunner, config: Path, db: Db) -> None:
    ok(run(runner, config, "user", "add", "winuser", "--no-password"))

    assert db.user("winuser").password_hash is None


def test_user_add_twice_fails_clearly(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")

    result = run(runner, config, "user", "add", "ALICE", "--password-stdin", input=PASSWORD + "\n")

    fails(result, "a user named 'alice' already exists")
    assert db.store.count_users() == 1
    assert len(db.audit("user_add")) == 1


@pytest.mark.parametrize(("name", "options", "stdin", "message"), [
    pytest.param("bad name!", ["--no-password"], None, "'bad name!' is not a valid username", id="username"),
    pytest.param("-dash", ["--no-password"], None, "'-dash' is not a valid username", id="leading-dash"),
    pytest.param("carol", ["--no-password", "--email", "not-an-address"], None,
                 "'not-an-address' is not an email address", id="email"),
    pytest.param("carol", ["--no-password", "--groups", "ok,bad group"], None, "'bad group' is not a valid group",
                 id="group"),
    pytest.param("carol", ["--password-stdin"], "\n", "no password on standard input", id="empty-password"),
    pytest.param("carol", [], None, "--password-stdin", id="password-without-tty"),
])
def test_user_add_bad_input(runner: CliRunner, config: Path, db: Db, name: str, options: list[str],
                            stdin: str | None, message: str) -> None:
    fails(run(runner, config, "user", "add", *options, "--", name, input=stdin), message)
    assert db.store.count_users() == 0


def test_user_add_bad_state_is_a_usage_error(runner: CliRunner, config: Path) -> None:
    result = run(runner, config, "user", "add", "carol", "--no-password", "--state", "sometimes")
    fails(result, "'sometimes' is not one of", code=2)


def test_user_list_shows_a_table(runner: CliRunner, config: Path) -> None:
    add_user(runner, config, "alice", "--groups", "admins", "--admin", "--state", "enforced")
    add_user(runner, config, "bob", "--state", "disabled")

    out = ok(run(runner, config, "user", "list")).output

    assert "2 user(s)" in out
    for header in ("Username", "State", "Groups", "Admin", "Methods", "Locked", "Created"):
        assert header in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert "enforced" in lines["alice"] and "admins" in lines["alice"] and "yes" in lines["alice"]
    assert "disabled" in lines["bob"]
    assert out.index("alice") < out.index("bob")


def test_user_list_of_an_empty_store(runner: CliRunner, config: Path) -> None:
    assert "No users yet" in ok(run(runner, config, "user", "list")).output


def test_user_show(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice", "--email", "alice@example.org", "--groups", "finance")
    alice = db.user("alice")
    db.store.add_method(alice.id, "totp", "Authenticator app", b"sealed", now=alice.created_at, confirmed=True)

    out = ok(run(runner, config, "user", "show", "alice")).output

    assert "alice@example.org" in out
    assert "finance" in out
    assert "Local password" in out and "set" in out
    assert "Authenticator app" in out  # the method
    assert "user_add" in out and ACTOR in out  # recent events
    assert "sealed" not in out


# -- changes --------------------------------------------------------------------------------------------------
def test_user_set_state(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice", "--state", "disabled")

    out = ok(run(runner, config, "user", "set-state", "alice", "enforced")).output

    assert "alice is now enforced" in out
    assert db.user("alice").state == "enforced"
    (row,) = db.audit("user_state", "alice")
    assert row.actor == ACTOR
    assert row.detail == {"state": "enforced", "previous_state": "disabled"}
    # Sessions of a formerly MFA-exempt user are ended.
    assert [r.username for r in db.store.revocations_since(0, newer_than=0)] == ["alice"]


def test_user_set_state_rejects_an_unknown_state(runner: CliRunner, config: Path) -> None:
    add_user(runner, config, "alice")
    fails(run(runner, config, "user", "set-state", "alice", "sometimes"), "'sometimes' is not one of", code=2)


def test_user_reset_mfa(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice", "--state", "enforced")
    alice = db.user("alice")
    db.store.add_method(alice.id, "totp", "app", b"a", now=alice.created_at, confirmed=True)
    db.store.add_method(alice.id, "totp", "pending", b"b", now=alice.created_at)

    out = ok(run(runner, config, "user", "reset-mfa", "alice")).output

    assert "Removed 2 method(s)" in out
    assert db.store.list_methods(alice.id, confirmed_only=False) == []
    assert db.user("alice").state == "enabled"
    assert [r.username for r in db.store.revocations_since(0, newer_than=0)] == ["alice"]
    (row,) = db.audit("user_reset_mfa", "alice")
    assert row.actor == ACTOR
    assert row.detail == {"methods_removed": 2, "previous_state": "enforced"}


def test_user_revoke_sessions(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")
    add_user(runner, config, "bob")

    out = ok(run(runner, config, "user", "revoke-sessions", "alice")).output

    assert "Sessions of alice revoked" in out
    (revocation,) = db.store.revocations_since(0, newer_than=0)
    assert (revocation.username, revocation.session_id) == ("alice", None)
    (row,) = db.audit("sessions_revoked", "alice")
    assert row.actor == ACTOR


def test_user_unlock(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")
    alice = db.user("alice")
    for _ in range(3):
        db.store.record_failure(alice.id, now=alice.created_at, max_failures=3, reset_after=900, lock_for=1e9)
    assert db.user("alice").locked(alice.created_at + 1)
    assert "until unlocked" not in ok(run(runner, config, "user", "list")).output
    assert "Locked" in ok(run(runner, config, "user", "show", "alice")).output

    ok(run(runner, config, "user", "unlock", "alice"))

    fresh = db.user("alice")
    assert (fresh.failed_count, fresh.consecutive_failures, fresh.locked_until) == (0, 0, None)
    (row,) = db.audit("user_unlock", "alice")
    assert row.actor == ACTOR


def test_user_set_password(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")
    before = db.user("alice").password_hash

    ok(run(runner, config, "user", "set-password", "alice", "--password-stdin", input="another long one\n"))

    after = db.user("alice").password_hash
    assert after is not None and after != before
    assert len(db.audit("password_set", "alice")) == 1
    assert [r.username for r in db.store.revocations_since(0, newer_than=0)] == ["alice"]


def test_user_delete_with_yes(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")
    alice = db.user("alice")
    db.store.add_method(alice.id, "totp", "app", b"a", now=alice.created_at, confirmed=True)

    assert "Deleted alice" in ok(run(runner, config, "user", "delete", "alice", "--yes")).output

    assert db.store.get_user("alice") is None
    assert db.store.list_methods(alice.id, confirmed_only=False) == []
    assert [r.username for r in db.store.revocations_since(0, newer_than=0)] == ["alice"]
    (row,) = db.audit("user_delete", "alice")
    assert row.actor == ACTOR


def test_user_delete_without_yes_and_without_a_tty_asks_for_yes(runner: CliRunner, config: Path, db: Db) -> None:
    add_user(runner, config, "alice")

    fails(run(runner, config, "user", "delete", "alice", input="y\n"), "--yes")

    assert db.store.get_user("alice") is not None
    assert db.audit("user_delete") == []


# -- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    pytest.param(["user", "show", "ghost"], id="show"),
    pytest.param(["user", "set-state", "ghost", "enforced"], id="set-state"),
    pytest.param(["user", "reset-mfa", "ghost"], id="reset-mfa"),
    pytest.param(["user", "revoke-sessions", "ghost"], id="revoke-sessions"),
    pytest.param(["user", "unlock", "ghost"], id="unlock"),
    pytest.param(["user", "delete", "ghost", "--yes"], id="delete"),
])
def test_unknown_user_is_a_clear_error(runner: CliRunner, config: Path, db: Db, command: Sequence[str]) -> None:
    fails(run(runner, config, *command), "no user named 'ghost'", "mfa-admin user list")
    assert db.store.revocations_since(0, newer_than=0) == []


@pytest.mark.parametrize("command", [
    pytest.param(["user", "show", "Bad Name!"], id="show"),
    pytest.param(["user", "unlock", "Bad Name!"], id="unlock"),
])
def test_invalid_username_is_a_clear_error(runner: CliRunner, config: Path, command: Sequence[str]) -> None:
    fails(run(runner, config, *command), "'Bad Name!' is not a valid username")


@pytest.mark.parametrize("command", [
    pytest.param(["user", "list"], id="user-list"),
    pytest.param(["db", "upgrade"], id="db-upgrade"),
    pytest.param(["user", "add", "alice", "--no-password"], id="user-add"),
])
def test_missing_config_is_a_usage_error(runner: CliRunner, command: Sequence[str]) -> None:
    fails(run(runner, None, *command), "MFA_CONFIG", "--config", code=2)


def test_config_from_the_environment(runner: CliRunner, config: Path) -> None:
    result = runner.invoke(admin, ["user", "list"], env={"MFA_CONFIG": str(config)}, catch_exceptions=False)
    assert "No users yet" in ok(result).output


def test_config_with_an_unknown_key_names_the_file_and_the_key(runner: CliRunner, config: Path) -> None:
    bad = config.with_name("bad.toml")
    bad.write_text(config.read_text().replace("[lockout]", "[lockout]\nmax_tries = 3"))

    fails(run(runner, bad, "user", "list"), str(bad), "lockout.max_tries", "unknown key")


def test_unreadable_config_file_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    fails(run(runner, missing, "user", "list"), str(missing), "cannot read")


@pytest.mark.parametrize("command", [
    pytest.param(["user", "list"], id="user-list"),
    pytest.param(["user", "show", "alice"], id="user-show"),
    pytest.param(["user", "add", "alice", "--no-password"], id="user-add"),
])
def test_unmigrated_database_says_to_run_db_upgrade(runner: CliRunner, fresh_config: Path,
                                                    command: Sequence[str]) -> None:
    fails(run(runner, fresh_config, *command), "mfa-admin db upgrade")


def test_unmigrated_database_is_refused_cleanly(runner: CliRunner, fresh_config: Path) -> None:
    """What holds today, whatever the wording: a clean error, exit code 1, no traceback."""
    fails(run(runner, fresh_config, "user", "list"))


def test_commands_close_their_store(runner: CliRunner, config: Path, cli_runtimes: list[Runtime]) -> None:
    ok(run(runner, config, "user", "list"))

    assert len(cli_runtimes) == 1
    pool = cli_runtimes[0].store.engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() == 0, "pooled connections left open"


# -- mfa-middleware -------------------------------------------------------------------------------------------
def test_check_accepts_a_valid_config(runner: CliRunner, fresh_config: Path) -> None:
    result = runner.invoke(main, ["check", str(fresh_config)], catch_exceptions=False)

    assert "OK (3 rule(s), default policy deny)" in ok(result).output


@pytest.mark.parametrize(("replace", "by", "key"), [
    pytest.param("[lockout]", "[lockout]\nmax_tries = 3", "lockout.max_tries", id="unknown-key"),
    pytest.param('default_policy = "deny"', 'default_policy = "maybe"', "default_policy", id="bad-choice"),
    pytest.param('lock_for = "15m"', 'lock_for = "soon"', "lockout.lock_for", id="bad-duration"),
    pytest.param('policy = "bypass"', 'policy = "open"', "rules[0].policy", id="bad-rule"),
])
def test_check_names_the_file_and_the_key(runner: CliRunner, fresh_config: Path, replace: str, by: str,
                                          key: str) -> None:
    text = fresh_config.read_text()
    assert replace in text
    fresh_config.write_text(text.replace(replace, by, 1))

    result = runner.invoke(main, ["check", str(fresh_config)], catch_exceptions=False)

    fails(result, str(fresh_config), key)


def test_check_rejects_invalid_toml(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("secret_keys = [\n")
    fails(runner.invoke(main, ["check", str(path)], catch_exceptions=False), str(path), "not valid TOML")


# -- both engines ---------------------------------------------------------------------------------------------
def test_admin_flow_on_each_engine(runner: CliRunner, tmp_path: Path, database_url: str) -> None:
    config = tmp_path / "engine.toml"
    ok(runner.invoke(admin, ["init", str(config), "--database", database_url]))
    ok(run(runner, config, "db", "upgrade"))
    add_user(runner, config, "alice", "--groups", "admins", "--admin")
    add_user(runner, config, "bob")
    ok(run(runner, config, "user", "set-state", "bob", "enforced"))
    ok(run(runner, config, "user", "revoke-sessions", "alice"))
    fails(run(runner, config, "user", "add", "bob", "--no-password"), "already exists")

    out = ok(run(runner, config, "user", "list")).output

    assert "2 user(s)" in out and "alice" in out and "bob" in out
    d = Db(config)
    try:
        assert d.user("bob").state == "enforced"
        assert {e.actor for e in d.store.list_audit()} == {ACTOR}
        assert [r.username for r in d.store.revocations_since(0, newer_than=0) if r.session_id is None] == ["alice"]
    finally:
        d.close()


# -- the installed console script -----------------------------------------------------------------------------
def test_installed_mfa_admin_script(config: Path, db: Db) -> None:
    script = Path(sys.executable).parent / "mfa-admin"
    assert script.exists(), f"console script not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFA_")}
    env.update(MFA_CONFIG=str(config), LOGNAME=OPERATOR, COLUMNS="200")

    helped = subprocess.run([str(script), "--help"], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    added = subprocess.run([str(script), "user", "add", "dave", "--password-stdin", "--groups", "ops"],
                           input=PASSWORD + "\n", env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    listed = subprocess.run([str(script), "user", "list"], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    missing = subprocess.run([str(script), "user", "show", "ghost"], env=env, capture_output=True, text=True,
                             timeout=120, check=False)

    assert helped.returncode == 0, helped.stderr
    assert "MFA_CONFIG" in helped.stdout and "user" in helped.stdout and "db" in helped.stdout
    assert added.returncode == 0, added.stderr
    assert "Added dave (enabled)" in added.stdout
    assert listed.returncode == 0 and "dave" in listed.stdout and "ops" in listed.stdout
    assert missing.returncode == 1
    assert "no user named 'ghost'" in missing.stderr and "Traceback" not in missing.stderr
    assert db.user("dave").groups == ("ops",)
    (row,) = db.audit("user_add", "dave")
    assert row.actor == ACTOR
