"""The IIS sample (``samples/iis/``): the two web.config files and the Python side they rely on.

IIS cannot run here. What can be checked:

- both ``web.config`` files parse as XML and have the structure ``samples/iis/README.md`` describes: one
  handler for every path (FastCgiModule with ``python.exe|wfastcgi.py``, or httpPlatformHandler), the
  ``httpPlatform`` element starting ``waitress-serve`` on ``%HTTP_PLATFORM_PORT%``, ``WSGI_HANDLER`` naming the
  sample's app, Windows Authentication on and anonymous authentication off, and ``forwardWindowsAuthToken``
  off (mfa_middleware does not read the token handle; forwarding it unread would leak a handle per request);
- ``samples/iis/app.py`` runs in-process with the WSGI environ wfastcgi builds from IIS's server variables:
  ``REMOTE_USER=CONTOSO\\alice`` signs alice in without a password form and leads to enrollment, then to the
  app; a ``Remote-User`` request header, a user of another domain, an ``X-IIS-WindowsAuthToken`` header or an
  ``X-Original-URL`` header signs nobody in.
"""

from __future__ import annotations

import re
import secrets
import shlex
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from cryptography.fernet import Fernet
from werkzeug.test import Client, TestResponse

from mfa_middleware import MFAMiddleware
from tests.support.mfa import csrf_of, secret_of
from tests.test_samples import load_sample, mfa_admin

IIS_DIR = Path(__file__).resolve().parent.parent / "samples" / "iis"
WINDOWS_USER = "CONTOSO\\alice"
USERNAME = "alice"


# -- the web.config files ------------------------------------------------------------------------------------------


def web_config(name: str) -> ET.Element:
    root = ET.parse(IIS_DIR / name).getroot()
    assert root.tag == "configuration", f"{name}: the root element must be <configuration>"
    return root


def one(root: ET.Element, path: str) -> ET.Element:
    found = root.findall(path)
    assert len(found) == 1, f"expected exactly one {path}, found {len(found)}"
    return found[0]


def assert_windows_auth_only(root: ET.Element) -> None:
    auth = one(root, "system.webServer/security/authentication")
    assert one(auth, "windowsAuthentication").get("enabled") == "true"
    assert one(auth, "anonymousAuthentication").get("enabled") == "false"


def catch_all_handler(root: ET.Element, module: str) -> ET.Element:
    handlers = one(root, "system.webServer/handlers")
    added = handlers.findall("add")
    assert len(added) == 1, "one handler takes every request"
    handler = added[0]
    assert handler.get("modules") == module
    assert handler.get("path") == "*" and handler.get("verb") == "*"
    assert handler.get("resourceType") == "Unspecified", "requests for paths that are not files must reach Python"
    assert handler.get("name")
    return handler


def app_settings(root: ET.Element) -> dict[str, str]:
    return {add.get("key", ""): add.get("value", "") for add in root.findall("appSettings/add")}


def assert_names_the_sample_app(module_name: str, attribute: str, pythonpath: str, mfa_config: str) -> None:
    """The module and attribute a web.config names are samples/iis/app.py's wrapped ``app``, and MFA_CONFIG is
    the mfa.toml beside it in the folder on PYTHONPATH."""
    assert module_name == "app" and (IIS_DIR / "app.py").is_file()
    assert attribute == "app"
    assert re.search(r"^app = MFAMiddleware\(app, CONFIG\)$", (IIS_DIR / "app.py").read_text(), re.MULTILINE)
    assert PureWindowsPath(mfa_config).parent == PureWindowsPath(pythonpath)
    assert PureWindowsPath(mfa_config).name == "mfa.toml"


def test_wfastcgi_web_config() -> None:
    root = web_config("web.config.wfastcgi")
    handler = catch_all_handler(root, "FastCgiModule")
    assert handler.get("requireAccess") == "Script"
    processor = handler.get("scriptProcessor", "")
    interpreter, bar, script = processor.partition("|")
    assert bar, f"scriptProcessor must be 'python.exe|wfastcgi.py', got {processor!r}"
    assert PureWindowsPath(interpreter).name.lower() == "python.exe"
    assert PureWindowsPath(script).name.lower() == "wfastcgi.py"
    assert PureWindowsPath(interpreter).is_absolute() and PureWindowsPath(script).is_absolute()

    settings = app_settings(root)
    module_name, _, attribute = settings["WSGI_HANDLER"].rpartition(".")
    assert_names_the_sample_app(module_name, attribute, settings["PYTHONPATH"], settings["MFA_CONFIG"])
    assert PureWindowsPath(settings["WSGI_LOG"]).is_absolute()
    assert not any("SECRET" in key or "ENCRYPTION" in key for key in settings), "no secrets in web.config"
    assert root.find("system.webServer/fastCgi") is None, "<fastCgi> is server-level only (applicationHost.config)"
    assert_windows_auth_only(root)


