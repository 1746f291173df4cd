"""The framework samples (Django, Pyramid, FastAPI, Starlette) protected by mfa_middleware, in-process and under
real servers.

In-process, each sample's wrapped app is driven without a socket: the WSGI ones (Django, Pyramid) through
werkzeug's test ``Client`` on the wrapped app (Django's own test client would bypass the middleware), the ASGI
ones (FastAPI, Starlette) through ``httpx.AsyncClient`` on ``httpx.ASGITransport`` inside ``asyncio.run``. The
WebSocket and lifespan checks call the ASGI app directly with a hand-made scope and ``receive``/``send``.

Under real servers, each sample is started the way its README section says, as a separate process on a free
port of 127.0.0.1: FastAPI and Starlette under ``uvicorn``, Django under ``gunicorn`` with two workers, Pyramid
under ``waitress-serve``. Readiness is a bounded poll; the process is terminated (by its pid, through Popen) in
``finally``.

Every sample shows the username it got from the framework's own user object (Django: ``request.user`` made
by RemoteUserMiddleware; Starlette/FastAPI: ``request.user``; Pyramid: WebOb's ``request.remote_user``), in
``<strong id="user">``. The sign-in flows are those of ``tests/test_samples.py`` (same pages, same user agent).
"""

from __future__ import annotations

import asyncio
import http.client
import importlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from fastapi import FastAPI, Request
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.adapters.asgi import MFAUser
from mfa_middleware.cli import admin
from tests.support.servers import free_port
from tests.test_samples import (PASSWORD, SAMPLES_DIR, SESSION_COOKIE, USERNAME, HttpClient, HttpResponse,
                                after_enrollment, assert_sent_to_login, enroll, load_sample, sign_in, sign_out,
                                user_shown)

DISPLAY_NAME = "Alice Liddell"
BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0  # seconds for a server to answer its first request
STOP_TIMEOUT = 15.0
WSGI_SAMPLES = ("django", "pyramid")
ASGI_SAMPLES = ("fastapi", "starlette")
ALL_SAMPLES = [pytest.param(name, id=name) for name in (*WSGI_SAMPLES, *ASGI_SAMPLES)]
ASGI_PARAMS = [pytest.param(name, id=name) for name in ASGI_SAMPLES]
SPOOF_HEADERS = [pytest.param("Remote-User", id="Remote-User"), pytest.param("Remote_User", id="Remote_User"),
                 pytest.param("X-Remote-User", id="X-Remote-User")]

Message = MutableMapping[str, Any]
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]


# -- user agents: the HttpClient of test_samples, over a socket, a WSGI app or an ASGI app ------------------------


def header_message(pairs: list[tuple[str, str]]) -> http.client.HTTPMessage:
    message = http.client.HTTPMessage()
    for name, value in pairs:
        message[name] = value  # appends: repeated headers (Set-Cookie) stay separate
    return message


@dataclass
class Agent(HttpClient):
    """:class:`HttpClient` that can add request headers; subclasses say how a request is sent."""

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                cookie_header: str | None = None, headers: dict[str, str] | None = None) -> HttpResponse:
        sent = {"Accept": "text/html", **(headers or {})}
        cookie = cookie_header if cookie_header is not None else "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if cookie:
            sent["Cookie"] = cookie
        response = self.send(method, path, sent, form)
        if cookie_header is None:
            self._store_cookies(response)
        return response

    def send(self, method: str, path: str, headers: dict[str, str], form: dict[str, str] | None) -> HttpResponse:
        raise NotImplementedError


@dataclass
class SocketAgent(Agent):
    """Over real HTTP with ``http.client``, one connection per request."""

    def send(self, method: str, path: str, headers: dict[str, str], form: dict[str, str] | None) -> HttpResponse:
        parts = urlsplit(self.base)
        assert parts.hostname is not None and parts.port is not None
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            with conn.getresponse() as raw:
                return HttpResponse(raw.status, raw.headers, raw.read().decode("utf-8"))
        finally:
            conn.close()


