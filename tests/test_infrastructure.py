"""The test infrastructure itself: real PostgreSQL, real Chromium, WSGI serving, skip-or-fail."""

from __future__ import annotations

import socket
from pathlib import Path
import urllib.request
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pytest

from tests.support.components import require_component
from tests.support.postgres import PostgresServer
from tests.support.servers import free_port, serve_wsgi

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from playwright.sync_api import Browser, Page

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>infra</title></head>
<body>
<h1>MFA test page</h1>
<button id="go" type="button"
        onclick="document.getElementById('out').textContent = 'clicked'">Go</button>
<p id="out">waiting</p>
<form method="post" action="/echo"><input name="code" value="123456"><button id="send">Send</button></form>
</body></html>
"""


def tiny_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        payload = b"<!doctype html><h1 id='echo'>" + body + b"</h1>"
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [payload]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [PAGE]


# -- require_component ---------------------------------------------------------------------


def test_require_component_skips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MFA_TEST_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^missing component slapd: not installed$"):
        require_component("slapd", "not installed")


def test_require_component_skips_unless_exactly_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_TEST_REQUIRE_ALL", "0")
    with pytest.raises(pytest.skip.Exception):
        require_component("slapd", "not installed")


def test_require_component_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_TEST_REQUIRE_ALL", "1")
    with pytest.raises(
        pytest.fail.Exception,
        match=r"^missing component slapd: not installed \(MFA_TEST_REQUIRE_ALL=1\)$",
    ):
        require_component("slapd", "not installed")


def test_missing_postgres_binaries_go_through_require_component(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.support.postgres.find_pg_binaries", lambda: None)
    monkeypatch.setenv("MFA_TEST_REQUIRE_ALL", "1")
    with pytest.raises(pytest.fail.Exception, match="missing component postgresql"):
        PostgresServer().start()
    monkeypatch.delenv("MFA_TEST_REQUIRE_ALL")
    with pytest.raises(pytest.skip.Exception, match="missing component postgresql"):
        PostgresServer().start()


def test_missing_chromium_goes_through_require_component(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import browser

    monkeypatch.setattr(browser, "CHROMIUM_PATH", "/nonexistent/chromium")
    monkeypatch.delenv("MFA_TEST_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing component chromium"):
        with browser.chromium_browser():
            pass  # pragma: no cover


# -- servers ---------------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_serve_wsgi_serves_and_shuts_down() -> None:
    with serve_wsgi(tiny_app) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(base_url + "/", timeout=10) as response:
            assert response.status == 200
            assert b"MFA test page" in response.read()
    port = int(base_url.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_url_connects(postgres_url: str) -> None:
    from sqlalchemy import create_engine, text

    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
            assert conn.execute(text("select current_database()")).scalar_one() == postgres_url.rsplit("/", 1)[1]
            tables = conn.execute(
                text("select count(*) from information_schema.tables where table_schema = 'public'")
            ).scalar_one()
            assert tables == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_databases_are_distinct(postgres_server: PostgresServer) -> None:
    from sqlalchemy import create_engine, text

    first, second = postgres_server.create_database(), postgres_server.create_database()
    assert first != second
    engine_one, engine_two = create_engine(first), create_engine(second)
    try:
        with engine_one.begin() as conn:
            conn.execute(text("create table marker (id integer primary key)"))
        with engine_two.connect() as conn:
            assert conn.execute(text("select to_regclass('public.marker')")).scalar_one() is None
        with engine_one.connect() as conn:
            assert conn.execute(text("select to_regclass('public.marker')")).scalar_one() == "marker"
    finally:
        engine_one.dispose()
        engine_two.dispose()


@pytest.mark.postgres
def test_postgres_is_version_15_on_loopback(postgres_server: PostgresServer) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_server.url())
    try:
        with engine.connect() as conn:
            version = conn.execute(text("show server_version")).scalar_one()
            listen = conn.execute(text("show listen_addresses")).scalar_one()
    finally:
        engine.dispose()
    assert version.split(".")[0] == "15", version
    assert listen == "127.0.0.1"


# -- Chromium --------------------------------------------------------------------------------


@pytest.mark.browser
def test_browser_reads_heading_and_clicks(page: Page) -> None:
    with serve_wsgi(tiny_app, host="localhost") as base_url:
        assert base_url.startswith("http://localhost:")
        page.goto(base_url + "/")
        assert page.locator("h1").inner_text() == "MFA test page"
        page.click("#go")
        assert page.locator("#out").inner_text() == "clicked"
        # localhost is a secure context: WebAuthn works there (an IP cannot be an RP id).
        assert page.evaluate("window.isSecureContext") is True
        page.click("#send")
        page.wait_for_url(base_url + "/echo")
        assert page.locator("#echo").inner_text() == "code=123456"


@pytest.mark.browser
def test_pages_do_not_share_cookies(browser: Browser, page: Page) -> None:
    with serve_wsgi(tiny_app, host="localhost") as base_url:
        page.goto(base_url + "/")
        page.context.add_cookies([{"name": "s", "value": "1", "url": base_url}])
        other = browser.new_context()
        try:
            assert other.cookies() == []
        finally:
            other.close()


def test_every_file_the_package_reads_is_in_its_package_data() -> None:
    """An installed copy has only the .py files and what package-data names: a template, script or icon missed
    there works from a checkout and breaks once installed."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "mfa_middleware"]
    package = root / "mfa_middleware"
    missed = []
    for path in package.rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(package).as_posix()
        if not any(fnmatch.fnmatchcase(relative, p) and relative.count("/") == p.count("/") for p in patterns):
            missed.append(relative)
    assert missed == []
