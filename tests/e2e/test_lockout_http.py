"""Concurrent guesses over real HTTP never check more than the lockout limit (issue 7, finding 7).

Four server processes (``tests/e2e/lockout_server.py``: waitress, 8 threads each) share one store, a SQLite file
or a real PostgreSQL, and one configuration file with ``max_failures = 10``. The attacker sends 50 wrong secrets
at the same moment to each server (200 in all, each on its own connection) on the password form, on HTTP Basic
(app-password shaped) and on the second-factor step holding a pending sign-in made with the stolen password.
Each server's hasher appends a line to a shared file for every real password it checks; second-factor checks are
counted from the audit rows (``rejected``), which are written only after a code was checked. Then the correct
secret, sent to every server, is refused while the lock holds and is not checked.

Process start-up is bounded (``START_TIMEOUT``); the processes are stopped by pid in ``finally``.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import select
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pyotp
import pytest
from cryptography.fernet import Fernet

from mfa_middleware import MFAMiddleware
from tests.e2e.basic_server import app
from tests.support.lockout import (
    MAX_FAILURES,
    CountingHasher,
    cookie_header,
    lines,
    run_together,
)
from tests.support.mfa import Browser, Clock, csrf_of

ROOT = Path(__file__).resolve().parents[2]
SERVERS = 4
PER_SERVER = 50
CORRECT_AFTER = 8
START_TIMEOUT = 60.0
PASSWORD = "correct horse battery staple"


def write_config(path: Path, database_url: str) -> None:
    path.write_text(f"""\
secret_keys = [{json.dumps(secrets.token_urlsafe(48))}]
encryption_key = {json.dumps(Fernet.generate_key().decode())}
database = {json.dumps(database_url)}
default_policy = "deny"

[lockout]
max_failures = {MAX_FAILURES}
max_failures_per_client = 0

[[rules]]
path = "/dav/*"
policy = "two_factor"
basic = true

