"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mfa_middleware.runtime
from mfa_middleware.cli import admin
from mfa_middleware.runtime import Runtime
from tests.cli.helpers import OPERATOR, Db, ok, run


@pytest.fixture(autouse=True)
def cli_runtimes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Runtime]]:
    """Every Runtime the CLI builds, so tests can check that each command closed its store."""
    built: list[Runtime] = []

    class TrackedRuntime(Runtime):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(mfa_middleware.runtime, "Runtime", TrackedRuntime)
    yield built


@pytest.fixture
def runner() -> CliRunner:
    # LOGNAME is what getpass.getuser() reads first: the actor in the audit rows becomes "cli:helpdesk".
    # A wide terminal keeps rich from wrapping table cells.
    return CliRunner(env={"LOGNAME": OPERATOR, "COLUMNS": "200", "MFA_CONFIG": None, "NO_COLOR": "1"})


@pytest.fixture
def fresh_config(runner: CliRunner, tmp_path: Path) -> Path:
    """A configuration written by `mfa-admin init`, with an SQLite store not migrated yet."""
    path = tmp_path / "mfa.toml"
    ok(runner.invoke(admin, ["init", str(path), "--database", "sqlite:///mfa.db"]))
    return path


@pytest.fixture
def config(runner: CliRunner, fresh_config: Path) -> Path:
    """A configuration whose store is migrated (`mfa-admin db upgrade`)."""
    ok(run(runner, fresh_config, "db", "upgrade"))
    return fresh_config


@pytest.fixture
def db(config: Path) -> Iterator[Db]:
    d = Db(config)
    try:
        yield d
    finally:
        d.close()
