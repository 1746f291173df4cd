"""No secret ever reaches a log line or an audit row.

A full sign-in through the pages (a wrong password, the password, authenticator-app enrollment, a later sign-in
with a code, an app password made on the page and used on the Basic path, a wrong app password, sign-out), then
every method of the factor contract (enrollment and a right answer), all with every logger at DEBUG (SQLAlchemy's
included). Every log record (its message, its arguments and its structured fields, as JSON lines and as text) and
every audit row is then searched for every secret used: passwords, keys, codes, app passwords, cookies, CSRF tokens,
backup codes. Also: log lines carry the request id that the audit rows of the same request carry, and one event is
one line whatever a user agent holds."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.logs import JsonFormatter, RequestIdFilter, TextFormatter, configure
from mfa_middleware.runtime import Runtime
from tests.factors.test_contract import DRIVERS, Driver
from tests.support.mfa import ENCRYPTION_KEY, FAST_HASHER, SECRET_KEY, START, Browser, Clock, csrf_of, make_config, \
    make_middleware

PASSWORD = "Tr0ub4dor&3-log-secret"
WRONG_PASSWORD = "wrong-password-that-is-a-secret-too"
RULES = [{"path": "/dav/*", "policy": "two_factor", "basic": True}, {"path": "/*", "policy": "two_factor"}]


class Capture(logging.Handler):
    """Every record at DEBUG and above, formatted both ways, plus its raw arguments and fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.json = JsonFormatter()
        self.text = TextFormatter()
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.json.format(record))
        self.lines.append(self.text.format(record))
        self.lines.append(repr(record.args))
        self.lines.append(repr(getattr(record, "mfa", None)))


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root, sqla = logging.getLogger(), logging.getLogger("sqlalchemy")  # SQLAlchemy sets itself to WARNING
    old_levels = root.level, sqla.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    sqla.setLevel(logging.DEBUG)  # what an operator debugging a store problem would do
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_levels[0])
        sqla.setLevel(old_levels[1])


def leaks(haystack: list[str], secrets: set[str]) -> list[tuple[str, str]]:
    found = []
    for secret in secrets:
        if len(secret) < 6:
            continue  # too short to search without false alarms (a 6-digit code is searched below)
        for line in haystack:
            if secret in line:
                found.append((secret, line[:300]))
                break
    return found


def audit_rows(rt: Runtime) -> list[str]:
    return [json.dumps(asdict(row), default=str) for row in rt.store.list_audit(limit=10_000)]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_a_full_sign_in_and_the_basic_path_leave_no_secret_behind(capture: Capture, tmp_path: Path) -> None:
    clock = Clock(START)
    mw: MFAMiddleware = make_middleware(f"sqlite:///{tmp_path / 'mfa.db'}", clock, rules=RULES)
    secrets: set[str] = {PASSWORD, WRONG_PASSWORD, SECRET_KEY, ENCRYPTION_KEY}
    try:
        rt = mw.runtime
        rt.accounts.add("alice", actor="t", password=PASSWORD)
        browser = Browser(mw)
        page = browser.get("/_mfa/login?next=/")
        secrets.add(csrf_of(page.text))
        refused = browser.post("/_mfa/login", {"username": "alice", "password": WRONG_PASSWORD, "next": "/",
                                               "csrf_token": csrf_of(page.text)})
        assert refused.status_code in (200, 400, 401)
        totp_secret = browser.sign_in_and_enroll("alice", PASSWORD, clock)
        secrets |= {totp_secret, " ".join(totp_secret[i:i + 4] for i in range(0, len(totp_secret), 4))}
        secrets |= {c.value for c in browser.client._cookies.values()}  # type: ignore[attr-defined]
        assert browser.get("/").status_code == 200

        made = browser.get("/_mfa/settings")
        created = browser.post("/_mfa/settings/app-passwords/create", {"label": "laptop",
                                                                       "csrf_token": csrf_of(made.text)})
        if created.status_code in (302, 303):
            created = browser.get(created.headers["Location"])
        app_password = next(v for v in rt.app_passwords.list(rt.accounts.get("alice")))  # the record, not secret
        assert app_password.label == "laptop"
        shown = created.text.split('id="app-password"', 1)[1].split(">", 1)[1].split("<", 1)[0].strip()
        assert len(shown) >= 16
        secrets.add(shown)
        assert browser.client.get("/dav/file", headers=basic("alice", shown)).status_code == 200
        wrong = shown[:-1] + ("x" if shown[-1] != "x" else "y")
        assert browser.client.get("/dav/file", headers=basic("alice", wrong)).status_code == 401
        assert browser.client.get("/dav/file", headers=basic("alice", PASSWORD)).status_code == 401

        clock.advance(60)
        later = Browser(mw)
        login = later.login("alice", PASSWORD)
        assert login.status_code == 303
        code = pyotp.TOTP(totp_secret).at(clock.now)
        assert later.verify(code).status_code == 303
        secrets |= {c.value for c in later.client._cookies.values()}  # type: ignore[attr-defined]
        out = later.get("/_mfa/logout")
        later.post("/_mfa/logout", {"csrf_token": csrf_of(out.text)})

        assert capture.lines, "nothing was logged: the capture is not attached"
        sql_lines = [line for line in capture.lines if "sqlalchemy.engine" in line]
        assert sql_lines, "SQLAlchemy did not log at DEBUG"
        assert any("[SQL parameters hidden due to hide_parameters=True]" in line for line in sql_lines)
        assert leaks(capture.lines, secrets) == []
        assert leaks(audit_rows(rt), secrets) == []
        for line in capture.lines + audit_rows(rt):
            assert f'"{code}"' not in line and f"={code}" not in line and f" {code} " not in line
    finally:
        mw.runtime.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_method_leaves_no_secret_behind(capture: Capture, tmp_path: Path, driver: Driver) -> None:
    clock = Clock(START)
    rt = Runtime(make_config(f"sqlite:///{tmp_path / 'mfa.db'}",
                             methods={"enabled": ["totp", "oath", "sms", "email", "backup_codes", "voice"]},
                             email={"gateway": "console"}, phone={"gateway": "console", "allowed_countries": ["GB"]}),
                 clock=clock, password_hasher=FAST_HASHER)
    try:
        rt.store.upgrade()
        user = rt.store.get_user(rt.accounts.add("alice", actor="t", password=PASSWORD).username)
        assert user is not None
        method, state = driver.enroll(rt, user, clock)
        answer = driver.answer(rt, method, state, clock)
        factor = rt.factors.get(driver.kind)
        assert factor is not None
        secrets = {PASSWORD, SECRET_KEY, ENCRYPTION_KEY}
        if isinstance(state, str) and len(state) >= 6:
            secrets.add(state)
        if isinstance(state, list):
            secrets |= {str(s) for s in state}
        lines = capture.lines + audit_rows(rt)
        assert leaks(lines, secrets) == []
        if answer and len(answer) >= 6:
            for line in lines:
                assert f'"{answer}"' not in line and f"={answer}" not in line and f"'{answer}'" not in line
    finally:
        rt.close()


