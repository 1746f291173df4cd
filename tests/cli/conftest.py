"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

import mfa_middleware.runtime
from mfa_middleware.runtime import Runtime

OPERATOR = "helpdesk"


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
