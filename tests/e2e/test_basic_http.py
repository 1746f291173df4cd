"""Issue 3, "How this will be checked": app passwords against a wrapped app over real HTTP, with the real ``curl``.

The app is wrapped by MFAMiddleware on a configuration file (SQLite, a ``basic = true`` rule for ``/dav/*``,
``revocation_interval = "1s"``), served by werkzeug on 127.0.0.1 with the real clock; the helpdesk runs
``mfa-admin`` on the same configuration file (click's CliRunner). ``curl -u user:APP_PASSWORD`` gives 200 on
the Basic route; the same user's main password gives 401 once the user is enforced; after
``app-password revoke`` the old app password gives 401 within the revocation interval; an app password opens
neither ``/_mfa/login`` (as the form's password) nor a route without ``basic = true`` such as the admin area.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from mfa_middleware import MFAMiddleware
from mfa_middleware.cli import admin
from tests.support.components import require_component
from tests.support.mfa import FAST_HASHER, csrf_of, echo_app
from tests.support.servers import serve_wsgi
from tests.test_samples import HttpClient

USERNAME = "alice"
PASSWORD = "correct horse battery staple"
WITHIN = 5.0  # seconds to wait for a revocation; the interval is 1 s
DAV = "/dav/files/report.txt"
APP_REACHED = "app path="


def write_config(path: Path, database: str) -> None:
    path.write_text(f"""\
secret_keys = [{json.dumps(secrets.token_urlsafe(48))}]
encryption_key = {json.dumps(Fernet.generate_key().decode())}
database = {json.dumps(database)}
default_policy = "deny"

[session]
revocation_interval = "1s"

[basic]
realm = "Contoso files"

[[rules]]
path = "/dav/*"
policy = "two_factor"
basic = true

[[rules]]
path = "/admin/*"
policy = "two_factor"
groups = ["admins"]

