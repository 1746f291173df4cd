"""`mfa-middleware demo`: a sample app behind the middleware on a fresh SQLite store.

The command is run as a person runs it: a subprocess of the installed script, its temporary folder under the
test's own ``TMPDIR`` (so a folder left behind shows up here), and a ``PATH`` without the virtual environment, as
for someone who only ran the README's first command. Requests go over real sockets; ``curl`` is the real one.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyotp
import pytest
from click.testing import CliRunner

from mfa_middleware.cli import (
    DEMO_WIDTH,
    _demo_command,
    _demo_request_line,
    main,
    write_starter_config,
)
from mfa_middleware.demo import MARKER, DemoError, demo_app, demo_code, prepare_demo
from tests.support.components import require_component
from tests.support.mfa import Browser, csrf_of, secret_of
from tests.support.servers import free_port

BIN = Path(sys.executable).parent
EXE = shutil.which("mfa-middleware", path=str(BIN)) or "mfa-middleware"
BANNER_END = "Press Ctrl-C to stop."


def person_env(tmp: Path) -> dict[str, str]:
    """The environment of a person who did not activate the virtual environment; temp files go to ``tmp``."""
    tmp.mkdir(exist_ok=True)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
    return {**os.environ, "PATH": path, "TMPDIR": str(tmp), "COLUMNS": "200", "NO_COLOR": "1"}


class DemoProcess:
    """A running ``mfa-middleware demo``; its output (stdout and stderr) is read line by line in a thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([EXE, "demo", *args], cwd=cwd, env=env, text=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, last: str, timeout: float = 60) -> list[str]:
        """Lines up to and including the first equal to ``last`` (bounded: fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"the demo printed no {last!r} within {timeout} s:\n" + "\n".join(self.seen))
            if line is None:
                pytest.fail(f"the demo ended before {last!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if line == last:
                return self.seen[start:]

    def rest(self, timeout: float = 30) -> list[str]:
        """Everything printed until the process ended (it must end within ``timeout`` seconds)."""
        self.proc.wait(timeout=timeout)
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.seen.append(line)
        return self.seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


@contextmanager
def running_demo(tmp_path: Path, *args: str) -> Iterator[tuple[DemoProcess, list[str]]]:
    """The demo started in ``tmp_path`` (its temporary folder in ``tmp_path/tmp``, so the banner shows it as a
    short relative path); yields the process and its banner (everything before serving)."""
    demo = DemoProcess(list(args), tmp_path, person_env(tmp_path / "tmp"))
    try:
        yield demo, demo.read_until(BANNER_END)
    finally:
        demo.stop()


def banner_value(banner: list[str], label: str) -> str:
    for line in banner:
        if line.strip().startswith(label):
            return line.split(None, 1)[1].strip()
    raise AssertionError(f"no {label!r} in the banner:\n" + "\n".join(banner))


def banner_command(banner: list[str], after: str) -> str:
    """The shell command printed on the lines after the one ending with ``after`` (continuations joined)."""
    index = next(i for i, line in enumerate(banner) if line.endswith(after)) + 1
    parts = []
    while banner[index].endswith("\\"):
        parts.append(banner[index][:-1])
        index += 1
    parts.append(banner[index])
    return " ".join(p.strip() for p in parts)


def require_curl() -> str:
    curl = shutil.which("curl")
    if curl is None:
        require_component("curl", "curl is not installed (apt-get install curl)")
    return str(curl)


# -- the folder and the app -----------------------------------------------------------------------------------
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
    assert not user.is_admin and user.groups == ("admins",)  # an administrator could not have app passwords
    again.runtime.close()


def test_prepare_demo_refuses_a_folder_with_a_real_config(tmp_path: Path) -> None:
    """--data-dir pointed at an installation must not add a `demo` user to its store or reset anyone."""
    write_starter_config(tmp_path / "mfa.toml", database="sqlite:///mfa.db")
    with pytest.raises(DemoError, match="did not make"):
        prepare_demo(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mfa.toml"]  # no store made, no marker written


def test_demo_config_has_a_basic_route(tmp_path: Path) -> None:
    mw, _password = prepare_demo(tmp_path)
    try:
        rules = mw.runtime.config.rules
        assert rules[0].path == "/dav/*" and rules[0].basic and rules[0].policy == "two_factor"
        assert all(not rule.basic for rule in rules[1:])
    finally:
        mw.runtime.close()


def test_demo_code_follows_the_enrollment_and_skips_a_used_code(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="not a folder made by"):
        demo_code(tmp_path)
    mw, password = prepare_demo(tmp_path)
    try:
        with pytest.raises(DemoError, match="no authenticator app yet"):
            demo_code(tmp_path)
        browser = Browser(mw)
        browser.login("demo", password)
        start = browser.get("/_mfa/enroll")
        browser.post("/_mfa/enroll", {"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
        page = browser.get("/_mfa/enroll")
        totp = pyotp.TOTP(secret_of(page.text))
        now = time.time()
        shown = demo_code(tmp_path, now)
        assert shown.code == totp.at(now) and not shown.confirmed and 0 <= shown.seconds_left <= 30
        done = browser.post("/_mfa/enroll", {"action": "confirm", "code": shown.code,
                                             "csrf_token": csrf_of(page.text)})
        assert done.status_code == 303
        # The current code was used by the enrollment: the helper gives the next one, which signs in now.
        after = demo_code(tmp_path, now)
        assert after.confirmed and after.code == totp.at(now + 30)
        again = Browser(mw)
        again.login("demo", password)
        assert again.verify(after.code).status_code == 303
    finally:
        mw.runtime.close()


def test_demo_code_command_refuses_other_folders(tmp_path: Path) -> None:
    write_starter_config(tmp_path / "mfa.toml", database="sqlite:///mfa.db")
    result = CliRunner().invoke(main, ["demo-code", str(tmp_path)])
    assert result.exit_code == 1 and "not a folder made by `mfa-middleware demo`" in result.output
    assert not (tmp_path / "mfa.db").exists()
    tmp_path.joinpath("mfa.toml").unlink()
    prepare_demo(tmp_path)[0].runtime.close()
    result = CliRunner().invoke(main, ["demo-code", str(tmp_path)])
    assert result.exit_code == 1 and "no authenticator app yet" in result.output
    assert all(len(line) <= DEMO_WIDTH for line in result.output.splitlines()), result.output


def test_demo_app_answers_the_basic_route_in_plain_text() -> None:
    statuses: list[str] = []
    body = b"".join(demo_app({"PATH_INFO": "/dav/notes.txt"}, lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"] and body == b"Contoso files: nobody is signed in.\n"


# -- what it prints ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("words", [
    pytest.param([".venv/bin/mfa-middleware", "demo-code", "/tmp/mfa-demo-abcd1234"], id="short"),
    pytest.param(["/home/someone/projects/work/mfa_middleware/.venv/bin/mfa-admin", "--config",
                  "/var/folders/x4/c8r9zz1d5bq2w1_9m8h0000gn/T/mfa-demo-abcd1234/mfa.toml", "user", "list"],
                 id="long-paths"),
    pytest.param(["/home/some one/My Projects/.venv/bin/mfa-middleware", "demo-code", "/tmp/with space"],
                 id="spaces"),
])
def test_printed_commands_fit_and_still_run(words: list[str]) -> None:
    lines = _demo_command(words)
    assert all(len(line) <= DEMO_WIDTH for line in lines), lines
    assert shlex.split(" ".join(line.rstrip("\\") for line in lines)) == words


def test_a_word_longer_than_a_line_stays_whole() -> None:
    words = ["mfa-admin", "--config", "/" + "x" * 90 + "/mfa.toml", "user", "list"]
    lines = _demo_command(words)
    assert shlex.split(" ".join(line.rstrip("\\") for line in lines)) == words


@pytest.mark.parametrize(("target", "expected"), [
    pytest.param("/", r"\d\d:\d\d:\d\d 302 GET /", id="short"),
    pytest.param("/_mfa/login?next=/" + "a" * 200, r"\d\d:\d\d:\d\d 302 GET /_mfa/login\?next=/a+\.\.\.",
                 id="long-is-cut"),
    pytest.param("/\x1b[31mred", r"\d\d:\d\d:\d\d 302 GET /\\x1b\[31mred", id="control-characters-escaped"),
])
def test_request_log_lines_fit(target: str, expected: str) -> None:
    line = _demo_request_line("GET", target, "302")
    assert len(line) <= DEMO_WIDTH and re.fullmatch(expected, line), line


# -- the command, end to end -----------------------------------------------------------------------------------
def test_demo_command_basic_route_works_with_an_app_password_made_in_the_demo(tmp_path: Path) -> None:
    """What the banner says works: the URL, the password, the code helper, the curl line with an app password."""
    curl = require_curl()
    port = free_port()
    with running_demo(tmp_path, "--port", str(port)) as (demo, banner):
        too_long = [line for line in banner if len(line) > DEMO_WIDTH]
        assert not too_long, too_long
        url = banner_value(banner, "Open")
        assert url == f"http://localhost:{port}/" and banner_value(banner, "Username") == "demo"
        password = banner_value(banner, "Password")
        folders = list((tmp_path / "tmp").iterdir())
        assert len(folders) == 1 and (folders[0] / MARKER).is_file()

        with httpx.Client(base_url=url, timeout=10) as web:
            assert web.get("/").headers["location"] == "/_mfa/login?next=/"
            login = web.get("/_mfa/login?next=/")
            signed = web.post("/_mfa/login", data={"username": "demo", "password": password, "next": "/",
                                                    "csrf_token": csrf_of(login.text)})
            assert signed.headers["location"] == "/_mfa/enroll", signed.text
            start = web.get("/_mfa/enroll")
            web.post("/_mfa/enroll", data={"action": "start", "method": "totp", "csrf_token": csrf_of(start.text)})
            page = web.get("/_mfa/enroll")
            # The printed helper, run by the shell of a person whose PATH does not have the venv.
            helper = subprocess.run(banner_command(banner, "this prints the current code:"), shell=True,
                                    cwd=tmp_path, env=person_env(tmp_path / "tmp"), capture_output=True,
                                    text=True, timeout=60, check=False)
            assert helper.returncode == 0, helper.stderr
            code = helper.stdout.strip()
            assert re.fullmatch(r"\d{6}", code) and "Accepted for at least" in helper.stderr
            done = web.post("/_mfa/enroll", data={"action": "confirm", "code": code,
                                                  "csrf_token": csrf_of(page.text)})
            assert done.status_code == 303, done.text
            assert "Signed in as <strong>demo</strong>" in web.get("/").text
            form = web.get("/_mfa/app-passwords", follow_redirects=True)  # the app passwords of security info
            created = web.post("/_mfa/app-passwords", data={"action": "create", "label": "curl",
                                                            "csrf_token": csrf_of(form.text)})
            match = re.search(r'<code class="secret" id="app-password">([a-z ]+)</code>', created.text)
            assert match, created.text
            app_password = match.group(1)

        printed = banner_command(banner, "then try it:")
        assert printed == f"curl -u 'demo:APP PASSWORD' {url}dav/"
        argv = [curl, "-sS", "-w", "\n%{http_code}"] + shlex.split(printed.replace("APP PASSWORD", app_password))[1:]
        answer = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert answer.stdout == "Contoso files: signed in as demo with app_password.\n\n200", answer
        # Now that demo has an authenticator app, its main password no longer opens the Basic route.
        refused = subprocess.run([curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-u",
                                  f"demo:{password}", f"{url}dav/"], capture_output=True, text=True, timeout=30,
                                 check=False)
        assert refused.stdout == "401"

        demo.proc.send_signal(signal.SIGTERM)
        rest = demo.rest()
        assert list((tmp_path / "tmp").iterdir()) == [], "the demo left its folder with secret keys behind"
        too_long = [line for line in rest if len(line) > DEMO_WIDTH]
        assert not too_long, too_long


@pytest.mark.parametrize("sig", [
    pytest.param(signal.SIGINT, id="ctrl-c"),
    pytest.param(signal.SIGTERM, id="sigterm"),
    pytest.param(signal.SIGHUP, id="sighup-terminal-closed"),
])
def test_demo_removes_its_temporary_folder_when_stopped(tmp_path: Path, sig: signal.Signals) -> None:
    with running_demo(tmp_path, "--port", "0") as (demo, banner):
        shown = banner_command(banner, "(removed when the demo stops):")
        folder = tmp_path / shown
        assert folder.parent == tmp_path / "tmp" and (folder / "mfa.toml").is_file()
        url = banner_value(banner, "Open")
        assert httpx.get(url, timeout=10).status_code == 302  # serving (--port 0 printed the port it got)
        demo.proc.send_signal(sig)
        rest = demo.rest()
        assert not folder.exists(), rest
        assert f"Demo stopped; removed {shown}." in rest


def test_demo_keeps_a_data_dir_it_was_given(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    with running_demo(tmp_path, "--port", "0", "--data-dir", str(kept)) as (demo, banner):
        assert "Config and store (kept):" in banner
        demo.proc.send_signal(signal.SIGTERM)
        demo.rest()
    assert (kept / "mfa.toml").is_file() and (kept / MARKER).is_file()


def test_demo_on_a_busy_port_fails_before_printing_or_making_anything(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run([EXE, "demo", "--port", str(port)], env=person_env(tmp_path / "tmp"),
                              cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stdout == ""  # no URL, no password
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr and "--port" in done.stderr, done.stderr
    assert all(len(line) <= DEMO_WIDTH for line in done.stderr.splitlines()), done.stderr
    assert list((tmp_path / "tmp").iterdir()) == [], "a folder with secret keys was left behind"


def test_demo_refuses_a_data_dir_with_a_real_config(tmp_path: Path) -> None:
    write_starter_config(tmp_path / "mfa.toml", database="sqlite:///mfa.db")
    result = CliRunner().invoke(main, ["demo", "--port", "0", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "did not make" in result.output and "Password" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mfa.toml"]


def test_demo_token_can_be_activated_with_demo_code(tmp_path: Path) -> None:
    """The demo enables the hardware-token method and puts a token in the inventory for the demo user;
    ``demo-code --token`` gives the code its display would show, so the method can be tried without one."""
    for _run in range(2):  # a second run resets the user: the token can be activated again
        mw, password = prepare_demo(tmp_path)
        try:
            assert "oath" in mw.runtime.config.methods.enabled
            browser = Browser(mw)
            browser.login("demo", password)
            start = browser.get("/_mfa/enroll")
            assert "Serial number" in start.text or "hardware token" in start.text.lower()
            browser.post("/_mfa/enroll", {"action": "start", "method": "oath", "serial": "DEMO-0001",
                                          "csrf_token": csrf_of(start.text)})
            page = browser.get("/_mfa/enroll")
            shown = demo_code(tmp_path, token=True)
            done = browser.post("/_mfa/enroll", {"action": "confirm", "code": shown.code,
                                                 "csrf_token": csrf_of(page.text)})
            assert done.status_code == 303, done.text
            user = mw.runtime.store.get_user("demo")
            assert user is not None and [m.kind for m in mw.runtime.store.list_methods(user.id)] == ["oath"]
        finally:
            mw.runtime.close()


def test_demo_text_message_through_the_outbox(tmp_path: Path) -> None:
    """The demo's text messages go to the console gateway; the outbox page shows them, so a person can set up
    "Text message" from the browser alone."""
    import re

    mw, password = prepare_demo(tmp_path)
    try:
        browser = Browser(mw)
        browser.login("demo", password)
        start = browser.get("/_mfa/enroll")
        assert "Text message" in start.text
        browser.post("/_mfa/enroll", {"action": "start", "method": "sms", "phone": "+44 7400 123456",
                                      "csrf_token": csrf_of(start.text)})
        page = browser.get("/_mfa/enroll")
        outbox = browser.get("/_mfa/dev/outbox")
        assert outbox.status_code == 200 and "Text messages" in outbox.text
        code = re.search(r"(\d{6}) is your", outbox.text)
        assert code
        done = browser.post("/_mfa/enroll", {"action": "confirm", "code": code.group(1),
                                             "csrf_token": csrf_of(page.text)})
        assert done.status_code == 303
    finally:
        mw.runtime.close()


def test_demo_phone_call_answered_on_the_outbox_keypad(tmp_path: Path) -> None:
    """The demo's calls go to the console gateway: the outbox page lists them with a keypad, and pressing # there
    approves the call exactly as a provider's signed callback would; 0# reports fraud and blocks the user."""
    import re

    mw, password = prepare_demo(tmp_path)
    try:
        browser = Browser(mw)
        browser.login("demo", password)
        start = browser.get("/_mfa/enroll")
        assert "Office phone call" in start.text and "Mobile phone call" in start.text
        started = browser.post("/_mfa/enroll", {"action": "start", "method": "voice", "phone": "+44 20 7946 0958",
                                                "csrf_token": csrf_of(start.text)})
        assert started.status_code == 303, started.text
        page = browser.get("/_mfa/enroll")
        early = browser.post("/_mfa/enroll", {"action": "confirm", "csrf_token": csrf_of(page.text)})
        assert early.status_code == 200 and "had your answer yet" in early.text
        outbox = browser.get("/_mfa/dev/outbox")
        assert "Phone calls" in outbox.text and "Press #" in outbox.text
        reference = re.search(r'name="call" value="([^"]+)"', outbox.text)
        assert reference
        # Without the page's token the keypad does nothing.
        forged = browser.post("/_mfa/dev/outbox", {"call": reference.group(1), "keys": "#"})
        assert forged.status_code == 403
        pressed = browser.post("/_mfa/dev/outbox", {"call": reference.group(1), "keys": "#",
                                                    "csrf_token": csrf_of(outbox.text)})
        assert pressed.status_code == 200 and "approved" in pressed.text
        done = browser.post("/_mfa/enroll", {"action": "confirm", "csrf_token": csrf_of(page.text)})
        assert done.status_code == 303, done.text
        browser.get("/_mfa/logout")
        # A second sign-in: the call is answered 0#, the user is blocked, and the next sign-in says so.
        second = Browser(mw)
        second.login("demo", password)
        verify = second.get("/_mfa/verify")
        assert "re calling" in verify.text
        outbox = second.get("/_mfa/dev/outbox")
        newest = re.search(r'name="call" value="([^"]+)"', outbox.text)
        assert newest and newest.group(1) != reference.group(1)
        second.post("/_mfa/dev/outbox", {"call": newest.group(1), "keys": "0#", "csrf_token": csrf_of(outbox.text)})
        user = mw.runtime.store.get_user("demo")
        assert user is not None and user.blocked(mw.runtime.clock())
        third = Browser(mw)
        refused = third.login("demo", password)
        assert refused.status_code == 403 and "blocked" in refused.text.lower()
    finally:
        mw.runtime.close()
