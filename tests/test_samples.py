"""The samples in ``samples/`` as an operator runs them: real ``mfa-admin`` commands, a real HTTP server, real time.

Each sample module is loaded from its file with ``MFA_CONFIG`` pointing at a copy of its ``mfa.toml`` in
``tmp_path`` (so the relative ``sqlite:///mfa.db`` lands there), the store is created and a user added through
``mfa-admin`` (click's CliRunner), and the wrapped app is served by werkzeug on 127.0.0.1 and driven with
``http.client``: no redirect is followed automatically and cookies are kept by :class:`HttpClient`.

TOTP codes are computed from the real clock. The verifier accepts one step of drift either side and each step
once per user, so after enrollment has consumed the current step, a later sign-in uses the code of the next
step (``time.time() + 30``): it is accepted whether or not the clock crossed a step boundary in between.
"""

from __future__ import annotations

import http.client
import importlib.util
import re
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pyotp
import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from mfa_middleware import MFAMiddleware
from mfa_middleware.cli import admin
from mfa_middleware.core.tokens import TokenCodec
from tests.support.mfa import csrf_of, secret_of
from tests.support.servers import serve_wsgi

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
SAMPLES = [pytest.param("plain_wsgi", id="plain_wsgi"), pytest.param("flask", id="flask")]
USERNAME = "alice"
PASSWORD = "correct horse battery staple"
SESSION_COOKIE = "mfa_session"  # no __Host- prefix: the samples are served over plain HTTP


# -- a small user agent ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def location(self) -> str:
        value = self.headers.get("Location")
        assert value is not None, f"no Location header on a {self.status} response"
        return value

    def set_cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


@dataclass
class HttpClient:
    """One ``http.client`` connection per request, opened and closed here; cookies kept in a dict."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                cookie_header: str | None = None) -> HttpResponse:
        parts = urlsplit(self.base)
        assert parts.hostname is not None and parts.port is not None
        headers = {"Accept": "text/html"}
        cookie = cookie_header if cookie_header is not None else "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if cookie:
            headers["Cookie"] = cookie
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            with conn.getresponse() as raw:
                response = HttpResponse(raw.status, raw.headers, raw.read().decode("utf-8"))
        finally:
            conn.close()
        if cookie_header is None:
            self._store_cookies(response)
        return response

    def get(self, path: str) -> HttpResponse:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str]) -> HttpResponse:
        return self.request("POST", path, form)

    def _store_cookies(self, response: HttpResponse) -> None:
        for header in response.set_cookies():
            pair, *attributes = (part.strip() for part in header.split(";"))
            name, _, value = pair.partition("=")
            if any(a.lower() == "max-age=0" for a in attributes) or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value.strip('"')


# -- the sample under test --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    base: str
    config: Path
    module: ModuleType

    def client(self) -> HttpClient:
        return HttpClient(self.base)

    @property
    def middleware(self) -> MFAMiddleware:
        mw = self.module.app
        assert isinstance(mw, MFAMiddleware)
        return mw


def mfa_admin(config: Path, *args: str, stdin: str | None = None) -> str:
    """Run ``mfa-admin --config CONFIG ARGS...`` in-process, as an operator would on the command line."""
    result = CliRunner().invoke(admin, ["--config", str(config), *args], input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def load_sample(name: str) -> ModuleType:
    """Import ``samples/NAME/app.py`` from its path (the caller has set MFA_CONFIG and the keys)."""
    path = SAMPLES_DIR / name / "app.py"
    module_name = f"mfa_sample_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # Flask finds its root folder through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


@pytest.fixture(params=SAMPLES)
def sample(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sample]:
    name: str = request.param
    config = tmp_path / "mfa.toml"
    shutil.copyfile(SAMPLES_DIR / name / "mfa.toml", config)
    monkeypatch.setenv("MFA_SECRET_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("MFA_ENCRYPTION_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("MFA_CONFIG", str(config))

    assert "schema revision" in mfa_admin(config, "db", "upgrade")
    assert (tmp_path / "mfa.db").is_file(), "the relative sqlite path must resolve beside the mfa.toml"
    added = mfa_admin(config, "user", "add", USERNAME, "--password-stdin", "--groups", "admins",
                      stdin=PASSWORD + "\n")
    assert f"Added {USERNAME}" in added

    module = load_sample(name)
    try:
        mw = module.app
        assert isinstance(mw, MFAMiddleware), "the sample must end with app = MFAMiddleware(app, ...)"
        assert mw.runtime.config.source == str(config), "the sample must read MFA_CONFIG"
        with serve_wsgi(mw) as base:
            yield Sample(name, base, config, module)
    finally:
        if isinstance(module.app, MFAMiddleware):
            module.app.runtime.close()
        sys.modules.pop(f"mfa_sample_{name}", None)


# -- flows ------------------------------------------------------------------------------------------------------


def hidden_next(html: str) -> str:
    match = re.search(r'name="next" value="([^"]*)"', html)
    assert match, "no next field on the login page"
    return match.group(1)


def sign_in(client: HttpClient, next_target: str = "/", posted_next: str | None = None) -> HttpResponse:
    """Open the login page for ``next_target`` and post the password; returns the POST's response."""
    page = client.get(f"/_mfa/login?next={quote(next_target, safe='')}")
    assert page.status == 200, page.body
    assert 'for="username">Username<' in page.body and 'for="password">Password<' in page.body
    form = {"username": USERNAME, "password": PASSWORD, "csrf_token": csrf_of(page.body),
            "next": hidden_next(page.body) if posted_next is None else posted_next}
    return client.post("/_mfa/login", form)


