"""Listings at scale: `mfa-admin user list`, `audit`, `fraud list`, `tokens list` and `app-password list` page and
filter like the admin portal, stream CSV and JSON in bounded memory, and say how to get the next page; `audit
export` and `audit prune`."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from mfa_middleware.store.schema import users
from tests.cli.helpers import Db, add_user, fails, ok, run


def _rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]


@pytest.fixture
def crowd(runner: CliRunner, config: Path, db: Db) -> Path:
    now = time.time()
    add_user(runner, config, "alice", "--groups", "finance,admins", "--state", "enforced",
             "--email", "alice@example.org")
    add_user(runner, config, "bob", "--groups", "fin")
    for i in range(12):
        db.store.create_user(f"user{i:02d}", now=now, groups=("sales",), state="enabled")
    db.store.set_block(db.user("bob").id, now=now, until=now + 3600, reason="lost phone")
    return config


def test_table_is_one_page_with_the_next_command(runner: CliRunner, crowd: Path) -> None:
    out = ok(run(runner, crowd, "user", "list", "--limit", "5")).stdout
    assert "14 user(s)" in out
    assert [r[0] for r in _rows(out)] == ["alice", "bob", "user00", "user01", "user02"]
    assert "More: mfa-admin user list --limit 5 --after user02" in out
    second = ok(run(runner, crowd, "user", "list", "--limit", "5", "--after", "user02")).stdout
    assert [r[0] for r in _rows(second)] == ["user03", "user04", "user05", "user06", "user07"]
    last = ok(run(runner, crowd, "user", "list", "--limit", "5", "--after", "user07")).stdout
    assert [r[0] for r in _rows(last)] == ["user08", "user09", "user10", "user11"] and "More:" not in last


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(("--search", "EXAMPLE.org"), ["alice"], id="search"),
    pytest.param(("--state", "enforced"), ["alice"], id="state"),
    pytest.param(("--group", "fin"), ["bob"], id="group"),
    pytest.param(("--group", "Finance"), ["alice"], id="group-any-case"),
    pytest.param(("--blocked",), ["bob"], id="blocked"),
    pytest.param(("--not-blocked", "--group", "finance"), ["alice"], id="not-blocked"),
    pytest.param(("--locked",), [], id="locked"),
    pytest.param(("--method", "totp"), [], id="method"),
    pytest.param(("--search", "zzz"), [], id="nothing"),
    pytest.param(("--search", "ünïcødé ✓"), [], id="non-ascii"),
])
def test_filters(runner: CliRunner, crowd: Path, args: tuple[str, ...], expected: list[str]) -> None:
    out = ok(run(runner, crowd, "user", "list", *args)).stdout
    assert [r[0] for r in _rows(out)] == expected
    if not expected:
        assert "No user matches." in out
    got = list(csv.DictReader(io.StringIO(ok(run(runner, crowd, "user", "list", *args, "--format", "csv")).stdout)))
    assert [r["username"] for r in got] == expected


def test_the_next_page_hint_keeps_the_filters(runner: CliRunner, crowd: Path) -> None:
    out = ok(run(runner, crowd, "user", "list", "--group", "sales", "--not-blocked", "--limit", "3")).stdout
    assert "More: mfa-admin user list --group sales --not-blocked --limit 3 --after user02" in out


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("--state", "sometimes"), "Invalid value for '--state'", id="state"),
    pytest.param(("--limit", "0"), "Invalid value for '--limit'", id="limit-zero"),
    pytest.param(("--limit", "x"), "Invalid value for '--limit'", id="limit-text"),
    pytest.param(("--format", "xml"), "Invalid value for '--format'", id="format"),
    pytest.param(("--method", "carrier-pigeon"), "Invalid value for '--method'", id="method"),
])
def test_bad_options_say_what_to_do(runner: CliRunner, crowd: Path, args: tuple[str, ...], message: str) -> None:
    fails(run(runner, crowd, "user", "list", *args), message, code=2)


def test_csv_and_json_stream_every_row(runner: CliRunner, crowd: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(ok(run(runner, crowd, "user", "list", "--format", "csv")).stdout)))
    assert len(rows) == 14
    alice = rows[0]
    assert alice["username"] == "alice" and alice["groups"] == "finance,admins" and alice["state"] == "enforced"
    assert alice["admin"] == "false" and alice["created"].endswith("Z") and alice["locked_until"] == ""
    bob = rows[1]
    assert bob["blocked_until"].endswith("Z")
    data = json.loads(ok(run(runner, crowd, "user", "list", "--format", "json")).stdout)
    assert [d["username"] for d in data] == [r["username"] for r in rows]
    assert data[0]["groups"] == ["finance", "admins"] and data[0]["methods"] == 0 and data[0]["admin"] is False
    assert data[0]["email"] == "alice@example.org" and data[2]["email"] is None
    limited = json.loads(ok(run(runner, crowd, "user", "list", "--format", "json", "--limit", "2")).stdout)
    assert [d["username"] for d in limited] == ["alice", "bob"]
    empty = ok(run(runner, crowd, "user", "list", "--format", "json", "--search", "nobody")).stdout
    assert json.loads(empty) == []


def test_csv_cells_cannot_become_spreadsheet_formulas(runner: CliRunner, config: Path, db: Db) -> None:
    """OWASP CSV injection: a user agent or name that starts with = + - @ is written with a leading quote."""
    for i, agent in enumerate(["=HYPERLINK(\"http://evil\")", "+1+1", "-2", "@SUM(A1)", "\tx", "plain"]):
        db.store.write_audit(at=time.time() + i, actor="x", username="alice", event="signin", result="failure",
                             user_agent=agent, detail={"agent": agent})
    out = ok(run(runner, config, "audit", "--format", "csv", "--user", "alice")).stdout
    details = [r["detail"] for r in csv.DictReader(io.StringIO(out))]
    assert details[0] == "agent=plain"
    assert details[1:] == ["agent=\tx", "agent=@SUM(A1)", "agent=-2", "agent=+1+1", "agent==HYPERLINK(\"http://evil\")"]
    db.store.write_audit(at=time.time() + 10, actor="=cmd|' /C calc'!A0", username="alice", event="signin",
                         result="failure")
    first = next(csv.DictReader(io.StringIO(ok(run(runner, config, "audit", "--format", "csv")).stdout)))
    assert first["actor"] == "'=cmd|' /C calc'!A0"


def _seed_audit(db: Db, count: int, start: float) -> None:
    for i in range(count):
        db.store.write_audit(at=start + i * 3600, actor="cli:x", username="alice" if i % 2 else "bob",
                             event="signin" if i % 3 else "basic", result="success" if i % 4 else "failure",
                             detail={"n": i})


def test_audit_filters_and_pages(runner: CliRunner, config: Path, db: Db) -> None:
    start = time.time() - 48 * 3600
    _seed_audit(db, 40, start)
    out = ok(run(runner, config, "audit", "--user", "alice", "--event", "signin", "--limit", "3")).stdout
    shown = [int(r[-2].split("=")[1]) for r in _rows(out)]
    assert shown == [i for i in range(39, -1, -1) if i % 2 and i % 3][:3]
    assert "More: mfa-admin audit --user alice --event signin --limit 3 --before" in out
    before = out.split("--before ")[1].split()[0]
    nxt = ok(run(runner, config, "audit", "--user", "alice", "--event", "signin", "--limit", "3", "--before",
                 before)).stdout
    assert [int(r[-2].split("=")[1]) for r in _rows(nxt)] == [i for i in range(39, -1, -1) if i % 2 and i % 3][3:6]
    recent = json.loads(ok(run(runner, config, "audit", "--since", "10h", "--format", "json")).stdout)
    assert {d["detail"] for d in recent} <= {f"n={i}" for i in range(37, 40)} and recent
    failures = list(csv.DictReader(io.StringIO(ok(run(runner, config, "audit", "--result", "failure", "--format",
                                                      "csv")).stdout)))
    assert sorted(int(r["detail"].split("=")[1]) for r in failures) == [i for i in range(40) if i % 4 == 0]
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start + 2 * 3600 - 1))
    early = json.loads(ok(run(runner, config, "audit", "--until", until, "--format", "json")).stdout)
    assert [d["detail"] for d in early] == ["n=1", "n=0"]


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("--since", "yesterday"), "is neither a date", id="since-words"),
    pytest.param(("--until", "2026-13-45"), "is neither a date", id="until-bad-date"),
    pytest.param(("--since", "7y"), "is neither a date", id="since-unknown-unit"),
    pytest.param(("--before", "-1"), "Invalid value for '--before'", id="before-negative"),
])
def test_audit_bad_times(runner: CliRunner, config: Path, args: tuple[str, ...], message: str) -> None:
    fails(run(runner, config, "audit", *args), message, code=2)


def test_audit_export_to_a_private_file(runner: CliRunner, config: Path, db: Db, tmp_path: Path) -> None:
    _seed_audit(db, 7, time.time() - 10 * 3600)
    target = tmp_path / "audit.jsonl"
    out = ok(run(runner, config, "audit", "--user", "bob", "export", "--output", str(target))).stdout
    assert "Wrote 4 event(s)" in out
    lines = target.read_text().splitlines()
    assert [json.loads(line)["detail"] for line in lines] == ["n=6", "n=4", "n=2", "n=0"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    as_csv = ok(run(runner, config, "audit", "export", "--format", "csv")).stdout
    assert len(list(csv.DictReader(io.StringIO(as_csv)))) == 7


def test_audit_prune(runner: CliRunner, config: Path, db: Db) -> None:
    _seed_audit(db, 6, time.time() - 200 * 86400)  # six events 200 days ago, an hour apart
    db.store.write_audit(at=time.time(), actor="cli:x", username="carol", event="signin", result="success")
    fails(run(runner, config, "audit", "prune", "--older-than", "180d"), "add --yes")
    assert db.store.count_audit_before(time.time() - 180 * 86400) == 6
    fails(run(runner, config, "audit", "prune", "--older-than", "12h", "--yes"), "keep at least a day", code=2)
    fails(run(runner, config, "audit", "prune", "--older-than", "soon", "--yes"), "is not a duration", code=2)
    out = ok(run(runner, config, "audit", "prune", "--older-than", "180d", "--yes")).stdout
    assert "Deleted 6 audit event(s)" in out
    left = db.store.list_audit(limit=100)
    assert [e.username for e in left if e.event == "signin"] == ["carol"]
    assert [e.detail for e in left if e.event == "admin"][0]["count"] == 6
    assert "No event is older than 180d" in ok(run(runner, config, "audit", "prune", "--older-than", "180d")).stdout


def test_tokens_list_pages(runner: CliRunner, config: Path, db: Db, tmp_path: Path) -> None:
    inventory = tmp_path / "tokens.csv"
    inventory.write_text("serial number,secret key,time interval\n"
                         + "".join(f"T{i:03d},JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PX{'ABCDEFG'[i]},30\n" for i in range(7)))
    ok(run(runner, config, "tokens", "import", str(inventory)))
    out = ok(run(runner, config, "tokens", "list", "--limit", "3")).stdout
    assert [r[0] for r in _rows(out)] == ["T000", "T001", "T002"] and "--after T002" in out
    rows = list(csv.DictReader(io.StringIO(ok(run(runner, config, "tokens", "list", "--format", "csv")).stdout)))
    assert [r["serial"] for r in rows] == [f"T{i:03d}" for i in range(7)]
    assert all("JBSWY" not in json.dumps(r) for r in rows)


SCALE = 50_000
_CHILD = """
import resource, sys
from mfa_middleware.cli import admin
try:
    admin.main(sys.argv[1:], prog_name="mfa-admin", standalone_mode=False)
