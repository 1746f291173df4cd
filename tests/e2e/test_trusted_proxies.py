"""Issue 7, finding 6: ``trusted_proxies`` works behind every server the README names, and cannot be spoofed.

Each server is started as the README (or the sample) says, as a child process on a free port of 127.0.0.1,
stopped by its pid at the end (``PYTHONPATH`` names where the app is imported from), with a throwaway SQLite store
and ``[lockout] max_failures_per_client = 3``:

- ``mfa-middleware serve`` (forward auth on waitress);
- ``waitress.serve(app, **waitress_options(config))`` (``python -m tests.e2e.proxy_app``), once with one proxy
  address (waitress's own check) and once with networks (the middleware's check);
- ``waitress-serve`` with the options of ``samples/iis/web.config.httpplatform``, read from that file, serving
  ``samples/iis/app.py``; the proxy sends the client as ``address:port``, as HttpPlatformHandler does;
- ``gunicorn --forwarded-allow-ips 127.0.0.1``;
- ``uvicorn --forwarded-allow-ips 127.0.0.1`` (its proxy headers on, the default) and ``--no-proxy-headers``.

"The proxy" is this test connecting from 127.0.0.1 (listed in ``trusted_proxies``) with ``X-Forwarded-For``
and ``X-Forwarded-Proto`` as nginx sets them; "an attacker" connects from 127.0.0.2 (a loopback address that is
not listed; Linux routes all of 127/8 to the loopback interface) with the same headers. Every request is a
fresh ``http.client`` connection whose socket is bound to that source address; no redirect is followed.

Through the proxy, failed sign-ins from client A lock A out and never B, and ``X-Forwarded-Proto: https`` gives
``Secure``, ``__Host-`` cookies. From the attacker, neither header counts: its failures are counted against
127.0.0.2 whatever address it claims, and its cookies are neither ``Secure`` nor ``__Host-``.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shlex
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography.fernet import Fernet

from mfa_middleware.config import load_config
from mfa_middleware.runtime import Runtime
from tests.e2e.test_nginx import BIN, STARTUP_TIMEOUT, Process, answers_http, wait_until
from tests.support.mfa import FAST_HASHER
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
IIS_DIR = ROOT / "samples" / "iis"
PROXY = "127.0.0.1"  # listed in trusted_proxies
ATTACKER = "127.0.0.2"  # a loopback address that is not
PASSWORD = "correct horse battery staple"
CLIENT_LIMIT = 3  # [lockout] max_failures_per_client


@dataclass(frozen=True)
class Spec:
    """How one server is started: ``argv(port, config)``, its working folder, and how its proxy writes
    ``X-Forwarded-For`` (nginx: the bare address; IIS HttpPlatformHandler: ``address:port``)."""

    argv: Callable[[int, Path], list[str]]
    trusted_proxies: tuple[str, ...] = (PROXY,)
    pythonpath: Path = ROOT  # where the app module is imported from
    forwarded_for: Callable[[str], str] = str
    echoes_client: bool = True  # the app is proxy_app, which shows the client address and scheme it got


def serve_argv(port: int, config: Path) -> list[str]:
    return [str(BIN / "mfa-middleware"), "serve", "--config", str(config), "--host", "127.0.0.1", "--port",
            str(port), "--workers", "4"]


def waitress_app_argv(port: int, config: Path) -> list[str]:
    return [sys.executable, "-m", "tests.e2e.proxy_app", str(port)]


def iis_argv(port: int, config: Path) -> list[str]:
    """``waitress-serve`` with exactly the arguments of samples/iis/web.config.httpplatform."""
    platform = ET.parse(IIS_DIR / "web.config.httpplatform").getroot().find("./system.webServer/httpPlatform")
    assert platform is not None
    arguments = platform.get("arguments", "").replace("%HTTP_PLATFORM_PORT%", str(port))
    return [str(BIN / "waitress-serve"), *shlex.split(arguments)]


def gunicorn_argv(port: int, config: Path) -> list[str]:
    return [str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5",
            "--forwarded-allow-ips", PROXY, "tests.e2e.proxy_app:wsgi_app"]


def uvicorn_argv(*extra: str) -> Callable[[int, Path], list[str]]:
    def argv(port: int, config: Path) -> list[str]:
        return [str(BIN / "uvicorn"), "tests.e2e.proxy_app:asgi_app", "--host", "127.0.0.1", "--port", str(port),
                *extra]
    return argv


SERVERS = [
    pytest.param(Spec(serve_argv, echoes_client=False), id="mfa-middleware-serve"),
    pytest.param(Spec(waitress_app_argv), id="waitress-one-proxy"),
    pytest.param(Spec(waitress_app_argv, trusted_proxies=("127.0.0.0/31", "192.0.2.0/24")), id="waitress-networks"),
    pytest.param(Spec(iis_argv, pythonpath=IIS_DIR, forwarded_for=lambda client: f"{client}:51861",
                      echoes_client=False),
                 id="iis-httpplatform-waitress"),
    pytest.param(Spec(gunicorn_argv), id="gunicorn"),
    pytest.param(Spec(uvicorn_argv("--forwarded-allow-ips", PROXY)), id="uvicorn-proxy-headers"),
    pytest.param(Spec(uvicorn_argv("--no-proxy-headers")), id="uvicorn-no-proxy-headers"),
]

APP_SERVERS = [p for p in SERVERS if isinstance(spec := p.values[0], Spec) and spec.echoes_client]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def set_cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


@dataclass
class Agent:
    """A user agent at ``source`` (the proxy's address or the attacker's) that keeps its cookies and adds
    ``headers`` (the forwarded headers) to every request."""

    port: int
    source: str
    headers: dict[str, str]
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
        headers = {"Accept": "text/html", **self.headers}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30, source_address=(self.source, 0))
        try:
            conn.request(method, path, body=body, headers=headers)
            with conn.getresponse() as raw:
                reply = Reply(raw.status, raw.headers, raw.read().decode("utf-8", "replace"))
        finally:
            conn.close()
        for cookie in reply.set_cookies:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            if value:
                self.cookies[name.strip()] = value
            else:
                self.cookies.pop(name.strip(), None)
        return reply

    def sign_in(self, username: str, password: str) -> Reply:
        form = self.request("GET", "/_mfa/login?next=/")
        assert form.status == 200, form.body
        match = re.search(r'name="csrf_token" value="([^"]+)"', form.body)
        assert match, form.body
        return self.request("POST", "/_mfa/login", {"username": username, "password": password, "next": "/",
                                                     "csrf_token": match.group(1)})


def signed_in(reply: Reply) -> bool:
    """The password was accepted: on to setting up the second factor (whatever a refusal looks like)."""
    return reply.status == 303 and reply.headers.get("Location", "").endswith("/_mfa/enroll")


@dataclass(frozen=True)
class Running:
    spec: Spec
    port: int
    process: Process

    def behind_proxy(self, client: str, proto: str = "http") -> Agent:
        return Agent(self.port, PROXY, {"X-Forwarded-For": self.spec.forwarded_for(client),
                                        "X-Forwarded-Proto": proto})

    def attacker(self, claimed_client: str, proto: str = "http") -> Agent:
        return Agent(self.port, ATTACKER, {"X-Forwarded-For": self.spec.forwarded_for(claimed_client),
                                           "X-Forwarded-Proto": proto})

    def fail_sign_ins(self, agent: Agent, times: int) -> None:
        for _ in range(times):
            reply = agent.sign_in("nobody", "wrong password")
            assert not signed_in(reply), reply.body


def write_config(folder: Path, trusted_proxies: tuple[str, ...]) -> Path:
    path = folder / "mfa.toml"
    proxies = ", ".join(f'"{p}"' for p in trusted_proxies)
    path.write_text(f'''secret_keys = ["{secrets.token_urlsafe(48)}"]
encryption_key = "{Fernet.generate_key().decode()}"
database = "sqlite:///mfa.db"
default_policy = "deny"
trusted_proxies = [{proxies}]

[lockout]
max_failures_per_client = {CLIENT_LIMIT}

[[rules]]
path = "/public/*"
policy = "bypass"

[[rules]]
path = "/*"
policy = "two_factor"
''', encoding="utf-8")
    runtime = Runtime(load_config(path), password_hasher=FAST_HASHER)
    try:
        runtime.store.upgrade()
        for name in ("alice", "bob", "carol"):
            runtime.accounts.add(name, actor="test", password=PASSWORD)
    finally:
        runtime.close()
    return path


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    spec: Spec = request.param
    folder = tmp_path_factory.mktemp("proxy")
    config = write_config(folder, spec.trusted_proxies)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFA_")}
    env.update(MFA_CONFIG=str(config), PYTHONPATH=str(spec.pythonpath))
    port = free_port()
    argv = spec.argv(port, config)
    process = Process.start(Path(argv[0]).name, argv, folder / "server.log", env)
    try:
        wait_until(process.name, answers_http(port, "/_mfa/login"), timeout=STARTUP_TIMEOUT, alive=process.alive,
                   details=process.text)
        yield Running(spec, port, process)
    finally:
        process.stop()


def test_failures_of_one_client_never_lock_out_another_behind_the_proxy(server: Running) -> None:
    a, b = server.behind_proxy("198.51.100.10"), server.behind_proxy("198.51.100.20")
    server.fail_sign_ins(a, CLIENT_LIMIT)

    refused = a.sign_in("alice", PASSWORD)
    assert not signed_in(refused), "client A's failures were not counted against A"
    other = b.sign_in("alice", PASSWORD)
    assert signed_in(other), f"client B was locked out by client A's failures: {other.status}\n{server.process.text()}"


def test_forwarded_https_gives_secure_host_cookies(server: Running) -> None:
    reply = server.behind_proxy("198.51.100.30", proto="https").request("GET", "/_mfa/login?next=/")
    assert reply.status == 200, reply.body
    assert reply.set_cookies, "the login form sets its anonymous cookie"
    for cookie in reply.set_cookies:
        assert cookie.startswith("__Host-"), cookie
        assert "; Secure" in cookie, cookie


@pytest.mark.parametrize("server", APP_SERVERS, indirect=True)
def test_the_app_sees_the_client_and_https(server: Running) -> None:
    reply = server.behind_proxy("198.51.100.40", proto="https").request("GET", "/public/x")
    assert reply.status == 200 and reply.body.strip() == "client=198.51.100.40 scheme=https", reply.body
    attacker = server.attacker("198.51.100.40", proto="https").request("GET", "/public/x")
    assert attacker.status == 200 and attacker.body.strip() == f"client={ATTACKER} scheme=http", attacker.body


def test_untrusted_peer_cannot_get_https_cookies(server: Running) -> None:
    reply = server.attacker("198.51.100.50", proto="https").request("GET", "/_mfa/login?next=/")
    assert reply.status == 200, reply.body
    assert reply.set_cookies
    for cookie in reply.set_cookies:
        assert not cookie.startswith("__Host-") and "; Secure" not in cookie, cookie


def test_untrusted_peer_cannot_choose_its_client_address(server: Running) -> None:
    # An attacker claiming ever new addresses is still counted as itself, and cannot pin its failures on
    # a client behind the proxy: after the limit it is locked whatever it claims, and that client is not.
    victim = "198.51.100.60"
    for claimed in ("203.0.113.1", "203.0.113.2", victim)[:CLIENT_LIMIT]:
        server.fail_sign_ins(server.attacker(claimed), 1)

    still_claiming = server.attacker("203.0.113.99").sign_in("bob", PASSWORD)
    assert not signed_in(still_claiming), "the attacker escaped its lockout by claiming another address"
    assert signed_in(server.behind_proxy(victim).sign_in("bob", PASSWORD)), "the attacker locked out its victim"


@pytest.mark.parametrize("server", SERVERS[:1], indirect=True)
def test_forward_auth_refuses_an_untrusted_peer_and_answers_the_proxy(server: Running) -> None:
    asked = {"X-Original-URI": "/public/x", "X-Original-Method": "GET"}
    proxy = Agent(server.port, PROXY, {**asked, "X-Forwarded-For": "198.51.100.70"})
    assert proxy.request("GET", "/_mfa/auth/nginx").status == 200
    attacker = Agent(server.port, ATTACKER, {**asked, "X-Forwarded-For": "198.51.100.70"})
    assert attacker.request("GET", "/_mfa/auth/nginx").status == 403