def enroll(client: HttpClient) -> tuple[str, str, HttpResponse]:
    """From a pending sign-in: "Set it up now", read the key, confirm with the current code.

    Returns the key, the code used and the confirmation's response.
    """
    start = client.get("/_mfa/enroll")
    assert start.status == 200 and "Set it up now" in start.body, start.body
    started = client.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(start.body)})
    assert started.status == 303 and started.location.endswith("/_mfa/enroll"), started.body
    shown = client.get("/_mfa/enroll")
    assert shown.status == 200
    assert "<svg" in shown.body, "the enrollment page shows the QR code inline"
    grouped = re.search(r'<code id="secret" class="secret">([A-Z2-7 ]+)</code>', shown.body)
    assert grouped and all(len(g) == 4 for g in grouped.group(1).split(" ")), "the key is shown in groups of 4"
    secret = secret_of(shown.body)
    code = pyotp.TOTP(secret).at(time.time())
    done = client.post("/_mfa/enroll", {"action": "confirm", "code": code, "csrf_token": csrf_of(shown.body)})
    return secret, code, done


def after_enrollment(client: HttpClient, done: HttpResponse, target: str) -> None:
    """The samples keep the default methods, so enrollment ends at the offer of backup codes, whose "Not now"
    leads on to the page the user asked for."""
    assert done.status == 303 and done.location == f"/_mfa/backup-codes?next={quote(target, safe='/')}", done.body
    offer = client.get(done.location)
    assert offer.status == 200 and "Backup codes" in offer.body and f'href="{target}"' in offer.body, offer.body


def verify(client: HttpClient, code: str) -> HttpResponse:
    page = client.get("/_mfa/verify")
    assert page.status == 200 and 'for="code">Code<' in page.body, page.body
    return client.post("/_mfa/verify", {"code": code, "csrf_token": csrf_of(page.body)})


def sign_out(client: HttpClient) -> None:
    confirm = client.get("/_mfa/logout")
    assert confirm.status == 200 and ">Sign out</button>" in confirm.body, confirm.body
    done = client.post("/_mfa/logout", {"csrf_token": csrf_of(confirm.body)})
    assert done.status == 200 and "You have signed out" in done.body, done.body
    assert SESSION_COOKIE not in client.cookies


def signed_in_client(sample: Sample) -> tuple[HttpClient, str, str]:
    """A client through the first sign-in and enrollment; returns it, the key and the code enrollment used."""
    client = sample.client()
    first = sign_in(client)
    assert first.status == 303 and first.location == "/_mfa/enroll", first.body
    secret, code, done = enroll(client)
    after_enrollment(client, done, "/")
    assert SESSION_COOKIE in client.cookies
    return client, secret, code


def assert_sent_to_login(response: HttpResponse, target: str) -> None:
    assert response.status == 302, response.body
    location = urlsplit(response.location)
    assert location.path == "/_mfa/login" and not location.netloc, response.location
    assert parse_qs(location.query)["next"] == [target]


def user_shown(body: str) -> bool:
    return f'<strong id="user">{USERNAME}</strong>' in body


# -- tests ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    pytest.param("/", id="home"),
    pytest.param("/admin/", id="admin"),
    pytest.param("/reports/q3?year=2025", id="with-query"),
])
def test_anonymous_request_is_sent_to_login(sample: Sample, path: str) -> None:
    response = sample.client().get(path)

    assert_sent_to_login(response, path)
    assert response.headers["Cache-Control"] == "no-store"


def test_anonymous_root_redirect_is_exactly_the_login_page(sample: Sample) -> None:
    response = sample.client().get("/")

    assert response.status == 302
    assert response.location in ("/_mfa/login?next=%2F", "/_mfa/login?next=/")


