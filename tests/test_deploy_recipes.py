"""samples/deploy/ (issue 13): what can be checked on this machine, checked.

- the systemd unit: ``systemd-analyze verify`` (with the venv's console script in place of the install path),
  no unknown or ignored keys, and the hardening options the README promises;
- the nginx upstream: ``nginx -t`` with a temporary prefix; then the same file for real, in front of two
  ``mfa-middleware serve`` processes: ``/_mfa/health`` and ``/_mfa/ready`` answer through it, and still do when
  one server is gone;
- the Containerfile: every ``COPY`` source exists, the user is not root, the base image is a slim Python, the
  ``HEALTHCHECK`` asks ``/_mfa/health`` on the port the server listens on, and its command, run against a real
  ``serve``, exits 0; the container's ``mfa.toml`` loads.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfa_middleware.config import config_from_dict
from tests.e2e.test_nginx import (BIN, Process, cli_env, distinct_ports, fetch, nginx_binary, run_admin,
                                  start_serve, wait_until)
from tests.support.components import require_component

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "samples" / "deploy"
INSTALL_BIN = "/opt/mfa-middleware/venv/bin"
HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes", "ProtectHome=yes", "PrivateTmp=yes",
             "CapabilityBoundingSet=", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
             "SystemCallFilter=@system-service"]


# -- systemd -----------------------------------------------------------------------------------------------------
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        require_component("systemd", "systemd-analyze not found (apt-get install systemd)")
    text = (DEPLOY / "mfa-middleware.service").read_text()
    assert INSTALL_BIN in text
    unit = tmp_path / "mfa-middleware.service"
    unit.write_text(text.replace(INSTALL_BIN, str(BIN)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Unknown" not in output and "ignoring" not in output, output
    for option in HARDENING:
        assert re.search(rf"^{re.escape(option)}$", text, re.MULTILINE), option
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    args = shlex.split(exec_start.removeprefix("ExecStart="))
    assert args[1:3] == ["serve", "--config"]


# -- nginx ---------------------------------------------------------------------------------------------------------
def nginx_main(prefix: Path, include: Path) -> str:
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {include};
}}
"""


