"""Failing closed, and never hanging (issue 12; DESIGN.md section 5: "store down or gateway down gives a clear 503
page (or 503 for API clients), never a pass").

Through the three front doors (the WSGI middleware, the ASGI middleware and the forward-auth app), against a real
PostgreSQL of this module's own (killed with ``pg_ctl stop -m immediate``, frozen with SIGSTOP on the postmaster
and every backend) and a real SQLite file (an exclusive transaction held by another process; the file removed;
the file replaced by something that cannot be opened), each restored afterwards; and against real gateways that
are down or never answer (a local SMTP port that refuses or a listener that never speaks, the local SMS/voice
provider fake answering 500 or not at all, a push service that is gone).

Bounds, stated once (generous: a hang is the failure these tests exist to catch, not a speed):

- :data:`BOUND` (5 s): every answer. The test configuration gives the store 1 s a transaction
  (``store.timeout``; PostgreSQL may take 1 s more while a connection is being opened: libpq's connect timeout
  is whole seconds, at least 2), SQLite 0.5 s for another writer's lock (``store.busy_timeout``), a request at
  most 1 s more for a revocation refresh it needs (``REFRESH_WAIT``), and every gateway 1 s (``timeout``, its
  smallest value). An audit row waits at most ``AUDIT_TIMEOUT`` (1 s, never more than the store timeout).

The design rule for a valid session cookie during an outage (:mod:`mfa_middleware.services.revocation`): the
hot path reads no store, only the in-process revocation snapshot. Within the grace period (three revocation
intervals: 15 s here) a session passes on the last snapshot; past it every protected route answers 503 at once,
until a refresh succeeds. A SQLite file whose write lock is held elsewhere is still readable (WAL), so the
snapshot stays fresh and sessions keep passing, while sign-ins (which write) get 503.

A logout during an outage clears the cookies in the browser and ends the session in this process at once; the
revocation row is written when the store is back (queued in-process, retried by the revocation refresh), so the
old cookie replayed after recovery is refused here and on every other server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.core.tokens import Session, new_session_id
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.runtime import Runtime
from tests.support.mfa import FAST_HASHER, Clock, csrf_of, make_config
from tests.support.postgres import PostgresServer

BOUND = 5.0
RECOVERY = 20.0  # seconds allowed for recovery once the fault is gone (polled)
USERNAME = "alice"
PASSWORD = "correct horse battery staple"
STORE_LIMITS = {"timeout": "1s", "busy_timeout": "500ms"}
GRACE = 15.0  # three revocation intervals of 5 s (make_config)


# -- one front door around one store ---------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: list[str]  # every Set-Cookie header
    body: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def clears(self, name: str) -> bool:
        """Whether the answer expires cookie ``name`` in the browser."""
        return any(c.startswith(name + "=;") or c.startswith(name + '="";') for c in self.cookies
                   if "max-age=0" in c.lower() or "expires=thu, 01 jan 1970" in c.lower())


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    APP_HITS.append(scope.get("path", ""))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"the protected app"})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    APP_HITS.append(environ.get("PATH_INFO", ""))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the protected app"]


APP_HITS: list[str] = []  # every request that reached the protected app (WSGI or ASGI)
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
API = {"Accept": "application/json"}


class Front:
    """One adapter (``wsgi``, ``asgi`` or ``forward_auth``) around one store, with a fixed clock. ``protected``
    asks for ``/home`` (a two_factor route) as a client would: in process, or as the proxy asks forward auth."""

    def __init__(self, kind: str, url: str, clock: Clock | None = None, **overrides: Any) -> None:
        overrides.setdefault("store", STORE_LIMITS)
        config = make_config(url, trusted_proxies=["127.0.0.1"], **overrides)
        self.kind = kind
        self.clock = clock or Clock()
        self.mw: Any
        if kind == "wsgi":
            self.mw = MFAMiddleware(_wsgi_app, config, clock=self.clock, password_hasher=FAST_HASHER)
        elif kind == "asgi":
            self.mw = ASGIMFAMiddleware(_asgi_app, config, clock=self.clock, password_hasher=FAST_HASHER)
        else:
            self.mw = ForwardAuthApp(Runtime(config, clock=self.clock, password_hasher=FAST_HASHER))
        self.runtime: Runtime = self.mw.rt if kind == "forward_auth" else self.mw.runtime

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                data: dict[str, str] | None = None) -> Answer:
        headers = dict(headers or {})
        started = time.monotonic()
        if self.kind == "asgi":
            async def call() -> httpx.Response:
                transport = httpx.ASGITransport(app=self.mw, client=("127.0.0.1", 5000))
                async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
                    return await client.request(method, path, headers=headers, data=data)
            response = asyncio.run(call())
            return Answer(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                          response.headers.get_list("set-cookie"), response.content, time.monotonic() - started)
        reply = Client(self.mw, use_cookies=False).open(path, method=method, base_url="http://localhost",
                                                        headers=headers, data=data,
                                                        environ_base={"REMOTE_ADDR": "127.0.0.1"})
        return Answer(reply.status_code, {k.lower(): v for k, v in reply.headers.items()},
                      reply.headers.getlist("Set-Cookie"), reply.get_data(), time.monotonic() - started)

    def protected(self, cookie: str | None = None, accept: dict[str, str] = BROWSER) -> Answer:
        headers = {**accept, **({"Cookie": cookie} if cookie else {})}
        if self.kind == "forward_auth":
            headers.update({"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "http",
                            "X-Forwarded-Host": "localhost", "X-Forwarded-Uri": "/home"})
            return self.request("GET", "/_mfa/auth/forward", headers)
        return self.request("GET", "/home", headers)

    def passed(self, answer: Answer) -> bool:
        """Whether a protected request was let through (forward auth: 200 to the proxy)."""
        if self.kind == "forward_auth":
            return answer.status == 200
        return answer.status == 200 and answer.body == b"the protected app"

    def sign_in(self, password: str = PASSWORD, accept: dict[str, str] = BROWSER) -> Answer:
        """The password step, as a browser does it: the form (for its CSRF token and cookie), then the POST."""
        form = self.request("GET", "/_mfa/login", BROWSER)
        if form.status != 200:
            return form
        cookie = "; ".join(c.split(";", 1)[0] for c in form.cookies)
        started = time.monotonic()
        answer = self.request("POST", "/_mfa/login", {**accept, "Cookie": cookie},
                              {"username": USERNAME, "password": password, "csrf_token": csrf_of(form.text)})
        answer.seconds = time.monotonic() - started
        return answer

    def logout(self, cookie: str) -> Answer:
        """"Sign out" as a browser does it: the confirmation page (its CSRF token), then the POST."""
        page = self.request("GET", "/_mfa/logout", {**BROWSER, "Cookie": cookie})
        assert page.status == 200 and "csrf_token" in page.text, (page.status, page.text[:300])
        return self.request("POST", "/_mfa/logout", {**BROWSER, "Cookie": cookie}, {"csrf_token": csrf_of(page.text)})

    def mint(self) -> str:
        """A valid two-factor session cookie for alice, as the pages issue after a password and a code."""
        now = self.clock.now
        session = Session(sid=new_session_id(), username=USERNAME, groups=(), level=2, methods=("forms", "totp"),
                          primary_at=now, mfa_at=now, issued_at=now, last_seen=now, exempt=False)
        return f"{self.runtime.config.session.cookie_name}=" + self.runtime.codec.dump_session(session)

    def close(self) -> None:
        self.runtime.close()


ADAPTERS = [pytest.param("wsgi", id="wsgi"), pytest.param("asgi", id="asgi"),
            pytest.param("forward_auth", id="forward-auth")]


def within_bound(answer: Answer) -> Answer:
    assert answer.seconds <= BOUND, f"answered after {answer.seconds:.1f} s (bound {BOUND} s)"
    return answer


def unavailable(answer: Answer, *, as_json: bool = False) -> None:
    """A clear 503: a full HTML page for a browser, a JSON body for an API client; never cached."""
    within_bound(answer)
    assert answer.status == 503, (answer.status, answer.text[:300])
    assert answer.headers.get("cache-control", "").startswith("no-store")
    if as_json:
        assert answer.headers["content-type"].startswith("application/json")
        assert json.loads(answer.body)["error"]
    else:
        assert answer.headers["content-type"].startswith("text/html")
        assert "<html" in answer.text.lower() and "unavailable" in answer.text.lower()


def eventually(condition: Callable[[], bool], within: float = RECOVERY, step: Callable[[], None] | None = None) -> None:
    """Poll ``condition`` until it holds (at most ``within`` seconds, short waits between tries)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"did not happen within {within} s"
        if step is not None:
            step()
        time.sleep(0.1)