[[rules]]
path = "/*"
policy = "two_factor"
""")


@dataclass(frozen=True)
class CurlResult:
    status: int
    body: str
    headers: str


@dataclass
class Site:
    base: str
    config: Path
    mw: MFAMiddleware
    curl_path: str

    def admin(self, *args: str, stdin: str | None = None) -> str:
        """``mfa-admin --config CONFIG ARGS...`` as the helpdesk runs it; returns standard output."""
        runner = CliRunner(env={"LOGNAME": "helpdesk", "COLUMNS": "200", "MFA_CONFIG": None, "NO_COLOR": "1"})
        result = runner.invoke(admin, ["--config", str(self.config), *args], input=stdin, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    def curl(self, path: str, user: str | None = None, *extra: str) -> CurlResult:
        """``curl -sS -u USER:PASSWORD URL``: the status, the body and the response headers."""
        argv = [self.curl_path, "--silent", "--show-error", "--max-time", "30", "--dump-header", "-",
                "--write-out", "\n%{http_code}", *extra]
        if user is not None:
            argv += ["--user", user]
        done = subprocess.run([*argv, self.base + path], capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        head, _, rest = done.stdout.decode("utf-8").partition("\r\n\r\n")
        body, _, code = rest.rpartition("\n")
        return CurlResult(int(code), body, head)

    def dav(self, password: str, user: str = USERNAME) -> CurlResult:
        return self.curl(DAV, f"{user}:{password}")


@pytest.fixture
def curl() -> str:
    found = shutil.which("curl")
    if found is None:
        require_component("curl", "the curl binary is not on PATH (apt-get install curl)")
    return found


@pytest.fixture
def site(tmp_path: Path, curl: str) -> Iterator[Site]:
    config = tmp_path / "mfa.toml"
    write_config(config, f"sqlite:///{tmp_path / 'mfa.db'}")
    mw = MFAMiddleware(echo_app, config, password_hasher=FAST_HASHER)
    try:
        s = Site("", config, mw, curl)
        s.admin("db", "upgrade")
        with serve_wsgi(mw) as base:
            s.base = base
            yield s
    finally:
        mw.runtime.close()


def add_alice(site: Site, state: str) -> None:
    site.admin("user", "add", USERNAME, "--password-stdin", "--groups", "admins", "--state", state,
               stdin=PASSWORD + "\n")


def new_app_password(site: Site, label: str = "laptop") -> str:
    password = site.admin("app-password", "create", USERNAME, "--label", label).strip()
    assert len(password) == 16 and password.isalpha()
    return password


def wait_for_status(site: Site, password: str, status: int) -> CurlResult:
    """Ask with curl until the Basic route answers ``status`` or :data:`WITHIN` seconds have passed."""
    deadline = time.monotonic() + WITHIN
    while True:
        result = site.dav(password)
        if result.status == status or time.monotonic() >= deadline:
            return result
        time.sleep(0.1)


def assert_challenge(result: CurlResult) -> None:
    assert result.status == 401, result.body
    assert 'www-authenticate: basic realm="contoso files", charset="utf-8"' in result.headers.lower(), result.headers
    assert APP_REACHED not in result.body


# -- the checks of the issue ----------------------------------------------------------------------------------
def test_curl_with_an_app_password_gets_200(site: Site) -> None:
    add_alice(site, "enforced")
    password = new_app_password(site)

    for sent in (password, " ".join(password[i:i + 4] for i in range(0, 16, 4)), password.upper()):
        result = site.dav(sent)
        assert result.status == 200, result.body
        assert f"app path={DAV} user={USERNAME} level=2" in result.body


def test_curl_without_credentials_is_challenged(site: Site) -> None:
    add_alice(site, "enforced")

    result = site.curl(DAV)

    assert_challenge(result)


@pytest.mark.parametrize(("state", "status"), [
    pytest.param("disabled", 200, id="disabled"),
    pytest.param("enabled", 200, id="enabled-without-a-method"),
    pytest.param("enforced", 401, id="enforced"),
])
def test_main_password_on_the_basic_route(site: Site, state: str, status: int) -> None:
    add_alice(site, state)

    result = site.dav(PASSWORD)

    assert result.status == status, result.body
    if status == 401:
        assert_challenge(result)
        assert "app password" in result.body


def test_main_password_gets_401_once_enforced(site: Site) -> None:
    add_alice(site, "enabled")
    assert site.dav(PASSWORD).status == 200  # verified and cached by the middleware

    site.admin("user", "set-state", USERNAME, "enforced")

    refused = wait_for_status(site, PASSWORD, 401)
    assert_challenge(refused)
    assert "app password" in refused.body
    assert site.dav(new_app_password(site)).status == 200


def test_revoked_app_password_gets_401_within_the_interval(site: Site) -> None:
    add_alice(site, "enforced")
    password = new_app_password(site)
    spare = new_app_password(site, "phone")
    assert site.dav(password).status == 200
    assert site.dav(password).status == 200  # from the verified-credential cache

    site.admin("app-password", "revoke", USERNAME, "laptop")

    refused = wait_for_status(site, password, 401)
    assert_challenge(refused)
    assert site.dav(spare).status == 200


# -- where an app password is refused -------------------------------------------------------------------------
def test_app_password_as_the_login_form_password_is_refused(site: Site) -> None:
    add_alice(site, "enforced")
    password = new_app_password(site)
    client = HttpClient(site.base)
    page = client.get("/_mfa/login?next=/")

    refused = client.post("/_mfa/login", {"username": USERNAME, "password": password, "next": "/",
                                          "csrf_token": csrf_of(page.body)})

    assert refused.status == 401 and "Incorrect username or password" in refused.body, refused.body
    assert not {"mfa_session", "mfa_pending"} & set(client.cookies), client.cookies
    assert client.get("/").status == 302


@pytest.mark.parametrize("path", [
    pytest.param("/admin/", id="admin-route"),
    pytest.param("/reports/q3", id="non-basic-route"),
    pytest.param("/_mfa/", id="account-page"),
    pytest.param("/_mfa/app-passwords", id="app-passwords-page"),
])
def test_app_password_on_a_route_without_basic_is_refused(site: Site, path: str) -> None:
    add_alice(site, "enforced")
    password = new_app_password(site)
    assert site.dav(password).status == 200, "the same credential does work on the Basic route"

    for accept in ("*/*", "text/html", "application/json"):
        result = site.curl(path, f"{USERNAME}:{password}", "--header", f"Accept: {accept}")
        assert result.status in (302, 303, 401), (accept, result.status, result.body)
        assert APP_REACHED not in result.body
        assert "Security info" not in result.body and "App passwords" not in result.body
        if result.status in (302, 303):
            assert "location: /_mfa/login" in result.headers.lower(), result.headers


def test_main_password_on_the_admin_route_is_refused(site: Site) -> None:
    add_alice(site, "disabled")

    result = site.curl("/admin/", f"{USERNAME}:{PASSWORD}", "--header", "Accept: application/json")

    assert result.status == 401 and APP_REACHED not in result.body, result.body
