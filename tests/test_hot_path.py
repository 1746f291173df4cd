"""The authenticated hot path reads no store (DESIGN.md sections 2 and 7).

A signed-in browser on a two_factor route costs a cookie check and a look in the in-process revocation cache.
The cache refreshes from the store once per ``revocation_interval`` with one incremental SELECT; nothing else
on that path may touch the database. Counting statements (not timing them) keeps these tests deterministic;
the timings live in ``benchmarks/bench_hot_path.py``, which the last test only smoke-runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from mfa_middleware import MFAMiddleware
from tests.support.mfa import Browser, Clock, make_middleware

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "benchmarks" / "bench_hot_path.py"
USERNAME = "alice"
PASSWORD = "correct horse battery staple"
REVOCATION_SELECT = re.compile(r"^\s*SELECT\b.*\bFROM mfa_revocations\b", re.DOTALL | re.IGNORECASE)


@dataclass
class StatementLog:
    """Every SQL statement SQLAlchemy sends through one engine while attached."""

    engine: Engine
    statements: list[str] = field(default_factory=list)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        self.statements.append(statement)

    def attach(self) -> None:
        event.listen(self.engine, "before_cursor_execute", self._record)

    def detach(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


@dataclass
class SignedIn:
    mw: MFAMiddleware
    clock: Clock
    browser: Browser
    log: StatementLog

    def get_home(self) -> str:
        response = self.browser.get("/home")
        assert response.status_code == 200, (response.status_code, response.headers.get("Location"))
        assert "Set-Cookie" not in response.headers
        return response.text


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mfa.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def signed_in(store_url: str) -> Iterator[SignedIn]:
    """A user signed in through the real pages (password, then TOTP enrollment), one warm-up request done,
    and a statement log attached to the store's engine from then on. The clock stands still."""
    clock = Clock()
    mw = make_middleware(store_url, clock)
    # These tests pin the interval poll, which PostgreSQL keeps as the fallback of its pushed revocations; the
    # push (its reads run in the listener's thread, never in a request's) is tested in test_revocation_notify.py.
    mw.runtime.revocations.listener = None
    log = StatementLog(mw.runtime.store.engine)
    try:
        mw.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        browser = Browser(mw)
        browser.sign_in_and_enroll(USERNAME, PASSWORD, clock, next_path="/home")
        state = SignedIn(mw, clock, browser, log)
        assert state.get_home() == f"app path=/home user={USERNAME} level=2"  # warm-up: fills the cache
        mw.runtime.revocations.wait_idle()  # and the first (hourly) pruning, which runs in the background
        log.attach()
        try:
            yield state
        finally:
            log.detach()
    finally:
        mw.runtime.close()


def test_authenticated_requests_on_a_two_factor_route_run_no_sql(signed_in: SignedIn) -> None:
    assert signed_in.mw.runtime.policy.match("GET", "/home").policy == "two_factor"

    for _ in range(200):
        assert signed_in.get_home() == f"app path=/home user={USERNAME} level=2"

    assert signed_in.log.statements == []


def test_the_revocation_cache_refreshes_with_one_select_per_interval(signed_in: SignedIn) -> None:
    interval = signed_in.mw.runtime.revocations.interval
    assert interval == 5.0

    signed_in.clock.advance(interval - 0.5)
    signed_in.get_home()
    assert signed_in.log.statements == []  # still inside the interval

    signed_in.clock.advance(1.0)
    signed_in.get_home()
    assert len(signed_in.log.statements) == 1, signed_in.log.statements
    assert REVOCATION_SELECT.match(signed_in.log.statements[0]), signed_in.log.statements[0]

    for _ in range(50):
        signed_in.get_home()
    assert len(signed_in.log.statements) == 1  # the refreshed view serves the next interval


def test_a_revocation_by_another_process_ends_the_session_at_the_next_refresh(signed_in: SignedIn) -> None:
    other = make_middleware(signed_in.mw.runtime.store.url, signed_in.clock)  # its own engine, like a process
    try:
        signed_in.clock.advance(1.0)
        other.runtime.accounts.revoke_sessions(USERNAME, actor="admin")
    finally:
        other.runtime.close()

    signed_in.get_home()  # the cache is still fresh: the revocation is not seen yet, and no query runs
    assert signed_in.log.statements == []

    signed_in.clock.advance(signed_in.mw.runtime.revocations.interval)
    response = signed_in.browser.get("/home")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/_mfa/login?next=/home")
    assert len(signed_in.log.statements) == 1
    assert REVOCATION_SELECT.match(signed_in.log.statements[0])


def test_the_benchmark_script_runs_and_prints_the_ratio() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-W", "error", str(BENCHMARK), "--iterations", "200", "--repeats", "3",
         "--realistic-seconds", "0.2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert re.search(r"^ratio overhead / loads: \d+\.\d\d \(target <= 0\.5\) (PASS|ABOVE TARGET)$",
                     result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^ratio overhead / loads, new cookie each request: \d+\.\d\d \(target <= 1\.5\) "
                     r"(PASS|ABOVE TARGET)$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^SQL statements during \d+ requests with a fixed clock: 0 \(target 0\) PASS$",
                     result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^realistic \(real clock, 5 s revocation interval, ", result.stdout, re.MULTILINE)
