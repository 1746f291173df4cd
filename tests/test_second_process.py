"""Revoke, block and bypass expiry, each seen by a genuinely separate OS process sharing the store (issue 3).

Three processes take part, as in production: a server process (``tests/e2e/basic_server.py``: an app wrapped by
MFAMiddleware on a configuration FILE with ``revocation_interval = "1s"``, served by werkzeug on a free port),
the installed ``mfa-admin`` console script run through ``subprocess`` by "the helpdesk", and this test process,
which talks to the server over HTTP (``http.client``) and reads the store directly. Nothing is shared but the
store, on SQLite and on a real PostgreSQL.

Revocations reach other processes within the revocation interval, so the test polls the server in a bounded
loop (at most :data:`WITHIN` seconds, short waits between tries): it waits for a real interval, it does not
time anything.
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyotp
import pytest
from cryptography.fernet import Fernet

from mfa_middleware.store import Store
from mfa_middleware.store.sql import UserRecord
from tests.test_samples import PASSWORD, USERNAME, HttpClient, HttpResponse, enroll, sign_in, verify

SERVER_SCRIPT = Path(__file__).resolve().parent / "e2e" / "basic_server.py"
MFA_ADMIN = Path(sys.executable).parent / "mfa-admin"
OPERATOR = "helpdesk"
ACTOR = f"cli:{OPERATOR}"
WITHIN = 5.0  # seconds: the revocation interval is 1 s
START_TIMEOUT = 60.0
DAV = "/dav/inbox/"


def write_config(path: Path, database_url: str) -> None:
    path.write_text(f"""\
secret_keys = [{json.dumps(secrets.token_urlsafe(48))}]
encryption_key = {json.dumps(Fernet.generate_key().decode())}
database = {json.dumps(database_url)}
default_policy = "deny"

[session]
revocation_interval = "1s"

[[rules]]
path = "/dav/*"
policy = "two_factor"
basic = true

[[rules]]
path = "/*"
policy = "two_factor"
""")


def mfa_admin(config: Path, *args: str, stdin: str | None = None) -> str:
    """``mfa-admin --config CONFIG ARGS...`` as a separate process; returns its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFA_")}
    env.update(LOGNAME=OPERATOR, COLUMNS="200", NO_COLOR="1")
    done = subprocess.run([str(MFA_ADMIN), "--config", str(config), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@dataclass(frozen=True)
class BasicResponse:
    status: int
    body: str
    www_authenticate: str | None


def basic_get(base: str, path: str, username: str, password: str) -> BasicResponse:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    token = b64encode(f"{username}:{password}".encode()).decode("ascii")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Basic {token}", "User-Agent": "davfs2/1.7"})
        with conn.getresponse() as raw:
            return BasicResponse(raw.status, raw.read().decode("utf-8"), raw.headers.get("WWW-Authenticate"))
    finally:
        conn.close()


def wait_for(condition: Callable[[], bool], within: float = WITHIN) -> bool:
    """Poll ``condition`` until it holds (True) or ``within`` seconds have passed (False)."""
    deadline = time.monotonic() + within
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@dataclass
class Server:
    base: str
    config: Path
    store: Store
    secret: str  # alice's TOTP key, from the enrollment page

    def user(self) -> UserRecord:
        user = self.store.get_user(USERNAME)
        assert user is not None
        return user

    def dav(self, password: str) -> BasicResponse:
        return basic_get(self.base, DAV, USERNAME, password)

    def admin(self, *args: str, stdin: str | None = None) -> str:
        return mfa_admin(self.config, *args, stdin=stdin)

    def audit(self, event: str) -> list[tuple[str, str]]:
        return [(e.result, e.actor) for e in self.store.list_audit(username=USERNAME, limit=1000) if e.event == event]


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """The server process on a fresh store, and alice added by mfa-admin and enrolled through its pages."""
    assert MFA_ADMIN.exists(), f"console script not installed next to {sys.executable}"
    config = tmp_path / "mfa.toml"
    write_config(config, database_url)
    mfa_admin(config, "db", "upgrade")
    mfa_admin(config, "user", "add", USERNAME, "--password-stdin", stdin=PASSWORD + "\n")

    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFA_")}
    with log.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), str(config)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=log_file, text=True, env=env)
    store = Store(database_url)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        assert line.strip().isdigit(), f"the server process did not start:\n{log_tail(log)}"
        base = f"http://127.0.0.1:{int(line)}"
        client = HttpClient(base)
        first = sign_in(client)
        assert first.status == 303 and first.location == "/_mfa/enroll", first.body
        secret, _code, done = enroll(client)
        assert done.status == 303, done.body
        assert store.get_user(USERNAME) is not None
        yield Server(base, config, store, secret)
    finally:
        store.close()
        proc.terminate()  # SIGTERM to proc.pid
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def fresh_sign_in(server: Server) -> tuple[HttpClient, HttpResponse]:
    client = HttpClient(server.base)
    return client, sign_in(client)