[[rules]]
path = "/*"
policy = "two_factor"
""")


@contextmanager
def server_process(config: Path, log: Path, stderr: Path) -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFA_")}
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.lockout_server", str(config), str(log)],
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        assert line.strip().isdigit(), f"the server did not start within {START_TIMEOUT} s:\n{stderr.read_text()}"
        yield int(line)
    finally:
        proc.terminate()  # SIGTERM to proc.pid
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


class RealClock(Clock):
    """The servers run on the real clock; so does the in-process middleware that prepares their accounts."""

    def __init__(self) -> None:
        pass

    @property
    def now(self) -> float:  # type: ignore[override]
        return time.time()

    def __call__(self) -> float:
        return time.time()


@dataclass(frozen=True)
class Farm:
    ports: list[int]
    log: Path  # one line per real password checked, by any server
    local: MFAMiddleware  # same configuration and store, in this process: sets up accounts, makes cookies
    clock: Clock

    def request(self, port: int, method: str, path: str, headers: dict[str, str],
                form: dict[str, str] | None = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            body = urlencode(form) if form is not None else None
            if body is not None:
                headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
            conn.request(method, path, body=body, headers=headers)
            with conn.getresponse() as response:
                response.read()
                return response.status
        finally:
            conn.close()

    def rejected_codes(self, username: str) -> int:
        rows = self.local.runtime.store.list_audit(username=username, limit=10_000)
        return sum(1 for r in rows if r.event == "second_factor" and r.result in ("rejected", "replayed"))


@pytest.fixture
def farm(database_url: str, tmp_path: Path) -> Iterator[Farm]:
    config = tmp_path / "mfa.toml"
    write_config(config, database_url)
    clock = RealClock()
    local = MFAMiddleware(app, str(config), clock=clock, password_hasher=CountingHasher())
    local.runtime.store.upgrade()
    log = tmp_path / "checks.log"
    try:
        with ExitStack() as stack:
            ports = [stack.enter_context(server_process(config, log, tmp_path / f"server{n}.err"))
                     for n in range(SERVERS)]
            yield Farm(ports, log, local, clock)
    finally:
        local.runtime.close()


def attack(farm: Farm, send: Callable[[int, int], int]) -> list[int]:
    """50 attempts at the same moment on each server, each on its own connection."""
    return run_together(SERVERS * PER_SERVER, lambda i: send(farm.ports[i % SERVERS], i))


def test_password_form_over_http(farm: Farm) -> None:
    farm.local.runtime.accounts.add("alice", actor="test", password=PASSWORD)
    page = Browser(farm.local).get("/_mfa/login")
    cookie, csrf = cookie_header(page.headers.getlist("Set-Cookie")), csrf_of(page.text)

    def login(port: int, i: int, password: str | None = None) -> int:
        form = {"username": "alice", "password": password or f"wrong password {i}", "next": "/", "csrf_token": csrf}
        return farm.request(port, "POST", "/_mfa/login", {"Cookie": cookie}, form)

    statuses = attack(farm, login)

    checked = lines(str(farm.log))
    assert statuses == [401] * (SERVERS * PER_SERVER)
    assert checked <= MAX_FAILURES, f"{checked} passwords checked over HTTP with max_failures = {MAX_FAILURES}"
    correct = [login(port, 0, PASSWORD) for port in farm.ports for _ in range(CORRECT_AFTER // SERVERS)]
    assert correct == [401] * len(correct), "the correct password was accepted while locked"
    assert lines(str(farm.log)) == checked, "a password was checked while the account was locked"


def test_basic_over_http(farm: Farm) -> None:
    rt = farm.local.runtime
    rt.accounts.add("bob", actor="test", password=PASSWORD)
    Browser(farm.local).sign_in_and_enroll("bob", PASSWORD, farm.clock)
    _, app_password = rt.app_passwords.create(rt.accounts.get("bob"), "phone", actor="test")

    def dav(port: int, i: int, password: str | None = None) -> int:
        secret = password or "wrongwrongwrong" + "abcdefghijklmnopqrstuvwxyz"[i % 26]
        token = b64encode(f"bob:{secret}".encode()).decode()
        return farm.request(port, "GET", "/dav/x", {"Authorization": f"Basic {token}"})

    statuses = attack(farm, dav)

    checked = lines(str(farm.log))
    assert statuses == [401] * (SERVERS * PER_SERVER)
    assert checked <= MAX_FAILURES, f"{checked} passwords checked over HTTP with max_failures = {MAX_FAILURES}"
    correct = [dav(port, 0, app_password) for port in farm.ports]
    assert correct == [401] * SERVERS, "the correct app password was accepted while locked"
    assert lines(str(farm.log)) == checked, "a password was checked while the account was locked"


def test_second_factor_over_http(farm: Farm) -> None:
    farm.local.runtime.accounts.add("carol", actor="test", password=PASSWORD)
    secret = Browser(farm.local).sign_in_and_enroll("carol", PASSWORD, farm.clock)
    thief = Browser(farm.local)
    signed = thief.login("carol", PASSWORD)  # the stolen password: a pending sign-in waiting for the code
    assert signed.status_code == 303, signed.text
    cookie = cookie_header(signed.headers.getlist("Set-Cookie"))
    csrf = csrf_of(thief.get("/_mfa/verify").text)
    totp = pyotp.TOTP(secret)
    valid = {totp.at(farm.clock.now + 30 * n) for n in range(-3, 4)}  # never guessed: every guess is wrong

    def verify(port: int, i: int, code: str | None = None) -> int:
        guess = code or next(c for c in (f"{(i * 7919 + k) % 1_000_000:06d}" for k in range(10)) if c not in valid)
        return farm.request(port, "POST", "/_mfa/verify", {"Cookie": cookie}, {"code": guess, "csrf_token": csrf})

    statuses = attack(farm, verify)

    checked = farm.rejected_codes("carol")
    assert set(statuses) <= {401, 429}, statuses
    assert checked <= MAX_FAILURES, f"{checked} codes checked over HTTP with max_failures = {MAX_FAILURES}"
    user = farm.local.runtime.store.get_user("carol")
    assert user is not None and user.failed_count == MAX_FAILURES
    correct = [verify(port, 0, totp.now()) for port in farm.ports]
    assert correct == [429] * SERVERS, "the correct code was accepted while locked"
    assert farm.rejected_codes("carol") == checked
