"""`mfa-middleware demo`: a sample app behind the middleware on a fresh SQLite store."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyotp

from mfa_middleware.demo import prepare_demo
from tests.support.mfa import Browser, csrf_of, secret_of
from tests.support.servers import free_port


def test_prepare_demo_signs_in_and_enrolls(tmp_path: Path) -> None:
    mw, password = prepare_demo(tmp_path)
    browser = Browser(mw)
    assert browser.get("/").status_code == 302
    assert browser.login("demo", password).headers["Location"] == "/_mfa/enroll"
    start = browser.get("/_mfa/enroll")
    browser.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
    page = browser.get("/_mfa/enroll")
    code = pyotp.TOTP(secret_of(page.text)).now()
    done = browser.post("/_mfa/enroll", {"action": "confirm", "code": code, "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303
    home = browser.get("/")
    assert "Signed in as <strong>demo</strong>" in home.text
    mw.runtime.close()
    # Running the demo again on the same folder gives a new password and a fresh enrollment.
    again, new_password = prepare_demo(tmp_path)
    assert new_password != password
    user = again.runtime.store.get_user("demo")
    assert user is not None and user.state == "enabled" and again.runtime.store.list_methods(user.id) == []
    again.runtime.close()


def test_demo_command_serves_over_http(tmp_path: Path) -> None:
    port = free_port()
    exe = shutil.which("mfa-middleware", path=str(Path(sys.executable).parent)) or "mfa-middleware"
    proc = subprocess.Popen([exe, "demo", "--port", str(port), "--data-dir", str(tmp_path / "demo")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("Password"):
                break
        text = "".join(lines)
        assert f"http://localhost:{port}/" in text and re.search(r"Username\s+demo", text), text
        deadline = time.monotonic() + 30
        while True:  # wait until the server accepts connections (bounded)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the demo server did not start"
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 302 and response.getheader("Location") == "/_mfa/login?next=/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