@pytest.fixture
def nginx_prefix() -> Iterator[Path]:
    prefix = Path(tempfile.mkdtemp(prefix="mfa-deploy-nginx-"))
    prefix.chmod(0o755)
    (prefix / "tmp").mkdir()
    try:
        yield prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def test_the_nginx_upstream_passes_nginx_t(nginx_prefix: Path) -> None:
    binary = nginx_binary()
    include = nginx_prefix / "upstream.conf"
    include.write_text((DEPLOY / "nginx-upstream.conf").read_text())
    (nginx_prefix / "nginx.conf").write_text(nginx_main(nginx_prefix, include))
    done = subprocess.run([binary, "-t", "-p", str(nginx_prefix), "-c", str(nginx_prefix / "nginx.conf")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    text = include.read_text()
    assert text.count("max_fails=") >= 2 and "proxy_next_upstream" in text
    assert "location = /_mfa/ready" in text and "location = /_mfa/health" in text


def test_health_and_ready_through_the_nginx_upstream(nginx_prefix: Path) -> None:
    """Two `serve` servers on one store behind the sample upstream: both endpoints answer through nginx, and go on
    answering when one server stops (nginx passes the request to the other)."""
    binary = nginx_binary()
    config = nginx_prefix / "mfa.toml"
    config.write_text('secret_keys = ["env:MFA_SECRET_KEY"]\nencryption_key = "env:MFA_ENCRYPTION_KEY"\n'
                      'database = "sqlite:///mfa.db"\ntrusted_proxies = ["127.0.0.1"]\n'
                      '[[rules]]\npath = "/*"\npolicy = "two_factor"\n')
    env = cli_env()
    run_admin(config, env, "db", "upgrade")
    listen, first_port, second_port = distinct_ports(3)
    processes: list[Process] = []
    try:
        for port in (first_port, second_port):
            processes.append(start_serve(config, env, port, nginx_prefix / f"serve-{port}.out"))
        text = (DEPLOY / "nginx-upstream.conf").read_text()
        servers = re.findall(r"^    server 10\.0\.0\.\d+:9091 .*;$", text, re.MULTILINE)
        assert len(servers) == 3
        text = text.replace(servers[0], f"    server 127.0.0.1:{first_port} max_fails=3 fail_timeout=10s;")
        text = text.replace(servers[1], f"    server 127.0.0.1:{second_port} max_fails=3 fail_timeout=10s;")
        text = text.replace(servers[2], "")
        text = text.replace("listen 127.0.0.1:8081;", f"listen 127.0.0.1:{listen};")
        include = nginx_prefix / "upstream.conf"
        include.write_text(text)
        (nginx_prefix / "nginx.conf").write_text(nginx_main(nginx_prefix, include))
        nginx = Process.start("nginx", [binary, "-p", str(nginx_prefix), "-c", str(nginx_prefix / "nginx.conf"),
                                        "-g", "daemon off;"], nginx_prefix / "nginx.out")
        processes.append(nginx)
        wait_until("nginx", lambda: _answers(listen), timeout=30, alive=nginx.alive,
                   details=lambda: (nginx_prefix / "error.log").read_text(errors="replace")
                   if (nginx_prefix / "error.log").exists() else "")
        for _ in range(4):  # round robin: both servers answer
            assert (fetch(listen, "/_mfa/health").status, fetch(listen, "/_mfa/health").body) == (200, "ok\n")
            ready = fetch(listen, "/_mfa/ready")
            assert (ready.status, ready.body, ready.header("Cache-Control")) == (200, "ready\n", "no-store")
        processes[0].stop()
        for _ in range(4):
            assert fetch(listen, "/_mfa/health").status == 200
            assert fetch(listen, "/_mfa/ready").status == 200
    finally:
        for process in reversed(processes):
            process.stop()


def _answers(port: int) -> bool:
    try:
        fetch(port, "/_mfa/health")
    except OSError:
        return False
    return True


# -- the container recipe --------------------------------------------------------------------------------------------
def containerfile() -> str:
    return (DEPLOY / "Containerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_containerfile_copies_files_that_exist() -> None:
    for word, rest in instructions(containerfile()):
        if word == "COPY":
            *sources, _target = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source


def test_the_container_runs_as_non_root_on_a_slim_python() -> None:
    steps = instructions(containerfile())
    base = next(rest for word, rest in steps if word == "FROM")
    assert re.fullmatch(r"python:3\.\d+-slim", base), base
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users


def test_the_health_check_asks_health_on_the_served_port() -> None:
    steps = instructions(containerfile())
    health = next(rest for word, rest in steps if word == "HEALTHCHECK")
    entry = next(rest for word, rest in steps if word == "ENTRYPOINT")
    port = entry.split('"--port", "')[1].split('"')[0]
    assert f"http://127.0.0.1:{port}/_mfa/health" in health
    assert ("EXPOSE", port) in steps
    assert '"/opt/venv/bin/mfa-middleware", "serve"' in entry


def test_the_health_check_command_passes_against_a_real_server(tmp_path: Path) -> None:
    """The HEALTHCHECK's own command, pointed at a `serve` on a free port, exits 0."""
    health = next(rest for word, rest in instructions(containerfile()) if word == "HEALTHCHECK")
    command = re.search(r"CMD (\[.*\])$", health)
    assert command is not None
    import json

    argv = json.loads(command.group(1))
    config = tmp_path / "mfa.toml"
    config.write_text('secret_keys = ["env:MFA_SECRET_KEY"]\nencryption_key = "env:MFA_ENCRYPTION_KEY"\n'
                      'database = "sqlite:///mfa.db"\ntrusted_proxies = ["127.0.0.1"]\n')
    env = cli_env()
    run_admin(config, env, "db", "upgrade")
    (port,) = distinct_ports(1)
    server = start_serve(config, env, port, tmp_path / "serve.out")
    try:
        argv = [sys.executable if a == "/opt/venv/bin/python" else a.replace(":9091/", f":{port}/") for a in argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        server.stop()


def test_the_container_configuration_loads() -> None:
    import tomllib

    data = tomllib.loads((DEPLOY / "mfa.toml").read_text())
    config = config_from_dict(data, source="samples/deploy/mfa.toml", environ={
        "MFA_SECRET_KEY": "s" * 48, "MFA_ENCRYPTION_KEY": "x" * 43 + "=",
        "MFA_DATABASE_URL": "postgresql+psycopg://mfa@db/mfa"})
    assert config.database.startswith("postgresql+psycopg://")
    assert config.store.pool_size == 5