@dataclass
class WSGIAgent(Agent):
    """Through werkzeug's test Client on the wrapped WSGI app (no socket, no cookie jar of its own)."""

    app: MFAMiddleware | None = None

    def send(self, method: str, path: str, headers: dict[str, str], form: dict[str, str] | None) -> HttpResponse:
        assert self.app is not None
        client = Client(self.app, use_cookies=False)
        response = client.open(path, method=method, base_url=self.base, headers=headers, data=form,
                               environ_base={"REMOTE_ADDR": "127.0.0.1"})
        try:
            return HttpResponse(response.status_code, header_message(list(response.headers.items())),
                                response.get_data(as_text=True))
        finally:
            response.close()


@dataclass
class ASGIAgent(Agent):
    """Through ``httpx.AsyncClient`` on ``httpx.ASGITransport``, one ``asyncio.run`` per request."""

    app: ASGIApp | None = None

    def send(self, method: str, path: str, headers: dict[str, str], form: dict[str, str] | None) -> HttpResponse:
        assert self.app is not None
        app = self.app

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url=self.base) as client:
                return await client.request(method, path, headers=headers, data=form)

        response = asyncio.run(go())
        return HttpResponse(response.status_code, header_message(response.headers.multi_items()), response.text)


# -- the samples, in-process --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    module: ModuleType
    app: MFAMiddleware | ASGIMFAMiddleware
    config: Path

    def client(self) -> Agent:
        if isinstance(self.app, ASGIMFAMiddleware):
            return ASGIAgent("http://localhost", app=self.app)
        return WSGIAgent("http://localhost", app=self.app)

    @property
    def asgi(self) -> ASGIMFAMiddleware:
        assert isinstance(self.app, ASGIMFAMiddleware)
        return self.app