# -- store faults ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this module only: freezing it must not stall any other test."""
    with PostgresServer() as server:
        yield server


HOLD_EXCLUSIVE = """\
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
"""


@dataclass
class Fault:
    """A store fault: ``engine`` (``postgres`` or ``sqlite``), ``start`` and ``end`` (the store restored), and
    whether the store can still be read while it lasts (SQLite in WAL mode, with the write lock held elsewhere)."""

    name: str
    engine: str
    readable: bool = False
    state: dict[str, Any] = field(default_factory=dict)

    def start(self, pg: PostgresServer | None, path: Path | None) -> None:
        if self.name == "pg-killed":
            assert pg is not None
            # The test server runs with synchronous_commit=off (speed): a crash may lose the last commits, which a
            # production server keeps. Write them out first, so the server comes back with the data it had.
            import psycopg
            with psycopg.connect(host=pg.host, port=pg.port, user="postgres", dbname="postgres",
                                 autocommit=True, connect_timeout=10) as conn:
                conn.execute("CHECKPOINT")
            pg.halt(mode="immediate")
        elif self.name == "pg-frozen":
            assert pg is not None
            pg.freeze()
        elif self.name == "sqlite-locked":
            assert path is not None
            self.state["holder"] = hold_exclusive(path)
        else:
            assert path is not None
            with sqlite3.connect(path) as db:  # the file alone holds everything from here
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
            saved = path.with_name("saved.db")
            os.replace(path, saved)
            for extra in ("-wal", "-shm"):
                Path(f"{path}{extra}").unlink(missing_ok=True)
            if self.name == "sqlite-unreadable":
                path.mkdir()  # where the database was, something no one can open as a database

    def end(self, pg: PostgresServer | None, path: Path | None) -> None:
        if self.name == "pg-killed":
            assert pg is not None
            pg.restart()
        elif self.name == "pg-frozen":
            assert pg is not None
            pg.resume()
        elif self.name == "sqlite-locked":
            release(self.state.pop("holder"))
        else:
            assert path is not None
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)  # an empty database SQLite may have created meanwhile
            for extra in ("-wal", "-shm"):
                Path(f"{path}{extra}").unlink(missing_ok=True)
            os.replace(path.with_name("saved.db"), path)


