"""PostgreSQL behind PgBouncer in transaction mode, and the ``[store]`` pool settings (issue 13).

A real PgBouncer (``tests/support/pgbouncer.py``) with a server pool of two connections sits in front of a real
PostgreSQL; two middlewares ("two servers", each with its own connection pool of four) reach the same database
through it, so their transactions keep landing on server connections another client used a moment before.

What transaction pooling breaks, each shown on the old behaviour first:

- the ``options`` startup parameter (our server-side ``statement_timeout``/``lock_timeout``): PgBouncer refuses
  the connection ("unsupported startup parameter: options");
- psycopg's server-side prepared statements (after 5 executions of one query): the name ``_pg3_0`` prepared by one
  client exists on the server connection the next client gets ("prepared statement already exists"), or not at
  all on the one it gets next.

``[store] transaction_pooler = true`` sends neither. Advisory locks in the store are transaction-scoped
(``pg_advisory_xact_lock``) and the store uses no session ``SET``, so nothing else leaks between clients.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pyotp
import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.config import ConfigError
from mfa_middleware.store import Store, StoreUnavailable
from tests.support.mfa import Browser, Clock, csrf_of, make_config, make_middleware
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres import PostgresServer

USERNAME = "alice"
PASSWORD = "correct horse battery staple"
POOLED = {"transaction_pooler": True, "pool_size": 4, "max_overflow": 4}

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def bouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    with PgBouncer(postgres_server, pool_size=2) as running:
        yield running


@pytest.fixture
def pooled_url(bouncer: PgBouncer, postgres_url: str) -> str:
    return bouncer.url(postgres_url)


# -- what breaks without transaction_pooler --------------------------------------------------------------------------
def test_without_the_setting_pgbouncer_refuses_the_connection(pooled_url: str) -> None:
    store = Store(pooled_url)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.upgrade()
        assert "unsupported startup parameter: options" in str(caught.value.__cause__)
    finally:
        store.close()


@pytest.mark.parametrize(("threshold", "fails"), [
    pytest.param(5, True, id="psycopg-default-prepares-after-5"),
    pytest.param(None, False, id="never-prepare"),
])
def test_server_side_prepared_statements_collide(bouncer: PgBouncer, postgres_url: str, threshold: int | None,
                                                 fails: bool) -> None:
    """Why ``prepare_threshold=None``: two clients sharing server connections through the pooler."""
    dbname = postgres_url.rsplit("/", 1)[1]
    one, two = (psycopg.connect(host="127.0.0.1", port=bouncer.port, user="postgres", dbname=dbname,
                                prepare_threshold=threshold, autocommit=True) for _ in range(2))
    try:
        def run() -> None:
            for i in range(8):
                one.execute("SELECT %s::int", (i,))
                two.execute("SELECT %s::int", (i,))
        if fails:
            with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
                run()
        else:
            run()
    finally:
        one.close()
        two.close()


# -- the product through PgBouncer -----------------------------------------------------------------------------------
@dataclass
class Servers:
    a: MFAMiddleware
    b: MFAMiddleware
    clock: Clock
    secret: str


@pytest.fixture
def servers(pooled_url: str) -> Iterator[Servers]:
    clock = Clock()
    a = make_middleware(pooled_url, clock, store=POOLED, lockout={"max_failures": 5})  # migrates through PgBouncer
    b = make_middleware(pooled_url, clock, store=POOLED, lockout={"max_failures": 5})
    try:
        a.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
        secret = Browser(a).sign_in_and_enroll(USERNAME, PASSWORD, clock)
        yield Servers(a, b, clock, secret)
    finally:
        a.runtime.close()
        b.runtime.close()


def test_sign_in_on_one_server_is_valid_on_the_other(servers: Servers) -> None:
    browser = Browser(servers.a)
    assert browser.login(USERNAME, PASSWORD).status_code == 303
    servers.clock.advance(30)
    assert browser.verify(pyotp.TOTP(servers.secret).at(servers.clock.now)).status_code == 303
    cookie = browser.cookie("mfa_session")
    assert cookie
    on_b = Browser(servers.b).get_with_cookie_header("/home", f"mfa_session={cookie}")
    assert on_b.status_code == 200 and f"user={USERNAME}" in on_b.text


def test_a_totp_code_is_accepted_once_across_servers(servers: Servers) -> None:
    """Eight pending sign-ins, on both servers, post the same code at once: exactly one is accepted."""
    browsers = [Browser(servers.a if i % 2 else servers.b) for i in range(8)]
    for browser in browsers:
        assert browser.login(USERNAME, PASSWORD).status_code == 303
    servers.clock.advance(30)
    code = pyotp.TOTP(servers.secret).at(servers.clock.now)
    forms = [(browser, csrf_of(browser.get("/_mfa/verify").text)) for browser in browsers]
    barrier = threading.Barrier(len(forms))

    def post(item: tuple[Browser, str]) -> int:
        browser, csrf = item
        barrier.wait(timeout=30)
        return browser.post("/_mfa/verify", {"code": code, "csrf_token": csrf}).status_code

    with ThreadPoolExecutor(max_workers=len(forms)) as pool:
        statuses = list(pool.map(post, forms))
    assert statuses.count(303) == 1, statuses


def test_the_lockout_counts_exactly_across_servers(servers: Servers) -> None:
    """Twelve wrong passwords at once on both servers: exactly five are counted and the account locks; the
    right password is then refused too."""
    barrier = threading.Barrier(12)

    def wrong(i: int) -> int:
        browser = Browser(servers.a if i % 2 else servers.b)
        page = browser.get("/_mfa/login")
        barrier.wait(timeout=30)
        return browser.post("/_mfa/login", {"username": USERNAME, "password": f"wrong {i}", "next": "/",
                                            "csrf_token": csrf_of(page.text)}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert 303 not in list(pool.map(wrong, range(12)))
    user = servers.a.runtime.store.get_user(USERNAME)
    assert user is not None and user.failed_count == 5 and user.locked(servers.clock.now)
    assert Browser(servers.b).login(USERNAME, PASSWORD).status_code != 303


def test_a_revocation_on_one_server_is_refused_on_the_other(servers: Servers) -> None:
    browser = Browser(servers.a)
    browser.login(USERNAME, PASSWORD)
    servers.clock.advance(30)
    assert browser.verify(pyotp.TOTP(servers.secret).at(servers.clock.now)).status_code == 303
    cookie = f"mfa_session={browser.cookie('mfa_session')}"
    on_b = Browser(servers.b)
    assert on_b.get_with_cookie_header("/home", cookie).status_code == 200
    servers.a.runtime.accounts.revoke_sessions(USERNAME, actor="test")
    servers.clock.advance(servers.b.runtime.config.session.revocation_interval + 1)
    assert on_b.get_with_cookie_header("/home", cookie).status_code == 302


def test_ready_answers_through_pgbouncer(servers: Servers) -> None:
    from werkzeug.test import Client

    assert Client(servers.b).get("/_mfa/ready").status_code == 200


# -- pool settings ---------------------------------------------------------------------------------------------------
def test_pool_settings_reach_the_engine(postgres_url: str) -> None:
    config = make_config(postgres_url, store={"pool_size": 3, "max_overflow": 2, "pool_timeout": "1s",
                                              "pool_recycle": "30m"})
    from mfa_middleware.runtime import Runtime

    runtime = Runtime(config)
    try:
        pool: Any = runtime.store.engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout, pool._recycle) == (3, 2, 1.0, 1800)
    finally:
        runtime.close()


@pytest.mark.parametrize(("store", "message"), [
    pytest.param({"pool_size": 0}, "store.pool_size: must be between 1 and 1000, got 0", id="pool-size"),
    pytest.param({"max_overflow": -1}, "store.max_overflow: must be between 0 and 1000", id="overflow"),
    pytest.param({"pool_timeout": "10s"}, "store.pool_timeout: must be between 100ms and store.timeout",
                 id="pool-timeout-above-timeout"),
    pytest.param({"pool_recycle": "5s"}, "store.pool_recycle: must be at least 1m", id="recycle"),
    pytest.param({"transaction_pooler": "yes"}, "store.transaction_pooler: expected true or false", id="pooler"),
    pytest.param({"pool_size": "5"}, "store.pool_size: expected an integer", id="pool-size-type"),
])
def test_bad_pool_settings_name_the_key(store: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        make_config("sqlite:///x.db", store=store)