def mfa_admin(config: Path, *args: str, stdin: str | None = None) -> str:
    """``mfa-admin --config CONFIG ARGS...`` in-process (click's CliRunner), as an operator runs it."""
    result = CliRunner().invoke(admin, ["--config", str(config), *args], input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def prepare_store(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Copy the sample's mfa.toml into ``folder``, set the keys and MFA_CONFIG, create the store and alice."""
    config = folder / "mfa.toml"
    shutil.copyfile(SAMPLES_DIR / name / "mfa.toml", config)
    monkeypatch.setenv("MFA_SECRET_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("MFA_ENCRYPTION_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("MFA_CONFIG", str(config))
    assert "schema revision" in mfa_admin(config, "db", "upgrade")
    assert (folder / "mfa.db").is_file(), "the relative sqlite path must resolve beside the mfa.toml"
    added = mfa_admin(config, "user", "add", USERNAME, "--name", DISPLAY_NAME, "--password-stdin",
                      "--groups", "admins", stdin=PASSWORD + "\n")
    assert f"Added {USERNAME}" in added
    return config


@pytest.fixture(scope="session")
def django_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Django configured once for the session from ``samples/django/mysite/settings.py``, its tables migrated
    into a throwaway SQLite file (Django's settings cannot be reloaded within a process)."""
    database = tmp_path_factory.mktemp("django") / "django.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(SAMPLES_DIR / "django"))
        mp.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
        mp.setenv("DJANGO_DATABASE", str(database))
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        yield database


def load_django() -> ModuleType:
    """A fresh import of ``mysite.wsgi`` (so it reads this test's MFA_CONFIG)."""
    sys.modules.pop("mysite.wsgi", None)
    return importlib.import_module("mysite.wsgi")


def load_pyramid() -> ModuleType:
    # WebOb 1.8 imports the standard library's cgi module, deprecated since Python 3.11: not ours to fix.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'cgi' is deprecated", category=DeprecationWarning)
        return load_sample("pyramid")


@pytest.fixture
def sample(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sample]:
    """The sample named by the test's parameter, imported from its folder with a fresh store (indirect)."""
    name: str = request.param
    config = prepare_store(name, tmp_path, monkeypatch)
    if name == "django":
        request.getfixturevalue("django_setup")
        module = load_django()
        app = module.application
    else:
        module = load_pyramid() if name == "pyramid" else load_sample(name)
        app = module.app
    try:
        expected = ASGIMFAMiddleware if name in ASGI_SAMPLES else MFAMiddleware
        assert isinstance(app, expected), f"the {name} sample must end with its app wrapped by {expected.__name__}"
        assert app.runtime.config.source == str(config), "the sample must read MFA_CONFIG"
        yield Sample(name, module, app, config)
    finally:
        if isinstance(app, (MFAMiddleware, ASGIMFAMiddleware)):
            app.runtime.close()
        sys.modules.pop(module.__name__, None)


def signed_in(client: HttpClient, target: str = "/") -> None:
    """Sign in as alice and set up the authenticator app (the first sign-in), ending back on ``target``."""
    first = sign_in(client, target)
    assert first.status == 303 and first.location == "/_mfa/enroll", first.body
    _secret, _code, done = enroll(client)
    after_enrollment(client, done, target)
    assert SESSION_COOKIE in client.cookies


def assert_middleware_redirect(response: HttpResponse, target: str) -> None:
    """Sent to our login page by the middleware itself (its redirect is ``no-store``), not by the framework."""
    assert_sent_to_login(response, target)
    assert response.headers["Cache-Control"] == "no-store"


# -- in-process: every sample -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ALL_SAMPLES, indirect=True)
@pytest.mark.parametrize("path", [pytest.param("/", id="home"), pytest.param("/admin/", id="admin")])
def test_anonymous_request_is_sent_to_login(sample: Sample, path: str) -> None:
    assert_middleware_redirect(sample.client().get(path), path)


@pytest.mark.parametrize("sample", ALL_SAMPLES, indirect=True)
def test_public_page_needs_no_sign_in(sample: Sample) -> None:
    client = sample.client()

    response = client.get("/public/")

    assert response.status == 200, response.body
    assert "Public notice board" in response.body and "not signed in" in response.body
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("sample", ALL_SAMPLES, indirect=True)
def test_sign_in_enroll_and_the_framework_sees_the_user(sample: Sample) -> None:
    client = sample.client()
    assert_middleware_redirect(client.get("/"), "/")

    signed_in(client)

    for path, title in [("/", "Home"), ("/admin/", "Administration"), ("/public/", "Public notice board")]:
        page = client.get(path)
        assert page.status == 200, (path, page.body)
        assert title in page.body and user_shown(page.body), (path, page.body)
        assert "forms + totp" in page.body and "groups: admins" in page.body, "the app reads mfa.identity"


@pytest.mark.parametrize("sample", ALL_SAMPLES, indirect=True)
@pytest.mark.parametrize("header", SPOOF_HEADERS)
def test_client_remote_user_header_never_signs_in(sample: Sample, header: str) -> None:
    client = sample.client()

    protected = client.request("GET", "/", headers={header: USERNAME})
    public = client.request("GET", "/public/", headers={header: USERNAME})

    assert_middleware_redirect(protected, "/")
    assert public.status == 200 and "not signed in" in public.body and not user_shown(public.body), public.body


@pytest.mark.parametrize("sample", [pytest.param("django", id="django")], indirect=True)
def test_django_user_comes_from_remote_user_middleware(sample: Sample) -> None:
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    users.filter(username=USERNAME).delete()  # the Django tables are shared by the session
    client = sample.client()

    signed_in(client)
    page = client.get("/")

    assert page.status == 200 and user_shown(page.body), page.body
    created = users.get(username=USERNAME)  # RemoteUserBackend created it from REMOTE_USER
    assert f"Django user #{created.pk}" in page.body
    assert "sessionid" in client.cookies, "RemoteUserMiddleware logged the user into Django's session"
    assert user_shown(client.get("/public/").body), "a public page still sees the signed-in user"

    sign_out(client)

    # Django's own session cookie is still sent, but without REMOTE_USER RemoteUserMiddleware signs it out.
    assert "sessionid" in client.cookies
    after = client.get("/public/")
    assert after.status == 200 and "not signed in" in after.body, after.body
    assert_middleware_redirect(client.get("/"), "/")


@pytest.mark.parametrize("sample", ASGI_PARAMS, indirect=True)
def test_asgi_request_user_and_auth(sample: Sample) -> None:
    client = sample.client()
    denied = client.request("GET", "/api/me", headers={"Accept": "application/json"})
    assert denied.status == 401, denied.body
    assert json.loads(denied.body)["error"] == "authentication_required"

    signed_in(client)
    me = client.request("GET", "/api/me", headers={"Accept": "application/json"})

    assert me.status == 200, me.body
    assert json.loads(me.body) == {"username": USERNAME, "display_name": DISPLAY_NAME,
                                   "scopes": ["authenticated", "mfa", "group:admins"], "level": 2,
                                   "methods": ["forms", "totp"]}
    assert f"({DISPLAY_NAME})" in client.get("/").body


def test_fastapi_add_middleware_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's alternative for FastAPI: ``app.add_middleware(ASGIMFAMiddleware, config=CONFIG)``."""
    config = prepare_store("fastapi", tmp_path, monkeypatch)
    api = FastAPI()

    @api.get("/")
    async def home(request: Request) -> dict[str, Any]:
        return {"user": request.user.username, "scopes": request.auth.scopes}

    api.add_middleware(ASGIMFAMiddleware, config=str(config))
    client = ASGIAgent("http://localhost", app=api)
    try:
        assert_middleware_redirect(client.get("/"), "/")
        signed_in(client)
        page = client.get("/")
    finally:
        stack = api.middleware_stack
        while stack is not None and not isinstance(stack, ASGIMFAMiddleware):
            stack = getattr(stack, "app", None)
        assert isinstance(stack, ASGIMFAMiddleware), "add_middleware put the middleware in the stack"
        stack.runtime.close()

    assert page.status == 200 and json.loads(page.body) == {"user": USERNAME,
                                                            "scopes": ["authenticated", "mfa", "group:admins"]}


# -- in-process: ASGI lifespan and the Starlette WebSocket ---------------------------------------------------------


@pytest.mark.parametrize("sample", ASGI_PARAMS, indirect=True)
def test_lifespan_passes_through_to_the_app(sample: Sample) -> None:
    inner = sample.asgi.app
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []
    started_while_running: list[bool] = []

    async def receive() -> Message:
        message = incoming.pop(0)
        if message["type"] == "lifespan.shutdown":
            started_while_running.append(getattr(inner.state, "started", False))  # type: ignore[attr-defined]
        return message

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    asyncio.run(asyncio.wait_for(sample.asgi(scope, receive, send), timeout=10))

    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"], sent
    assert started_while_running == [True], "the app's startup handler ran"
    assert inner.state.started is False, "and its shutdown handler"  # type: ignore[attr-defined]


def websocket_scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "scheme": "ws", "server": ("localhost", 80), "client": ("127.0.0.1", 50000), "root_path": "",
        "path": path, "raw_path": path.encode(), "query_string": b"", "subprotocols": [],
        "headers": [(b"host", b"localhost"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
                    (b"sec-websocket-version", b"13"), (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                    *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())],
    }


def websocket_session(app: ASGIApp, path: str, headers: dict[str, str], texts: list[str]) -> list[Message]:
    """Open a WebSocket to ``app`` by calling it: connect, send ``texts``, disconnect; returns what it sent."""
    incoming: list[Message] = [{"type": "websocket.connect"},
                               *({"type": "websocket.receive", "text": t} for t in texts),
                               {"type": "websocket.disconnect", "code": 1000}]
    sent: list[Message] = []

    async def receive() -> Message:
        assert incoming, "the app read past the client's disconnect"
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(websocket_scope(path, headers), receive, send), timeout=10))
    return sent


@pytest.mark.parametrize("sample", [pytest.param("starlette", id="starlette")], indirect=True)
@pytest.mark.parametrize("headers", [
    pytest.param({}, id="anonymous"),
    pytest.param({"Remote-User": USERNAME}, id="remote-user-header"),
    pytest.param({"Cookie": f"{SESSION_COOKIE}=not-a-session"}, id="forged-cookie"),
])
def test_websocket_without_a_session_is_closed_before_accept(sample: Sample, headers: dict[str, str]) -> None:
    sent = websocket_session(sample.asgi, "/ws/echo", headers, ["ping"])

    assert sent == [{"type": "websocket.close", "code": 1008}], sent


@pytest.mark.parametrize("sample", [pytest.param("starlette", id="starlette")], indirect=True)
def test_websocket_with_a_session_is_accepted_and_echoes_the_user(sample: Sample) -> None:
    client = sample.client()
    signed_in(client)
    cookie = f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"

    sent = websocket_session(sample.asgi, "/ws/echo", {"Cookie": cookie}, ["ping", "pong"])

    assert sent[0]["type"] == "websocket.accept", sent
    assert [m.get("text") for m in sent[1:]] == [f"hello {USERNAME}", f"{USERNAME}: ping", f"{USERNAME}: pong"]


@pytest.mark.parametrize("sample", [pytest.param("starlette", id="starlette")], indirect=True)
def test_websocket_user_object_is_the_middlewares(sample: Sample) -> None:
    """The WebSocket route reads ``websocket.user``: the middleware's MFAUser, with the identity."""
    seen: list[Any] = []
    asgi = sample.asgi
    inner = asgi.app

    async def spy(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
                  send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] == "websocket":
            seen.append(scope["user"])
        await inner(scope, receive, send)

    client = sample.client()
    signed_in(client)
    asgi.app = spy
    try:
        websocket_session(asgi, "/ws/echo", {"Cookie": f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"}, [])
    finally:
        asgi.app = inner

    assert len(seen) == 1 and isinstance(seen[0], MFAUser)
    assert seen[0].is_authenticated and seen[0].username == USERNAME and seen[0].display_name == DISPLAY_NAME


# -- real servers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    sample: str
    command: Callable[[int], list[str]]  # argv, given the port
    ready_marks: tuple[tuple[str, int], ...] = ()  # (text, how many times) the log shows once it has started


def uvicorn_argv(port: int) -> list[str]:
    return [str(BIN / "uvicorn"), "app:app", "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]


def gunicorn_argv(port: int) -> list[str]:
    return [str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5",
            "mysite.wsgi"]


def waitress_argv(port: int) -> list[str]:
    return [str(BIN / "waitress-serve"), "--host", "127.0.0.1", "--port", str(port), "app:app"]


SERVERS = [
    # --lifespan on: uvicorn refuses to start if the lifespan does not get through the middleware.
    pytest.param(ServerSpec("fastapi", uvicorn_argv, (("Application startup complete.", 1),)), id="fastapi-uvicorn"),
    pytest.param(ServerSpec("starlette", uvicorn_argv, (("Application startup complete.", 1),)),
                 id="starlette-uvicorn"),
    pytest.param(ServerSpec("django", gunicorn_argv, (("Booting worker with pid", 2),)), id="django-gunicorn"),
    pytest.param(ServerSpec("pyramid", waitress_argv), id="pyramid-waitress"),
]


@dataclass(frozen=True)
class RunningServer:
    spec: ServerSpec
    base: str
    log: Path

    def client(self) -> SocketAgent:
        return SocketAgent(self.base)


def answers(base: str) -> bool:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
    try:
        conn.request("GET", "/public/")
        with conn.getresponse() as raw:
            raw.read()
            return raw.status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def running(spec: ServerSpec, folder: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """Start ``spec``'s server in ``folder``; yield its base URL once it answers; stop it by its pid."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(spec.command(port), cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{spec.command(port)[0]} exited with {proc.returncode}:\n{log.read_text()}")
                text = log.read_text(errors="replace")
                if answers(base) and all(text.count(mark) >= n for mark, n in spec.ready_marks):
                    break
                if time.monotonic() >= deadline:
                    pytest.fail(f"{spec.command(port)[0]} did not start within {START_TIMEOUT} s:\n{text}")
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    spec: ServerSpec = request.param
    prepare_store(spec.sample, tmp_path, monkeypatch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    folder = SAMPLES_DIR / spec.sample
    if spec.sample == "django":
        env["DJANGO_DATABASE"] = str(tmp_path / "django.db")
        done = subprocess.run([sys.executable, "manage.py", "migrate", "--no-input"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    log = tmp_path / "server.log"
    with running(spec, folder, env, log) as base:
        yield RunningServer(spec, base, log)


def test_real_server_protects_the_sample(server: RunningServer) -> None:
    client = server.client()

    assert_middleware_redirect(client.get("/"), "/")
    assert_middleware_redirect(client.get("/admin/"), "/admin/")
    public = client.get("/public/")
    assert public.status == 200 and "not signed in" in public.body, public.body
    for header in ("Remote-User", "Remote_User", "X-Remote-User"):
        assert_middleware_redirect(client.request("GET", "/", headers={header: USERNAME}), "/")
        shown = client.request("GET", "/public/", headers={header: USERNAME})
        assert shown.status == 200 and "not signed in" in shown.body, (header, shown.body)
    assert SESSION_COOKIE not in client.cookies


def test_real_server_sign_in_reaches_the_framework_user(server: RunningServer) -> None:
    client = server.client()
    assert_middleware_redirect(client.get("/admin/"), "/admin/")

    signed_in(client, "/admin/")

    # Several requests: under gunicorn they are spread over both workers, which share the store and the keys.
    for path in ["/", "/admin/", "/public/", "/", "/admin/", "/"]:
        page = client.get(path)
        assert page.status == 200 and user_shown(page.body), (path, page.body)
    if server.spec.sample == "django":
        assert "Django user #" in client.get("/").body, "request.user is a Django user (RemoteUserBackend)"
    if server.spec.sample in ASGI_SAMPLES:
        me = client.request("GET", "/api/me", headers={"Accept": "application/json"})
        assert me.status == 200 and json.loads(me.body)["username"] == USERNAME, me.body
    sign_out(client)
    assert_middleware_redirect(client.get("/"), "/")


def test_real_websocket_through_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Starlette sample under uvicorn: an anonymous WebSocket handshake gets 403 (closed before accept);
    with the session cookie of a full sign-in it is accepted and greets the user."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    prepare_store("starlette", tmp_path, monkeypatch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    spec = ServerSpec("starlette", uvicorn_argv, (("Application startup complete.", 1),))
    with running(spec, SAMPLES_DIR / "starlette", env, tmp_path / "server.log") as base:
        ws_url = base.replace("http://", "ws://") + "/ws/echo"
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, open_timeout=10).close()
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            connect(ws_url, additional_headers={"Remote-User": USERNAME}, open_timeout=10).close()
        client = SocketAgent(base)
        signed_in(client, "/")
        cookie = f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"
        with connect(ws_url, additional_headers={"Cookie": cookie}, open_timeout=10) as ws:
            assert ws.recv(timeout=10) == f"hello {USERNAME}"
            ws.send("ping")
            assert ws.recv(timeout=10) == f"{USERNAME}: ping"