STORE_FAULTS = [
    pytest.param(Fault("pg-killed", "postgres"), id="pg-killed", marks=pytest.mark.postgres),
    pytest.param(Fault("pg-frozen", "postgres"), id="pg-frozen", marks=pytest.mark.postgres),
    pytest.param(Fault("sqlite-locked", "sqlite", readable=True), id="sqlite-locked"),
    pytest.param(Fault("sqlite-removed", "sqlite"), id="sqlite-removed"),
    pytest.param(Fault("sqlite-unreadable", "sqlite"), id="sqlite-unreadable"),
]


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, PostgresServer | None,
                                                                               Path | None]]:
    fault: Fault = request.node.callspec.params["fault"]
    if fault.engine == "postgres":
        server: PostgresServer = request.getfixturevalue("pg")
        yield server.create_database(), server, None
    else:
        path = tmp_path / "mfa.db"
        yield f"sqlite:///{path}", None, path


@contextmanager
def outage(fault: Fault, pg: PostgresServer | None, path: Path | None) -> Iterator[None]:
    fault.start(pg, path)
    try:
        yield
    finally:
        fault.end(pg, path)


@pytest.mark.parametrize("fault", STORE_FAULTS)
@pytest.mark.parametrize("kind", ADAPTERS)
def test_store_outage_fails_closed_and_recovers(kind: str, fault: Fault,
                                                database: tuple[str, PostgresServer | None, Path | None]) -> None:
    """Every answer within BOUND; protected routes never reach the app without a valid session; a valid session
    passes within the grace period and gets 503 past it (unless the store stays readable); sign-in is a 503 page
    (HTML for a browser, JSON for an API client); a logout clears the cookies and its session stays ended after
    recovery, here and on a second server; everything works again without a restart."""
    url, pg, path = database
    front = Front(kind, url)
    other = None
    try:
        front.runtime.store.upgrade()
        front.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        cookie, leaving = front.mint(), front.mint()
        # The first request waits for the first read of the revocations at most the store's timeout (1 s here;
        # a 503 past it): on a loaded machine, ask until it has landed. Then let its pruning finish too, so that
        # no write of the set-up is still under way when the fault begins.
        eventually(lambda: front.passed(front.protected(cookie)), within=BOUND)  # the snapshot is fresh from here
        front.runtime.revocations.wait_idle()
        APP_HITS.clear()
        with outage(fault, pg, path):
            front.clock.advance(6)  # the snapshot is due for a refresh, and within the grace period
            assert front.passed(within_bound(front.protected(cookie)))  # the design rule: grace
            anonymous = within_bound(front.protected())
            assert anonymous.status == 302 and not front.passed(anonymous)
            unavailable(front.sign_in())
            unavailable(front.sign_in(accept=API), as_json=True)
            unavailable(front.sign_in("not the password"))

            # Sign out while the store is down: the browser's cookie is cleared, and this process refuses the
            # session from now on (it does not wait for the store to hear of it).
            out = within_bound(front.logout(leaving))
            assert out.status == 200, (out.status, out.text[:300])
            assert out.clears(front.runtime.config.session.cookie_name), out.cookies
            replay = within_bound(front.protected(leaving))
            assert replay.status == 302 and not front.passed(replay)

            front.clock.advance(GRACE - 6 + 1)  # past the grace period
            if fault.readable:
                # The request that starts the refresh waits for it at most 1 s (REFRESH_WAIT; 503 past it, fail
                # closed), which a loaded machine can exceed: what must hold is that the read succeeds.
                eventually(lambda: front.passed(within_bound(front.protected(cookie))), within=BOUND)
            else:
                eventually(lambda: front.protected(cookie).status == 503, within=BOUND)
                unavailable(front.protected(cookie))
                unavailable(front.protected(cookie, accept=API), as_json=True)
                unavailable(front.protected(leaving))
                unavailable(front.protected())
                assert within_bound(front.protected(cookie)).headers.get("retry-after")
            unavailable(front.sign_in())
            # The sign-in form itself needs no store.
            assert within_bound(front.request("GET", "/_mfa/login", BROWSER)).status == 200
        assert APP_HITS == ([] if kind == "forward_auth" else
                            ["/home"] * (2 if fault.readable else 1)), APP_HITS

        # Recovery, same process: the session passes, a sign-in works, the logged-out cookie stays refused.
        eventually(lambda: front.passed(front.protected(cookie)) and front.sign_in().status == 303,
                   step=lambda: front.clock.advance(1))
        assert front.protected(leaving).status == 302
        # The queued revocation reached the store: a second server that never saw the logout refuses it too.
        other = Front(kind, url, clock=front.clock)
        left = front.runtime.codec.load_session(leaving.split("=", 1)[1])
        assert left is not None

        def later() -> None:
            front.clock.advance(6)
            front.protected(cookie)  # a refresh is due: it writes the queued revocation first

        eventually(lambda: front.runtime.store.sign_in_revoked(USERNAME, since=0.0, session_id=left.sid), step=later)
        assert front.runtime.revocations.queued == 0
        assert other.protected(leaving).status == 302
        assert other.passed(other.protected(cookie))
    finally:
        if other is not None:
            other.close()
        front.close()