# -- revoke ---------------------------------------------------------------------------------------------------
def test_revoked_app_password_is_refused_by_the_other_process(server: Server) -> None:
    laptop = server.admin("app-password", "create", USERNAME, "--label", "laptop").strip()
    phone = server.admin("app-password", "create", USERNAME, "--label", "phone").strip()
    assert server.user().state == "enforced"
    for _ in range(2):  # the second request is answered from the server's verified-credential cache
        ok = server.dav(laptop)
        assert ok.status == 200 and f"user={USERNAME}" in ok.body, ok.body
    assert server.dav(phone).status == 200

    server.admin("app-password", "revoke", USERNAME, "laptop")

    assert wait_for(lambda: server.dav(laptop).status == 401), f"still accepted {WITHIN} s after the revoke"
    refused = server.dav(laptop)
    assert refused.status == 401 and "not correct" in refused.body, refused.body
    assert refused.www_authenticate is not None and refused.www_authenticate.startswith("Basic realm=")
    assert server.dav(phone).status == 200, "the other app password still works"
    assert ("success", ACTOR) in server.audit("app_password_revoke")


# -- block / unblock ------------------------------------------------------------------------------------------
def test_block_and_unblock_are_seen_by_the_other_process(server: Server) -> None:
    laptop = server.admin("app-password", "create", USERNAME, "--label", "laptop").strip()
    assert server.dav(laptop).status == 200

    server.admin("user", "block", USERNAME, "--reason", "laptop stolen", "--days", "1")

    assert wait_for(lambda: server.dav(laptop).status == 401), f"still accepted {WITHIN} s after the block"
    refused = server.dav(laptop)
    assert refused.status == 401 and "blocked" in refused.body, refused.body
    _client, login = fresh_sign_in(server)
    assert login.status == 403 and "Account blocked" in login.body, login.body
    assert server.user().failed_count == 0, "a blocked account's refusals are not failed guesses"

    server.admin("user", "unblock", USERNAME)

    assert wait_for(lambda: server.dav(laptop).status == 200), f"still refused {WITHIN} s after the unblock"
    _client, again = fresh_sign_in(server)
    assert again.status == 303 and again.location == "/_mfa/verify", again.body
    assert server.audit("user_block") == [("success", ACTOR)]
    assert server.audit("user_unblock") == [("success", ACTOR)]


# -- bypass ---------------------------------------------------------------------------------------------------
def test_bypass_is_used_once_by_the_other_process(server: Server) -> None:
    server.admin("user", "bypass", USERNAME, "--seconds", "300", "--reason", "lost phone")
    assert server.user().bypass_until is not None

    client, login = fresh_sign_in(server)

    assert login.status == 303 and login.location == "/", login.body
    page = client.get("/")
    assert page.status == 200 and f"user={USERNAME}" in page.body and "bypass" in page.body, page.body
    assert server.user().bypass_until is None, "consumed"
    assert server.audit("second_factor").count(("bypassed", USERNAME)) == 1
    _client, second = fresh_sign_in(server)
    assert second.status == 303 and second.location == "/_mfa/verify", "a bypass works once"


def test_expired_bypass_is_not_honoured_by_the_other_process(server: Server) -> None:
    server.admin("user", "bypass", USERNAME, "--seconds", "1", "--reason", "lost phone")
    until = server.user().bypass_until
    assert until is not None and until - time.time() <= 1.5

    assert wait_for(lambda: time.time() > until + 0.1, within=WITHIN), "the bypass did not expire"
    client, login = fresh_sign_in(server)

    assert login.status == 303 and login.location == "/_mfa/verify", login.body
    assert server.user().bypass_until == until, "an expired bypass is never consumed"
    assert ("bypassed", USERNAME) not in server.audit("second_factor")
    assert ("success", ACTOR) in server.audit("user_bypass")
    code = pyotp.TOTP(server.secret).at(time.time() + 30)  # enrollment consumed the current step
    done = verify(client, code)
    assert done.status == 303 and done.location == "/", done.body
    page = client.get("/")
    assert page.status == 200 and "methods=forms,totp" in page.body, page.body