def test_json_lines_are_one_event_per_line_with_the_request_id(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = configure("json", "INFO", stream)
    clock = Clock(START)
    mw = make_middleware(f"sqlite:///{tmp_path / 'mfa.db'}", clock, rules=RULES)
    try:
        mw.runtime.accounts.add("alice", actor="t", password=PASSWORD)
        browser = Browser(mw)
        page = browser.get("/_mfa/login?next=/")
        evil_agent = "Mozilla/5.0 \x1b[31m\u2028{\"level\": \"INFO\", \"message\": \"forged\"}\x85x"
        browser.post("/_mfa/login", {"username": "alice\n{\"message\": \"forged\"}", "password": "nope", "next": "/",
                                     "csrf_token": csrf_of(page.text)}, headers={"User-Agent": evil_agent})
        browser.post("/_mfa/login", {"username": "alice", "password": "nope", "next": "/",
                                     "csrf_token": csrf_of(page.text)},
                     headers={"User-Agent": evil_agent, "X-Request-Id": "spoofed-id-1"})
    finally:
        logging.getLogger().removeHandler(handler)
        mw.runtime.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert lines and all(isinstance(line, dict) for line in lines)
    assert not any(line.get("message") == "forged" for line in lines)
    audit_lines = [line for line in lines if line.get("logger") == "mfa_middleware.audit"]
    assert audit_lines and all(line["request_id"] for line in audit_lines)
    # an X-Request-Id from a peer that is not a trusted proxy is ignored
    assert not any(line["request_id"] == "spoofed-id-1" for line in lines)
    rows = {row.request_id for row in mw.runtime.store.list_audit(limit=100)} - {None}
    assert rows and rows <= {line["request_id"] for line in audit_lines}
    failed = [line for line in audit_lines if line.get("user") == "alice" and line.get("result") == "failure"]
    assert failed and failed[0]["event"] == "primary" and failed[0]["user_agent"] == evil_agent


def test_a_trusted_proxys_request_id_is_kept(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = configure("json", "INFO", stream)
    mw = make_middleware(f"sqlite:///{tmp_path / 'mfa.db'}", Clock(START), rules=RULES,
                         trusted_proxies=["127.0.0.1"])
    try:
        mw.runtime.accounts.add("alice", actor="t", password=PASSWORD)
        browser = Browser(mw)
        page = browser.get("/_mfa/login?next=/")
        for rid in ("nginx-4f1c2a9e", "bad id with spaces", "x" * 65):
            browser.post("/_mfa/login", {"username": "alice", "password": "nope", "next": "/",
                                         "csrf_token": csrf_of(page.text)}, headers={"X-Request-Id": rid})
    finally:
        logging.getLogger().removeHandler(handler)
        mw.runtime.close()
    ids = [row.request_id for row in reversed(mw.runtime.store.list_audit(limit=100)) if row.event == "primary"]
    assert ids[0] == "nginx-4f1c2a9e"
    assert ids[1] not in ("bad id with spaces", None) and ids[2] not in ("x" * 65, None)
    assert len(ids[1]) == 16 and ids[1] != ids[2]