# -- audit writes never stall a sign-in ----------------------------------------------------------------------------
AUDIT_FAULTS = [
    pytest.param("pg-audit-locked", id="pg-audit-table-locked", marks=pytest.mark.postgres),
    pytest.param("pg-frozen-at-audit", id="pg-frozen-at-the-audit-insert", marks=pytest.mark.postgres),
    pytest.param("sqlite-locked-at-audit", id="sqlite-locked-at-the-audit-insert"),
]


@pytest.mark.parametrize("what", AUDIT_FAULTS)
def test_audit_writes_never_stall_a_sign_in(what: str, request: pytest.FixtureRequest, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """The audit row of a sign-in step meets a store that cannot take it: another session holds a lock on the
    audit table (PostgreSQL), or the store freezes (PostgreSQL) or is write-locked by another process (SQLite) just
    as the row is inserted. The sign-in answers within BOUND, and where the rest of the store works it completes;
    the row is dropped with an ``audit_dropped`` line and counted, and the event's own log line is still there."""
    from sqlalchemy import event

    pg: PostgresServer | None = request.getfixturevalue("pg") if what.startswith("pg") else None
    url = pg.create_database() if pg is not None else f"sqlite:///{tmp_path / 'mfa.db'}"
    front = Front("wsgi", url)
    holder: list[Any] = []
    try:
        front.runtime.store.upgrade()
        front.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        if what == "pg-audit-locked":
            import psycopg
            assert pg is not None
            locker = psycopg.connect(host=pg.host, port=pg.port, user="postgres", dbname=url.rsplit("/", 1)[1])
            locker.execute("LOCK TABLE mfa_audit IN EXCLUSIVE MODE")  # reads pass, inserts wait (a long export, say)
            holder.append(locker)
        else:
            def on_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if statement.lstrip().upper().startswith("INSERT INTO MFA_AUDIT") and not holder:
                    if pg is not None:
                        pg.freeze()
                        holder.append(pg)
                    else:
                        holder.append(hold_exclusive(tmp_path / "mfa.db"))
            event.listen(front.runtime.store.engine, "before_cursor_execute", on_insert)
        caplog.set_level(logging.INFO, logger="mfa_middleware")
        answer = within_bound(front.sign_in())
        if what == "pg-audit-locked":
            assert answer.status == 303, (answer.status, answer.text[:300])  # on to enrollment: signed in
        else:
            assert answer.status in (303, 503), (answer.status, answer.text[:300])
        assert front.runtime.audit.dropped >= 1
        assert "audit_dropped" in caplog.text
        events = [r.getMessage() for r in caplog.records if r.name == "mfa_middleware.audit"]
        assert any(m.startswith("primary success user=alice") for m in events), events  # the event's own line
    finally:
        for item in holder:
            if isinstance(item, PostgresServer):
                item.resume()
            elif isinstance(item, subprocess.Popen):
                release(item)
            else:
                item.close()
        front.close()


def hold_exclusive(path: Path) -> subprocess.Popen[str]:
    """Another process takes the SQLite file's write lock (``BEGIN EXCLUSIVE``) and holds it until released."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("\n")
    holder.stdin.close()
    holder.wait(timeout=30)
    holder.stdout.close()


# -- gateways down or hanging ----------------------------------------------------------------------------------------
@contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel completes the handshake) and never says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port nothing listens on: every connection is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield port


GATEWAY_FAULTS = [
    pytest.param("email", "refused", id="smtp-refuses"),
    pytest.param("email", "silent", id="smtp-never-answers"),
    pytest.param("sms", "500", id="sms-provider-500"),
    pytest.param("sms", "hang", id="sms-provider-hangs"),
]


@pytest.mark.parametrize(("method", "trouble"), GATEWAY_FAULTS)
@pytest.mark.parametrize("kind", ADAPTERS)
def test_gateway_down_offers_the_other_methods(kind: str, method: str, trouble: str, tmp_path: Path) -> None:
    """alice's default method sends a code through a gateway that refuses, fails or never answers: the second-factor
    page answers within BOUND with 503 and a clear message and a link to her other method (the authenticator app),
    whose page then answers; no session is issued, and the protected route never passes meanwhile."""
    from tests.support.twilio_provider import twilio_provider

    with ExitStack() as stack:
        port = stack.enter_context(silent_listener() if trouble == "silent" else refusing_port())
        provider = stack.enter_context(twilio_provider()) if method == "sms" else None
        if provider is not None and trouble == "500":
            provider.mode = "500"
        elif provider is not None and trouble == "hang":
            provider.mode = "hang"
        overrides: dict[str, Any] = {"methods": {"enabled": ["totp", method]}}
        if method == "email":
            overrides["email"] = {"gateway": "smtp", "host": "127.0.0.1", "port": port, "security": "none",
                                  "from_address": "mfa@example.test", "timeout": "1s"}
        else:
            assert provider is not None
            base = provider.base_url if trouble != "silent" else f"http://127.0.0.1:{port}"
            overrides["phone"] = {"gateway": "twilio", "account_sid": provider.account_sid,
                                  "auth_token": provider.auth_token, "from_number": "+15005550006", "base_url": base,
                                  "allowed_countries": ["GB", "US"], "timeout": "1s"}
        front = Front(kind, f"sqlite:///{tmp_path / 'mfa.db'}", **overrides)
        stack.callback(front.close)
        rt = front.runtime
        rt.store.upgrade()
        rt.accounts.add(USERNAME, actor="test", password=PASSWORD)
        user = rt.store.get_user(USERNAME)
        assert user is not None
        secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        rt.store.add_method(user.id, "totp", "Authenticator app", rt.box.encrypt(secret), now=front.clock.now,
                            confirmed=True)
        detail = "alice@example.test" if method == "email" else "+14155550123"
        gated = rt.store.add_method(user.id, method, method, None, now=front.clock.now, confirmed=True,
                                    detail=rt.box.encrypt(detail))
        assert rt.store.set_default_method(user.id, gated)
        front.clock.advance(60)

        signed = front.sign_in()
        assert signed.status == 303 and signed.headers["location"].endswith("/_mfa/verify"), signed.text[:300]
        jar = "; ".join(c.split(";", 1)[0] for c in signed.cookies)
        down = within_bound(front.request("GET", "/_mfa/verify", {**BROWSER, "Cookie": jar}))
        assert down.status == 503 and "send your code just now" in down.text, (down.status, down.text[:400])
        assert "/_mfa/verify?another=1" in down.text
        assert not any(c.startswith(rt.config.session.cookie_name + "=") and "max-age=0" not in c.lower()
                       for c in down.cookies)
        other = within_bound(front.request("GET", "/_mfa/verify?another=1", {**BROWSER, "Cookie": jar}))
        assert other.status == 200 and "Authenticator app" in other.text, other.text[:400]
        blocked = front.protected(jar)
        assert not front.passed(blocked) and blocked.status == 302



PUSH_FAULTS = [
    pytest.param("500", id="push-service-500"),
    pytest.param("hang", id="push-service-hangs"),
]


@pytest.mark.parametrize("trouble", PUSH_FAULTS)
def test_push_channel_down_never_delays_the_sign_in(trouble: str, tmp_path: Path) -> None:
    """alice's authenticator has a Web Push channel whose push service answers 500 or holds the wake-up unanswered
    (tests/support/pushservice.py, over a real socket). The push page answers within BOUND, its status poll says
    "pending" within BOUND, the device's own fetch of pending requests (the authenticator's long-poll path) still
    finds the sign-in and her approval reaches the page; nothing passes before that."""
    from tests.test_push_channels import _site, post_channel, wait_until
    from tests.test_push_protocol import Person, cli, pending_ids
    from tests.test_push_protocol import enrolled as push_enrolled

    def timed(call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        result = call()
        assert time.monotonic() - started <= BOUND, f"answered after {time.monotonic() - started:.1f} s"
        return result

    with _site(f"sqlite:///{tmp_path / 'mfa.db'}", users=("alice",), send_timeout="1s") as site:
        store = push_enrolled(site, "alice", tmp_path / "alice.json")
        assert post_channel(site, store, site.push.subscribe().channel()).status_code == 200
        site.push.mode = trouble  # type: ignore[assignment]
        person = Person(site)
        assert person.login("alice").headers["Location"].endswith("/_mfa/verify")
        number, _ = timed(person.verify_page)
        assert site.push.wait_for_arrivals(1)  # the push service got the wake-up (and refuses or holds it)
        assert timed(person.poll) == "pending"
        assert person.http.get("/").status_code == 302  # nothing passes meanwhile
        [request_id] = timed(lambda: pending_ids(store))
        assert "approved" in cli(store, "approve", request_id, "--number", number).lower()
        assert wait_until(lambda: person.poll() == "approved")
        assert wait_until(lambda: len(site.audit("wake_failed")) == 1)  # the failed wake-up is audited
        site.push.release()