def test_httpplatform_web_config() -> None:
    root = web_config("web.config.httpplatform")
    catch_all_handler(root, "httpPlatformHandler")
    platform = one(root, "system.webServer/httpPlatform")
    assert PureWindowsPath(platform.get("processPath", "")).name.lower() == "waitress-serve.exe"
    arguments = shlex.split(platform.get("arguments", ""))
    assert "--port=%HTTP_PLATFORM_PORT%" in arguments, arguments
    assert "--host=127.0.0.1" in arguments, "waitress must listen on loopback only: IIS is its only client"
    target = [a for a in arguments if not a.startswith("--")]
    assert len(target) == 1, arguments
    module_name, _, attribute = target[0].partition(":")
    # The Windows user cannot reach Python this way; the token handle is not forwarded (see the README).
    assert platform.get("forwardWindowsAuthToken") == "false"
    assert platform.get("stdoutLogEnabled") == "true"
    assert PureWindowsPath(platform.get("stdoutLogFile", "")).is_absolute()
    assert int(platform.get("startupTimeLimit", "0")) >= 10
    env = {e.get("name", ""): e.get("value", "") for e in platform.findall("environmentVariables/environmentVariable")}
    assert_names_the_sample_app(module_name, attribute, env["PYTHONPATH"], env["MFA_CONFIG"])
    assert set(env) == {"PYTHONPATH", "MFA_CONFIG"}, "no secrets in web.config"
    assert_windows_auth_only(root)


def test_both_web_configs_describe_the_same_site() -> None:
    wfastcgi = app_settings(web_config("web.config.wfastcgi"))
    platform = one(web_config("web.config.httpplatform"), "system.webServer/httpPlatform")
    env = {e.get("name", ""): e.get("value", "") for e in platform.findall("environmentVariables/environmentVariable")}
    assert wfastcgi["PYTHONPATH"] == env["PYTHONPATH"] and wfastcgi["MFA_CONFIG"] == env["MFA_CONFIG"]


# -- the Python side: app.py as wfastcgi calls it ------------------------------------------------------------------


@dataclass
class IISSite:
    module: ModuleType
    config: Path

    @property
    def app(self) -> MFAMiddleware:
        mw = self.module.app
        assert isinstance(mw, MFAMiddleware)
        return mw

    def client(self) -> Client:
        return Client(self.app)