def test_public_page_needs_no_sign_in(sample: Sample) -> None:
    client = sample.client()

    response = client.get("/public/")

    assert response.status == 200
    assert "Public notice board" in response.body and "not signed in" in response.body
    assert not client.cookies


def test_sign_in_enroll_and_reach_the_app(sample: Sample) -> None:
    client = sample.client()
    assert_sent_to_login(client.get("/"), "/")

    first = sign_in(client, "/admin/")
    assert first.status == 303 and first.location == "/_mfa/enroll", first.body
    assert SESSION_COOKIE not in client.cookies, "no session before the second factor"
    _secret, _code, done = enroll(client)
    after_enrollment(client, done, "/admin/")

    set_session = [c for c in done.set_cookies() if c.startswith(SESSION_COOKIE + "=")]
    assert len(set_session) == 1
    assert {"HttpOnly", "Path=/", "SameSite=Lax"} <= {a.strip() for a in set_session[0].split(";")[1:]}
    for path, title in [("/admin/", "Administration"), ("/", "Home"), ("/public/", "Public notice board")]:
        page = client.get(path)
        assert page.status == 200, (path, page.body)
        assert title in page.body and user_shown(page.body), (path, page.body)
        assert "totp" in page.body, "the app sees the methods of mfa.identity"
    assert USERNAME in mfa_admin(sample.config, "user", "list")


def test_replayed_code_is_refused_at_verify(sample: Sample) -> None:
    client, secret, enrollment_code = signed_in_client(sample)
    sign_out(client)
    assert_sent_to_login(client.get("/"), "/")

    second = sign_in(client)
    assert second.status == 303 and second.location == "/_mfa/verify", second.body
    replayed = verify(client, enrollment_code)
    assert replayed.status == 401 and "already been used" in replayed.body, replayed.body
    assert SESSION_COOKIE not in client.cookies
    next_code = pyotp.TOTP(secret).at(time.time() + 30)  # the next step: newer than the one enrollment used
    accepted = verify(client, next_code)
    assert accepted.status == 303 and accepted.location == "/", accepted.body
    assert user_shown(client.get("/").body)
    sign_out(client)

    third = sign_in(client)
    assert third.status == 303 and third.location == "/_mfa/verify", third.body
    again = verify(client, next_code)
    assert again.status == 401 and "already been used" in again.body, again.body
    assert_sent_to_login(client.get("/"), "/")


def tamper(token: str, how: str, codec: TokenCodec) -> str:
    """A session cookie value changed the way ``how`` says."""
    def flip(index: int) -> str:
        return token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1:]

    if how == "signature":
        return flip(token.rindex(".") + 1)  # the first character of the signature is all signature bits
    if how == "payload":
        return flip(1)
    if how == "truncated":
        return token[:-6]
    if how == "other-key":
        session = codec.load_session(token)
        assert session is not None
        return TokenCodec(("an-attacker's-own-secret-key-" + "x" * 20,)).dump_session(session)
    assert how == "garbage"
    return "not-a-session"


TAMPERINGS = [
    pytest.param("signature", id="signature-changed"),
    pytest.param("payload", id="payload-changed"),
    pytest.param("truncated", id="truncated"),
    pytest.param("other-key", id="signed-with-another-key"),
    pytest.param("garbage", id="garbage"),
]


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_tampered_session_cookie_is_refused(sample: Sample, tampering: str) -> None:
    client, _secret, _code = signed_in_client(sample)
    token = client.cookies[SESSION_COOKIE]
    forged = tamper(token, tampering, sample.middleware.runtime.codec)
    assert forged != token

    refused = client.request("GET", "/", cookie_header=f"{SESSION_COOKIE}={forged}")

    assert_sent_to_login(refused, "/")
    still = client.get("/")
    assert still.status == 200 and user_shown(still.body), "the genuine cookie still works"


@pytest.mark.parametrize("evil", [
    pytest.param("//evil.com", id="scheme-relative"),
    pytest.param("//evil.com/login", id="scheme-relative-path"),
    pytest.param("https://evil.com/", id="absolute"),
    pytest.param("/\\evil.com", id="backslash"),
    pytest.param("javascript:alert(1)", id="javascript"),
])
def test_next_cannot_leave_the_site(sample: Sample, evil: str) -> None:
    client = sample.client()
    login = client.get(f"/_mfa/login?next={quote(evil, safe='')}")
    assert login.status == 200
    assert "evil" not in hidden_next(login.body) and "javascript" not in hidden_next(login.body)

    # Post the hostile target itself, not the page's cleaned copy: the server must clean it again.
    first = sign_in(client, evil, posted_next=evil)
    assert first.status == 303 and first.location == "/_mfa/enroll", first.body
    _secret, _code, done = enroll(client)

    after_enrollment(client, done, "/")
    assert user_shown(client.get("/").body)
