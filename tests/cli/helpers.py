"""Helpers for the CLI tests: run a command, check its outcome, read back the store."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from mfa_middleware.cli import admin
from mfa_middleware.config import load_config
from mfa_middleware.store import Store
from mfa_middleware.store.sql import AuditRecord, UserRecord

OPERATOR = "helpdesk"
ACTOR = f"cli:{OPERATOR}"
PASSWORD = "correct horse battery staple"


def run(runner: CliRunner, config: Path | None, *args: str, input: str | None = None) -> Result:
    argv = (["--config", str(config)] if config is not None else []) + list(args)
    return runner.invoke(admin, argv, input=input, catch_exceptions=False)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def fails(result: Result, *fragments: str, code: int = 1) -> Result:
    """A clean failure: the exit code, each fragment in the message, and no traceback."""
    assert result.exit_code == code, result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    return result


class Db:
    """Reads the store the CLI writes to (through the same configuration file)."""

    def __init__(self, config: Path) -> None:
        self.store = Store(load_config(config).database)

    def close(self) -> None:
        self.store.close()

    def user(self, name: str) -> UserRecord:
        user = self.store.get_user(name)
        assert user is not None, f"no user {name}"
        return user

    def audit(self, event: str, username: str | None = None) -> list[AuditRecord]:
        return [e for e in self.store.list_audit(username=username, limit=1000) if e.event == event]


def add_user(runner: CliRunner, config: Path, name: str, *options: str) -> Result:
    return ok(run(runner, config, "user", "add", name, "--password-stdin", *options, input=PASSWORD + "\n"))
