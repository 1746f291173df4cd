"""``/_mfa/health`` and ``/_mfa/ready`` (issue 13): cheap, unauthenticated, revealing nothing, bounded.

Through the WSGI middleware, the ASGI middleware and the forward-auth app, in process; with a real PostgreSQL of
this module's own that is up, stopped (``pg_ctl stop``), frozen (SIGSTOP on the postmaster and every backend) and
recovered. Bounds, stated once and generously (a hang is the failure these tests exist to catch):

- :data:`ANSWER_BOUND` (5 s): every readiness answer; the probe gives up after ``READY_TIMEOUT`` (2 s).
- :data:`QUICK` (1 s): every health answer, whatever the store does (it reads nothing).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.health import READY_TIMEOUT, Readiness
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.runtime import Runtime
from tests.support.mfa import FAST_HASHER, Clock, make_config
from tests.support.postgres import PostgresServer

ANSWER_BOUND = 5.0
QUICK = 1.0
RECOVERY = 20.0


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"app"})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


class Front:
    """One adapter around one store: ``get(path)`` -> (status, headers, body)."""

    def __init__(self, kind: str, url: str, *, upgrade: bool = True, **overrides: Any) -> None:
        config = make_config(url, trusted_proxies=["127.0.0.1"], **overrides)
        self.kind = kind
        self.mw: Any
        if kind == "wsgi":
            self.mw = MFAMiddleware(_wsgi_app, config, clock=Clock(), password_hasher=FAST_HASHER)
        elif kind == "asgi":
            self.mw = ASGIMFAMiddleware(_asgi_app, config, clock=Clock(), password_hasher=FAST_HASHER)
        else:
            self.mw = ForwardAuthApp(Runtime(config, clock=Clock(), password_hasher=FAST_HASHER))
        self.runtime: Runtime = self.mw.rt if kind == "forward_auth" else self.mw.runtime
        if upgrade:
            self.runtime.store.upgrade()

    def request(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if self.kind == "asgi":
            async def call() -> httpx.Response:
                transport = httpx.ASGITransport(app=self.mw, client=("127.0.0.1", 5000))
                async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
                    return await client.request(method, path)
            response = asyncio.run(call())
            return response.status_code, dict(response.headers), response.content
        reply = Client(self.mw).open(path, method=method, base_url="http://localhost",
                                     environ_base={"REMOTE_ADDR": "127.0.0.1"})
        return reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.get_data()

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path)

    def close(self) -> None:
        self.runtime.close()


ADAPTERS = [pytest.param("wsgi", id="wsgi"), pytest.param("asgi", id="asgi"),
            pytest.param("forward_auth", id="forward-auth")]


@pytest.fixture(params=ADAPTERS)
def front(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Front]:
    made = Front(request.param, f"sqlite:///{tmp_path / 'mfa.db'}")
    yield made
    made.close()


@pytest.mark.parametrize(("path", "status", "body"), [
    pytest.param("/_mfa/health", 200, b"ok\n", id="health"),
    pytest.param("/_mfa/ready", 200, b"ready\n", id="ready"),
])
def test_answers_without_sign_in_and_reveals_nothing(front: Front, path: str, status: int, body: bytes) -> None:
    """``default_policy = "deny"`` and no cookie: both still answer, with a fixed body, no cookie and no cache."""
    got, headers, content = front.get(path)
    assert (got, content) == (status, body)
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"].startswith("text/plain")
    assert "set-cookie" not in headers
    assert not any(word in (k + v).lower() for k, v in headers.items()
                   for word in ("python", "werkzeug", "mfa_middleware", "version", "sqlite"))


def test_head_has_no_body_and_other_methods_are_refused(front: Front) -> None:
    status, headers, content = front.request("HEAD", "/_mfa/health")
    assert (status, content) == (200, b"")
    status, headers, content = front.request("POST", "/_mfa/ready")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_the_sign_in_pages_still_answer_beside_them(front: Front) -> None:
    status, _, content = front.get("/_mfa/login")
    assert status == 200 and b"csrf_token" in content


@pytest.mark.parametrize("kind", ADAPTERS)
def test_ready_is_503_without_error_text_when_the_schema_is_missing(kind: str, tmp_path: Path) -> None:
    """A store that cannot answer the probe (no tables: `mfa-admin db upgrade` was never run)."""
    front = Front(kind, f"sqlite:///{tmp_path / 'empty.db'}", upgrade=False)
    try:
        status, headers, content = front.get("/_mfa/ready")
        assert (status, content) == (503, b"not ready\n")
        assert headers["cache-control"] == "no-store"
        assert front.get("/_mfa/health")[0] == 200
    finally:
        front.close()


def test_probes_cannot_hammer_the_store(tmp_path: Path) -> None:
    """Fifty probes within the cache period cost the store one query."""
    front = Front("wsgi", f"sqlite:///{tmp_path / 'mfa.db'}")
    try:
        front.mw.ops.readiness.cache_for = 3600.0  # the whole test is within one cache period
        statements: list[str] = []
        event.listen(front.runtime.store.engine, "before_cursor_execute",
                     lambda *args: statements.append(str(args[2])))
        for _ in range(50):
            assert front.get("/_mfa/ready")[0] == 200
        assert len(statements) == 1, statements
    finally:
        front.close()


def test_health_and_ready_are_not_on_the_hot_path(tmp_path: Path) -> None:
    """A request outside the prefix never runs the probe."""
    front = Front("wsgi", f"sqlite:///{tmp_path / 'mfa.db'}", rules=[{"path": "/*", "policy": "bypass"}])
    try:
        probes: list[float] = []
        front.mw.ops.readiness.probe = lambda: probes.append(time.monotonic())
        for _ in range(20):
            assert front.get("/page")[0] == 200
        assert probes == []
    finally:
        front.close()


# -- the probe itself ----------------------------------------------------------------------------------------------
def test_a_hung_probe_answers_not_ready_within_the_bound_and_runs_once() -> None:
    """A probe that never returns (a frozen store) answers False at the bound to every caller, never starts a
    second probe thread, and the answer turns True once it returns."""
    release = threading.Event()
    calls: list[int] = []

    def probe() -> None:
        calls.append(1)
        release.wait(30)

    readiness = Readiness(probe, timeout=0.3, cache_for=60.0)
    with ThreadPoolExecutor(max_workers=10) as pool:
        started = time.monotonic()
        answers = list(pool.map(lambda _: readiness.ready(), range(10)))
        took = time.monotonic() - started
    assert answers == [False] * 10
    assert took < ANSWER_BOUND
    assert readiness.ready() is False  # still running past its bound: False at once, no second probe
    assert calls == [1]
    release.set()
    deadline = time.monotonic() + ANSWER_BOUND
    while readiness.ready() is not True:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert calls == [1]


def test_a_failing_probe_logs_the_reason_but_the_answer_holds_none(caplog: pytest.LogCaptureFixture) -> None:
    def probe() -> None:
        raise RuntimeError("password authentication failed for user secret_db_user")

    assert Readiness(probe).ready() is False
    assert "secret_db_user" in caplog.text  # for the operator's log only


def test_ready_async_awaits_without_a_worker_thread() -> None:
    release = threading.Event()
    readiness = Readiness(lambda: None if release.wait(30) else None, timeout=0.3)

    async def main() -> tuple[bool, float]:
        started = time.monotonic()
        answer = await readiness.ready_async()
        return answer, time.monotonic() - started

    answer, took = asyncio.run(main())
    release.set()
    assert answer is False and took < ANSWER_BOUND


# -- a real PostgreSQL that stops, freezes and comes back -------------------------------------------------------------
@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this module only: freezing it must not stall any other test."""
    with PostgresServer() as server:
        yield server


@contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    server.freeze()
    try:
        yield
    finally:
        server.resume()


@contextmanager
def stopped(server: PostgresServer) -> Iterator[None]:
    server.halt()
    try:
        yield
    finally:
        server.restart()


def timed(call: Callable[[], tuple[int, dict[str, str], bytes]]) -> tuple[int, bytes, float]:
    started = time.monotonic()
    status, _, body = call()
    return status, body, time.monotonic() - started


@pytest.mark.postgres
@pytest.mark.parametrize("fault", [pytest.param(frozen, id="frozen"), pytest.param(stopped, id="stopped")])
@pytest.mark.parametrize("kind", ADAPTERS)
def test_ready_follows_postgresql_down_and_back(pg: PostgresServer, kind: str,
                                                fault: Callable[[PostgresServer], Any]) -> None:
    front = Front(kind, pg.create_database())
    try:
        front.mw.ops.readiness.cache_for = 0.0  # every probe asks the store again
        assert front.get("/_mfa/ready")[:3:2] == (200, b"ready\n")
        with fault(pg):
            # Several probes at once (load balancers do not take turns), and a health probe beside them.
            with ThreadPoolExecutor(max_workers=6) as pool:
                readies = [pool.submit(timed, lambda: front.get("/_mfa/ready")) for _ in range(5)]
                health = pool.submit(timed, lambda: front.get("/_mfa/health"))
                answers = [f.result(timeout=60) for f in readies]
                health_answer = health.result(timeout=60)
            assert [(s, b) for s, b, _ in answers] == [(503, b"not ready\n")] * 5
            assert max(t for _, _, t in answers) < ANSWER_BOUND, answers
            assert health_answer[:2] == (200, b"ok\n") and health_answer[2] < QUICK, health_answer
            again = timed(lambda: front.get("/_mfa/ready"))
            assert again[:2] == (503, b"not ready\n") and again[2] < ANSWER_BOUND
        deadline = time.monotonic() + RECOVERY
        while front.get("/_mfa/ready")[0] != 200:
            assert time.monotonic() < deadline, f"not ready again {RECOVERY} s after the store came back"
            time.sleep(0.2)
    finally:
        front.close()


def test_the_probe_bound_is_the_documented_one() -> None:
    assert READY_TIMEOUT == 2.0
