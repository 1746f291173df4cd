"""The primary sign-in protocol: the forms page and the Basic path check a password through the one configured
:class:`PasswordMethod`, exactly once per attempt, and never when the lockout refused the attempt."""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from werkzeug.test import Client

from mfa_middleware.adapters.wsgi import WSGIAdapter
from mfa_middleware.middleware import assemble
from mfa_middleware.primary.base import PasswordMethod, ServerMethod
from mfa_middleware.primary.local import LocalPasswords
from mfa_middleware.primary.remote_user import RemoteUserMethod
from mfa_middleware.runtime import Runtime
from mfa_middleware.store import UserRecord
from tests.support.mfa import FAST_HASHER, Clock, csrf_of, echo_app, make_config

PASSWORD = "correct horse battery staple"


@dataclass
class Recording:
    """A primary method that knows one password for everyone and records what it was asked."""

    password: str
    kind: str = "recording"
    calls: list[str | None] = field(default_factory=list)

    def check(self, user: UserRecord | None, password: str, now: float) -> bool:
        self.calls.append(user.username if user is not None else None)
        return user is not None and password == self.password


@pytest.fixture
def setup(sqlite_url: str) -> Iterator[tuple[WSGIAdapter, Recording]]:
    recording = Recording("directory-password")
    config = make_config(sqlite_url, lockout={"max_failures": 3},
                         rules=[{"path": "/dav/*", "policy": "one_factor", "basic": True}])
    runtime = Runtime(config, clock=Clock(), password_hasher=FAST_HASHER, primary=recording)
    runtime.store.upgrade()
    runtime.accounts.add("alice", actor="test", password=PASSWORD)
    parts = assemble(runtime)
    yield WSGIAdapter(echo_app, parts.runtime, parts.gate, parts.pages), recording
    runtime.close()


def forms_login(app: WSGIAdapter, username: str, password: str) -> int:
    client = Client(app)
    page = client.get("/_mfa/login?next=/")
    return client.post("/_mfa/login", data={"username": username, "password": password, "next": "/",
                                            "csrf_token": csrf_of(page.text)}).status_code


def basic(app: WSGIAdapter, username: str, password: str) -> int:
    header = "Basic " + b64encode(f"{username}:{password}".encode()).decode()
    return Client(app, use_cookies=False).get("/dav/x", headers={"Authorization": header}).status_code


def test_the_protocol_is_implemented() -> None:
    assert isinstance(LocalPasswords.__new__(LocalPasswords), PasswordMethod)
    assert isinstance(RemoteUserMethod.__new__(RemoteUserMethod), ServerMethod)


def test_forms_and_basic_check_through_the_configured_method(setup: tuple[WSGIAdapter, Recording]) -> None:
    app, recording = setup
    # The local password no longer works: the configured method decides, on both paths.
    assert forms_login(app, "alice", PASSWORD) == 401
    assert basic(app, "alice", PASSWORD) == 401
    assert recording.calls == ["alice", "alice"]
    recording.calls.clear()
    assert forms_login(app, "alice", "directory-password") == 303
    assert basic(app, "alice", "directory-password") == 200
    assert recording.calls == ["alice", "alice"]


def test_unknown_and_locked_users_are_checked_once_as_nobody(setup: tuple[WSGIAdapter, Recording]) -> None:
    app, recording = setup
    assert forms_login(app, "nobody", "directory-password") == 401
    assert basic(app, "nobody", "directory-password") == 401
    assert recording.calls == [None, None]
    recording.calls.clear()
    for _ in range(3):
        assert basic(app, "alice", "wrong") == 401
    recording.calls.clear()
    # Locked: the right password is not even shown to the method, and both paths answer as for a wrong one.
    assert forms_login(app, "alice", "directory-password") == 401
    assert basic(app, "alice", "directory-password") == 401
    assert recording.calls == [None, None]
