"""``mfa-admin tokens``: import an OATH hardware token inventory (progress bar, a table of refused lines, a summary,
non-zero exit when nothing was imported), list, assign, unassign, delete; each change audited with the actor.
Through click's CliRunner on a configuration written by ``mfa-admin init``, and once through the installed
script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.pool import QueuePool

from mfa_middleware.config import load_config
from mfa_middleware.secretbox import SecretBox
from mfa_middleware.runtime import Runtime
from tests.cli.helpers import ACTOR, OPERATOR, Db, add_user, fails, ok, run

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
HEADER = "upn,serial number,secret key,time interval,manufacturer,model"
INVENTORY = "\r\n".join([
    HEADER + ",type,counter",
    f"alice,T30,{SECRET},30,Contoso,Token 30,,",
    f"bob,T60,{SECRET},60,Contoso,Token 60,,",
    f",H1,{SECRET},,Contoso,Event token,hotp,5",
    f"ghost,G1,{SECRET},30,Contoso,Token 30,,",
    "alice,BAD,NOT-BASE32!,30,Contoso,Token 30,,",
    f"alice,T30,{SECRET},30,Contoso,Token 30,,",
]) + "\r\n"


@pytest.fixture
def users(runner: CliRunner, config: Path) -> Path:
    add_user(runner, config, "alice")
    add_user(runner, config, "bob")
    return config


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.csv"
    path.write_bytes(b"\xef\xbb\xbf" + INVENTORY.encode())
    return path


def test_import_reports_progress_refusals_and_a_summary(runner: CliRunner, users: Path, inventory: Path,
                                                       db: Db, cli_runtimes: list[Runtime]) -> None:
    result = run(runner, users, "tokens", "import", str(inventory))

    assert result.exit_code == 0, result.output
    assert "Importing tokens" in result.stderr and "4/4" in result.stderr  # the bar: 4 lines parsed
    assert "Refused lines" in result.stdout
    for line, serial, reason in (("5", "G1", "unknown user"), ("6", "BAD", "bad Base32"),
                                 ("7", "T30", "duplicate serial in file")):
        assert any(line in row and serial in row and reason in row for row in result.stdout.splitlines()), \
            result.stdout
    assert "no user named 'ghost'" in result.stdout
    assert "Imported 3 of 6 token(s); 3 refused." in result.stdout
    assert SECRET not in result.output
    tokens = {t.serial: t for t in db.store.list_oath_tokens()}
    assert sorted(tokens) == ["H1", "T30", "T60"]
    assert (tokens["T30"].username, tokens["T30"].period) == ("alice", 30)
    assert (tokens["T60"].username, tokens["T60"].period) == ("bob", 60)
    assert (tokens["H1"].username, tokens["H1"].kind, tokens["H1"].counter) == (None, "hotp", 5)
    box = SecretBox(load_config(users).encryption_keys)
    assert box.decrypt(tokens["T60"].secret) == SECRET
    summary = db.audit("oath_tokens_import")
    assert [(e.actor, e.result, e.detail) for e in summary] == [(ACTOR, "success", {"count": 3, "refused": 3})]
    assert {(e.username, e.detail["serial"]) for e in db.audit("oath_token_import")} == {
        ("alice", "T30"), ("bob", "T60"), (None, "H1")}
    pool = cli_runtimes[-1].store.engine.pool  # the import's own runtime closed its store
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() == 0, "pooled connections left open"


def test_importing_the_same_file_again_imports_nothing_and_fails(runner: CliRunner, users: Path,
                                                                 inventory: Path) -> None:
    ok(run(runner, users, "tokens", "import", str(inventory)))

    again = run(runner, users, "tokens", "import", str(inventory))

    assert again.exit_code == 1
    assert "Imported 0 of 6 token(s); 6 refused." in again.stdout
    assert again.stdout.count("serial already imported") == 3
    assert "Traceback" not in again.output


def test_import_from_standard_input(runner: CliRunner, users: Path, db: Db) -> None:
    result = ok(run(runner, users, "tokens", "import", "-", input=f"{HEADER}\nalice,S1,{SECRET},60,,\n"))

    assert "Imported 1 of 1 token(s); 0 refused." in result.stdout
    assert "Refused lines" not in result.stdout
    assert [t.serial for t in db.store.list_oath_tokens()] == ["S1"]


@pytest.mark.parametrize(("content", "fragment"), [
    pytest.param(b"", "the file is empty", id="empty"),
    pytest.param(b"upn,serial,secret key\n", "unknown column 'serial'", id="unknown-column"),
    pytest.param(b"\xff\xfeu\x00", "not UTF-8", id="utf-16"),
])
def test_a_refused_file_is_a_clean_error(runner: CliRunner, users: Path, tmp_path: Path, content: bytes,
                                         fragment: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)

    fails(run(runner, users, "tokens", "import", str(path)), fragment)


def test_a_missing_file_is_a_clean_error(runner: CliRunner, users: Path, tmp_path: Path) -> None:
    fails(run(runner, users, "tokens", "import", str(tmp_path / "nope.csv")), "cannot read", "nope.csv")


def test_list_assign_unassign_delete(runner: CliRunner, users: Path, inventory: Path, db: Db) -> None:
    ok(run(runner, users, "tokens", "import", str(inventory)))
    alice = db.user("alice")
    t30 = db.store.get_oath_token("T30")
    assert t30 is not None
    method = db.store.add_method(alice.id, "oath", "Token T30", None, now=1.0, confirmed=True)
    assert db.store.link_oath_token(t30.id, alice.id, method)

    listed = ok(run(runner, users, "tokens", "list")).stdout
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in listed.splitlines() if line.startswith("│")]
    assert len(cells) == 3
    assert cells == [["H1", "HOTP", "-", "Contoso", "Event token", "no"],
                     ["T30", "TOTP 30s", "alice", "Contoso", "Token 30", "yes"],
                     ["T60", "TOTP 60s", "bob", "Contoso", "Token 60", "no"]]
    assert "T60" in ok(run(runner, users, "tokens", "list", "--user", "bob")).stdout
    assert "T30" not in ok(run(runner, users, "tokens", "list", "--user", "bob")).stdout

    assert "H1 is assigned to bob" in ok(run(runner, users, "tokens", "assign", "H1", "Bob")).stdout
    fails(run(runner, users, "tokens", "assign", "H1", "alice"), "assigned to bob", "tokens unassign H1")
    fails(run(runner, users, "tokens", "assign", "H1", "ghost"), "no user named 'ghost'")
    fails(run(runner, users, "tokens", "assign", "ZZ", "bob"), "no token with serial number 'ZZ'",
          "mfa-admin tokens list")

    unassigned = ok(run(runner, users, "tokens", "unassign", "T30")).stdout
    assert "back in the pool" in unassigned and "sessions were ended" in unassigned
    assert db.store.get_method(method) is None
    assert "was not assigned" in ok(run(runner, users, "tokens", "unassign", "T30")).stdout

    fails(run(runner, users, "tokens", "delete", "T60"), "add --yes")
    deleted = ok(run(runner, users, "tokens", "delete", "T60", "--yes")).stdout
    assert "Deleted token T60 (it was assigned to bob)." in deleted
    assert db.store.get_oath_token("T60") is None
    fails(run(runner, users, "tokens", "delete", "T60", "--yes"), "no token with serial number 'T60'")

    events = [(e.event, e.username, e.detail.get("serial"), e.actor) for e in db.store.list_audit(limit=100)
              if e.event in ("oath_token_assign", "oath_token_unassign", "oath_token_delete")]
    assert events == [("oath_token_delete", "bob", "T60", ACTOR), ("oath_token_unassign", None, "T30", ACTOR),
                      ("oath_token_unassign", "alice", "T30", ACTOR), ("oath_token_assign", "bob", "H1", ACTOR)]
    assert [r.username for r in db.store.revocations_since(0, newer_than=0)] == ["alice"]


def test_tokens_commands_need_a_migrated_store(runner: CliRunner, fresh_config: Path) -> None:
    fails(run(runner, fresh_config, "tokens", "list"), "mfa-admin db upgrade")


def test_installed_script_imports_and_lists(users: Path, inventory: Path, db: Db) -> None:
    script = Path(sys.executable).parent / "mfa-admin"
    assert script.exists(), f"console script not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFA_")}
    env.update(MFA_CONFIG=str(users), LOGNAME=OPERATOR, COLUMNS="200")

    imported = subprocess.run([str(script), "tokens", "import", str(inventory)], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
    listed = subprocess.run([str(script), "tokens", "list"], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    nothing = subprocess.run([str(script), "tokens", "import", str(inventory)], env=env, capture_output=True,
                             text=True, timeout=120, check=False)

    assert imported.returncode == 0, imported.stderr
    assert "Imported 3 of 6 token(s); 3 refused." in imported.stdout
    assert listed.returncode == 0 and "T60" in listed.stdout and "HOTP" in listed.stdout
    assert nothing.returncode == 1 and "Traceback" not in nothing.stderr
    assert SECRET not in imported.stdout + imported.stderr + listed.stdout
    assert {e.actor for e in db.audit("oath_token_import")} == {ACTOR}
