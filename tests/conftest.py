"""Shared fixtures: a real PostgreSQL server and Debian's Chromium (DESIGN.md section 6).

Missing components skip the tests that need them, or fail them when
``MFA_TEST_REQUIRE_ALL=1`` (set by ``.ci/run``); see ``tests/support/components.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.browser import chromium_browser
from tests.support.postgres import PostgresServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server on 127.0.0.1 for the whole session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL (``postgresql+psycopg://...``) of a fresh, empty database for this test."""
    return postgres_server.create_database()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium driven by Playwright, shared by one test module.

    Module scope, not session: Playwright's sync API keeps an event loop running in the main thread while it
    is started, which would break every later test that calls ``asyncio.run`` (ASGI) or that Django checks
    for an async context."""
    with chromium_browser() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (own cookies and storage), closed after the test."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql",
                                                                           marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL: every test using it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mfa.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mfa.db'}"


@pytest.fixture(autouse=True)
def _cli_consoles_follow_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich fixes a console's width when it is made if COLUMNS is set then (pytest-xdist workers start with
    COLUMNS=80): give the CLI consoles no fixed width, so each command sees the COLUMNS its test runs with."""
    import mfa_middleware.cli as cli

    for name in ("console", "err_console"):
        monkeypatch.setattr(getattr(cli, name), "_width", None)
        monkeypatch.setattr(getattr(cli, name), "_height", None)