@pytest.fixture
def iis_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IISSite]:
    """samples/iis/app.py on a copy of samples/iis/mfa.toml (store in tmp_path), with alice added the way the
    README says for Windows users (``--no-password``)."""
    config = tmp_path / "mfa.toml"
    text = (IIS_DIR / "mfa.toml").read_text()
    windows_store = 'database = "sqlite:///C:/ProgramData/mfa-sample/mfa.db"'
    assert text.count(windows_store) == 1
    config.write_text(text.replace(windows_store, 'database = "sqlite:///mfa.db"'))
    monkeypatch.setenv("MFA_SECRET_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("MFA_ENCRYPTION_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("MFA_CONFIG", str(config))
    mfa_admin(config, "db", "upgrade")
    assert f"Added {USERNAME}" in mfa_admin(config, "user", "add", USERNAME, "--no-password")

    module = load_sample("iis")
    try:
        site = IISSite(module, config)
        assert site.app.runtime.config.source == str(config), "app.py must read MFA_CONFIG"
        assert site.app.runtime.config.primary.methods == ("forms", "remote_user")
        yield site
    finally:
        if isinstance(module.app, MFAMiddleware):
            module.app.runtime.close()
        sys.modules.pop("mfa_sample_iis", None)


def wfastcgi_environ(remote_user: str | None, **extra: Any) -> dict[str, Any]:
    """What wfastcgi puts into the environ on an intranet request: IIS's server variables."""
    environ: dict[str, Any] = {"REMOTE_ADDR": "10.1.2.3", "SERVER_SOFTWARE": "Microsoft-IIS/10.0", "HTTPS": "off"}
    if remote_user is not None:
        environ.update(REMOTE_USER=remote_user, AUTH_USER=remote_user, LOGON_USER=remote_user,
                       AUTH_TYPE="Negotiate")
    environ.update(extra)
    return environ


def get(client: Client, path: str, environ: dict[str, Any], headers: dict[str, str] | None = None) -> TestResponse:
    return client.get(path, base_url="http://intranet", environ_base=environ,
                      headers={"Accept": "text/html", **(headers or {})})


def post(client: Client, path: str, environ: dict[str, Any], form: dict[str, str]) -> TestResponse:
    return client.post(path, base_url="http://intranet", environ_base=environ, data=form)


def assert_sent_to_login(response: TestResponse, target: str = "/") -> str:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert parts.path == "/_mfa/login" and parse_qs(parts.query)["next"] == [target], location
    return location


def assert_password_form(response: TestResponse) -> None:
    assert response.status_code == 200, response.text
    assert 'name="password"' in response.text and 'name="username"' in response.text


@pytest.mark.parametrize("remote_user", [WINDOWS_USER, "contoso\\Alice", "alice@contoso.example"])
def test_windows_user_needs_no_password_and_is_led_to_enrollment(iis_site: IISSite, remote_user: str) -> None:
    client = iis_site.client()
    environ = wfastcgi_environ(remote_user)
    login = assert_sent_to_login(get(client, "/", environ))

    signed = get(client, login, environ)
    assert signed.status_code == 303, signed.text  # no password form: the Windows sign-in counts as the first factor
    assert signed.headers["Location"] == "/_mfa/enroll"
    start = get(client, "/_mfa/enroll", environ)
    assert start.status_code == 200 and "More information required" in start.text

    started = post(client, "/_mfa/enroll", environ, {"action": "start", "method": "totp",
                                                     "csrf_token": csrf_of(start.text)})
    assert started.status_code == 303, started.text
    shown = get(client, "/_mfa/enroll", environ)
    code = pyotp.TOTP(secret_of(shown.text)).at(time.time())
    done = post(client, "/_mfa/enroll", environ, {"action": "confirm", "code": code,
                                                  "csrf_token": csrf_of(shown.text)})
    # The sample keeps the default methods: enrollment ends at the offer of backup codes, "Not now" leads home.
    assert done.status_code == 303 and done.headers["Location"] == "/_mfa/backup-codes?next=/", done.text
    offer = get(client, done.headers["Location"], environ)
    assert offer.status_code == 200 and 'href="/"' in offer.text, offer.text

    home = get(client, "/", environ)
    assert home.status_code == 200, home.text
    # The app sees the store user, not the Windows account name, and how the user signed in.
    assert f'<strong id="user">{USERNAME}</strong>' in home.text
    assert '<span id="methods">remote_user + totp</span>' in home.text
    record = iis_site.app.runtime.accounts.get(USERNAME)
    assert record.state == "enforced"


@pytest.mark.parametrize("headers", [
    {"Remote-User": USERNAME},
    {"Remote-User": WINDOWS_USER, "X-Remote-User": WINDOWS_USER},
    {"Remote_User": WINDOWS_USER},
    {"X-IIS-WindowsAuthToken": "22b"},  # what HttpPlatformHandler would forward: a handle, never a name
])
def test_request_headers_never_sign_anyone_in(iis_site: IISSite, headers: dict[str, str]) -> None:
    client = iis_site.client()
    environ = wfastcgi_environ(None)  # HttpPlatformHandler, or a server that authenticated no one
    login = assert_sent_to_login(get(client, "/", environ, headers))
    assert_password_form(get(client, login, environ, headers))
    public = get(client, "/public/", environ, headers)
    assert public.status_code == 200 and "You are not signed in" in public.text
    assert not client.get_cookie("mfa_session", domain="intranet")


def test_windows_user_of_another_domain_gets_the_password_form(iis_site: IISSite) -> None:
    client = iis_site.client()
    environ = wfastcgi_environ("FABRIKAM\\alice")
    login = assert_sent_to_login(get(client, "/", environ))
    assert_password_form(get(client, login, environ))
    assert not client.get_cookie("mfa_session", domain="intranet")


def test_x_original_url_header_is_not_the_path_the_rules_see(iis_site: IISSite) -> None:
    """wfastcgi itself copies X-Original-URL into PATH_INFO; mfa_middleware reads PATH_INFO only, and hands the
    app the same path it decided on."""
    client = iis_site.client()
    environ = wfastcgi_environ(None)
    for header in ("X-Original-URL", "X-Original-URI", "X-Forwarded-Uri", "X-Rewrite-URL"):
        assert_sent_to_login(get(client, "/", environ, {header: "/public/"}))
    # What wfastcgi does with the header: PATH_INFO becomes /public/, and the rules and the app agree on it.
    rewritten = get(client, "/public/", {**environ, "HTTP_X_ORIGINAL_URL": "/public/"})
    assert rewritten.status_code == 200 and "Public notice board" in rewritten.text


def test_the_sample_store_lives_outside_the_site_folder() -> None:
    """The store holds password hashes and encrypted seeds: never under the folder IIS serves."""
    text = (IIS_DIR / "mfa.toml").read_text()
    database = re.search(r'^database = "sqlite:///([^"]+)"$', text, re.MULTILINE)
    assert database, "the sample uses an absolute SQLite path"
    store = PureWindowsPath(database.group(1))
    site = PureWindowsPath(app_settings(web_config("web.config.wfastcgi"))["PYTHONPATH"])
    assert store.is_absolute() and site not in store.parents