finally:
    sys.stderr.write("\\nMAXRSS_KB=%d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _child(config: Path, *args: str, stdout: int | None = None) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, "--config", str(config), *args], stdin=subprocess.DEVNULL,
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    rss = int(proc.stderr.rsplit("MAXRSS_KB=", 1)[1].split()[0])
    return rss, proc.stdout or ""


def test_fifty_thousand_users_stream_in_bounded_memory(config: Path, db: Db, tmp_path: Path) -> None:
    """Before paging, `user list` read every user into one table (5.1 GiB at a million users). Now the CSV stream
    of 50,000 users needs about as much memory as a one-row table."""
    now = time.time()
    rows = [dict(username=f"u{i:06d}", email=f"u{i}@example.org", display_name=None, groups="staff", is_admin=False,
                 state="enabled", password_hash=None, failed_count=0, consecutive_failures=0, created_at=now,
                 updated_at=now) for i in range(SCALE)]
    db.store._run(lambda c: c.execute(insert(users), rows))
    baseline, _ = _child(config, "user", "list", "--limit", "1")
    target = tmp_path / "users.csv"
    with open(target, "w") as handle:
        streamed, _ = _child(config, "user", "list", "--format", "csv", stdout=handle.fileno())
    with open(target) as handle:
        lines = sum(1 for _ in handle)
    assert lines == SCALE + 1
    assert streamed - baseline < 40 * 1024, (baseline, streamed)  # KiB
    table_rss, out = _child(config, "user", "list", "--search", "u04999")
    assert "10 user(s) match" in out and table_rss - baseline < 40 * 1024
