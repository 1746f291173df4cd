"""Building blocks for tests of the middleware: a config, a clock, a wrapped app, a browser-less client."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
from argon2 import PasswordHasher
from cryptography.fernet import Fernet
from werkzeug.test import Client, TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.config import Config, config_from_dict

SECRET_KEY = "k" * 40
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
ENCRYPTION_KEY = Fernet.generate_key().decode()
START = 1_800_000_000.0  # a fixed "now", aligned to a 30 s step

DEFAULT_RULES: list[dict[str, Any]] = [
    {"path": "/public/*", "policy": "bypass"},
    {"path": "/admin/*", "policy": "two_factor", "groups": ["admins"]},
    {"path": "/reports/*", "policy": "one_factor"},
    {"path": "/strict/*", "policy": "two_factor", "exempt": False},
    {"path": "/blocked/*", "policy": "deny"},
    {"path": "/*", "policy": "two_factor"},
]


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(database: str, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "secret_keys": [SECRET_KEY],
        "encryption_key": ENCRYPTION_KEY,
        "database": database,
        "default_policy": "deny",
        "rules": DEFAULT_RULES,
        "session": {"revocation_interval": "5s"},
        # The authenticator app alone, so that enrollment ends at the target; tests of the other methods (and of
        # the offer of backup codes after enrollment) enable them.
        "methods": {"enabled": ["totp"]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(data, source="test.toml")


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    identity = environ.get("mfa.identity")
    level = getattr(identity, "level", "-")
    body = f"app path={environ['PATH_INFO']} user={environ.get('REMOTE_USER', '-')} level={level}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


def make_middleware(database: str, clock: Clock | None = None, app: Any = echo_app, **overrides: Any) -> MFAMiddleware:
    mw = MFAMiddleware(app, make_config(database, **overrides), clock=clock or Clock(), password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    return mw


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def secret_of(html: str) -> str:
    match = re.search(r'<code id="secret" class="secret">([A-Z2-7 ]+)</code>', html)
    assert match, "no secret on the enrollment page"
    return match.group(1).replace(" ", "")


@dataclass
class Browser:
    """A browser-less user agent on werkzeug's test client that keeps cookies and follows our pages."""

    mw: MFAMiddleware
    client: Client = field(init=False)
    base: str = "http://localhost"

    def __post_init__(self) -> None:
        self.client = Client(self.mw)

    remote_addr: str = "127.0.0.1"

    def get(self, path: str, **kw: Any) -> TestResponse:
        kw.setdefault("environ_base", {"REMOTE_ADDR": self.remote_addr})
        return self.client.get(path, base_url=self.base, **kw)

    def post(self, path: str, data: dict[str, str], **kw: Any) -> TestResponse:
        kw.setdefault("environ_base", {"REMOTE_ADDR": self.remote_addr})
        return self.client.post(path, data=data, base_url=self.base, **kw)

    def get_with_cookie_header(self, path: str, cookie_header: str, **kw: Any) -> TestResponse:
        """A request carrying exactly ``cookie_header`` (the cookie jar would replace a Cookie header)."""
        raw = Client(self.mw, use_cookies=False)
        kw.setdefault("environ_base", {"REMOTE_ADDR": self.remote_addr})
        headers = {**kw.pop("headers", {}), "Cookie": cookie_header}
        return raw.get(path, base_url=self.base, headers=headers, **kw)

    def cookie(self, name: str) -> str | None:
        c = self.client.get_cookie(name, domain="localhost")
        return None if c is None else c.value

    def login(self, username: str, password: str, next_path: str = "/") -> TestResponse:
        page = self.get(f"/_mfa/login?next={next_path}")
        return self.post("/_mfa/login", {"username": username, "password": password, "next": next_path,
                                          "csrf_token": csrf_of(page.text)})

    def enroll(self, clock: Clock) -> tuple[str, TestResponse]:
        """From a pending enrollment: start the authenticator app, read the key, confirm with a code."""
        start = self.get("/_mfa/enroll")
        shown = self.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
        assert shown.status_code == 303, shown.text
        page = self.get("/_mfa/enroll")
        secret = secret_of(page.text)
        code = pyotp.TOTP(secret).at(clock.now)
        done = self.post("/_mfa/enroll", {"action": "confirm", "code": code, "csrf_token": csrf_of(page.text)})
        return secret, done

    def verify(self, code: str) -> TestResponse:
        page = self.get("/_mfa/verify")
        return self.post("/_mfa/verify", {"code": code, "csrf_token": csrf_of(page.text)})

    def sign_in_and_enroll(self, username: str, password: str, clock: Clock, next_path: str = "/") -> str:
        first = self.login(username, password, next_path)
        assert first.status_code == 303 and first.headers["Location"].endswith("/_mfa/enroll"), first.text
        secret, done = self.enroll(clock)
        assert done.status_code == 303, done.text
        return secret


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mfa.db'}"
