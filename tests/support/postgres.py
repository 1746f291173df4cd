"""A real, throwaway PostgreSQL server for tests (DESIGN.md section 6).

Recipe proven on the CI machine kind (Debian bookworm, PostgreSQL 15, tests run as root):

* ``initdb`` refuses to run as root, so when we are root every server binary runs as the
  ``postgres`` user (``runuser -u postgres --``, or ``su -s /bin/sh postgres -c`` when
  ``runuser`` is unusable).
* The data lives in a ``tempfile.mkdtemp()`` folder under ``/tmp`` chowned to that user
  (pytest's ``tmp_path`` lives below a root-only folder the ``postgres`` user cannot reach).
* The server listens on 127.0.0.1 only, on a free port, with its Unix socket in the same
  folder, ``fsync=off``, and is stopped by ``pg_ctl stop -m immediate`` (falling back to
  killing the postmaster pid), after which the folder is removed.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.components import require_component
from tests.support.servers import free_port

PREFERRED_MAJOR = 15
HOST = "127.0.0.1"
SUPERUSER = "postgres"
OS_USER = "postgres"

_INITDB_TIMEOUT = 180.0
_START_TIMEOUT = 60
_STOP_TIMEOUT = 30
_LOG_TAIL_CHARS = 6000
_database_counter = itertools.count(1)


class PostgresError(RuntimeError):
    """The server could not be set up, started or used; the message carries the details."""


def _version_key(bindir: str) -> tuple[int, int]:
    match = re.search(r"/postgresql/(\d+)/bin$", bindir)
    major = int(match.group(1)) if match else 0
    # Prefer the major version the project targets, then the newest.
    return (1 if major == PREFERRED_MAJOR else 0, major)


def find_pg_binaries() -> tuple[Path, Path] | None:
    """``(initdb, pg_ctl)`` from PATH, else from ``/usr/lib/postgresql/*/bin``; None if absent."""
    initdb = shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb), Path(pg_ctl)
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        candidate_initdb = Path(bindir, "initdb")
        candidate_pg_ctl = Path(bindir, "pg_ctl")
        if os.access(candidate_initdb, os.X_OK) and os.access(candidate_pg_ctl, os.X_OK):
            return candidate_initdb, candidate_pg_ctl
    return None


def _user_switch_prefix() -> list[str] | None:
    """How to run a command as ``postgres``: ``[]`` when not root, a wrapper prefix, or None."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        probe = subprocess.run(
            ["runuser", "-u", OS_USER, "--", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return ["runuser", "-u", OS_USER, "--"]
    if shutil.which("su"):
        probe = subprocess.run(
            ["su", "-s", "/bin/sh", OS_USER, "-c", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return ["su", "-s", "/bin/sh", OS_USER, "-c"]
    return None


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1.

    Use as a context manager, or call :meth:`start` and :meth:`stop` yourself::

        with PostgresServer() as server:
            url = server.create_database()  # postgresql+psycopg://postgres@127.0.0.1:PORT/NAME

    A missing component (binaries, ``postgres`` user, psycopg) goes through
    :func:`require_component`, so it skips, or fails when ``MFA_TEST_REQUIRE_ALL=1``.
    Any other problem raises :class:`PostgresError` including the server log.
    """

    def __init__(self) -> None:
        self.port: int | None = None
        self.host = HOST
        self.root: Path | None = None
        self.version: str = ""
        self._initdb: Path | None = None
        self._pg_ctl: Path | None = None
        self._prefix: list[str] = []
        self._running = False
        self._frozen: list[int] = []

    # -- paths ---------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._root / "data"

    @property
    def log_path(self) -> Path:
        return self._root / "server.log"

    @property
    def _root(self) -> Path:
        if self.root is None:
            raise PostgresError("PostgresServer has not been started")
        return self.root

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> PostgresServer:
        """initdb a fresh cluster in a temp folder and start it; returns ``self``."""
        if self._running:
            return self
        binaries = find_pg_binaries()
        if binaries is None:
            require_component(
                "postgresql",
                "initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin "
                "(apt-get install postgresql-15)",
            )
        self._initdb, self._pg_ctl = binaries
        prefix = _user_switch_prefix()
        if prefix is None:
            require_component(
                "postgresql",
                f"running as root but cannot run commands as the {OS_USER!r} user "
                "(initdb refuses root; neither runuser nor su worked)",
            )
        self._prefix = prefix

        # /tmp rather than $TMPDIR when root: the postgres user must be able to reach it.
        base = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="mfa-pg-", dir=base))
        try:
            if os.geteuid() == 0:
                user = pwd.getpwnam(OS_USER)
                os.chown(self.root, user.pw_uid, user.pw_gid)
            self.version = self._run([str(self._initdb), "--version"], timeout=30, what="initdb --version").strip()
            self._run(
                [
                    str(self._initdb),
                    "-D", str(self.data_dir),
                    "--auth=trust",
                    "-U", SUPERUSER,
                    "--no-locale",
                    "-E", "UTF8",
                ],
                timeout=_INITDB_TIMEOUT,
                what="initdb",
            )
            self._start_server()
        except BaseException:
            self._cleanup_after_failed_start()
            raise
        self._running = True
        atexit.register(self.stop)
        return self

    def _start_server(self) -> None:
        last_error: PostgresError | None = None
        for _attempt in range(5):
            port = free_port(HOST)
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            options = self._server_options(port)
            try:
                self._run(
                    [
                        str(self._pg_ctl),
                        "-D", str(self.data_dir),
                        "-l", str(self.log_path),
                        "-o", options,
                        "-w",
                        "-t", str(_START_TIMEOUT),
                        "start",
                    ],
                    timeout=_START_TIMEOUT + 30,
                    what=f"pg_ctl start (port {port})",
                )
            except PostgresError as error:
                last_error = error
                new_log = self._read_log(offset=log_offset)
                self._kill_postmaster()
                if "could not bind" in new_log or "already in use" in new_log:
                    continue  # lost the race for the free port; try another one
                raise
            self.port = port
            return
        assert last_error is not None
        raise last_error

    def _server_options(self, port: int) -> str:
        return " ".join(
            [
                f"-p {port}",
                f"-k {shlex.quote(str(self._root))}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                f"-c listen_addresses={HOST}",
            ]
        )

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m immediate``, else kill by pid) and remove its folder."""
        atexit.unregister(self.stop)
        if self.root is None:
            return
        self.resume()  # a frozen server cannot stop
        try:
            if self._running and self.data_dir.is_dir():
                try:
                    self._run(
                        [
                            str(self._pg_ctl),
                            "-D", str(self.data_dir),
                            "-m", "immediate",
                            "-w",
                            "-t", str(_STOP_TIMEOUT),
                            "stop",
                        ],
                        timeout=_STOP_TIMEOUT + 30,
                        what="pg_ctl stop",
                    )
                except PostgresError:
                    self._kill_postmaster()
        finally:
            self._running = False
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
            self.port = None

    # -- faults (tests of a store that is down or hung) -------------------------------------------------

    def postmaster_pid(self) -> int:
        """The pid in ``postmaster.pid``; raises :class:`PostgresError` if the server is not running."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError) as error:
            raise PostgresError(f"no running postmaster in {self.data_dir}: {error}") from None

    def server_pids(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, walwriter, ...)."""
        root = self.postmaster_pid()
        pids = [root]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            # "pid (comm) state ppid ...": comm may hold spaces or parentheses, so split after the last ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == root:
                pids.append(int(entry.name))
        return pids

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster, then all of its children: the server keeps its sockets (the kernel still
        accepts connections and acknowledges data) but nothing answers, like a hung or unreachable host.
        Returns the pids stopped; :meth:`resume` continues them."""
        root = self.postmaster_pid()
        os.kill(root, signal.SIGSTOP)  # first, so that it starts no new backend while we stop the others
        stopped = [root]
        for pid in self.server_pids()[1:]:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        self._frozen = stopped
        return stopped

    def resume(self) -> None:
        """SIGCONT every process :meth:`freeze` stopped (children first, the postmaster last)."""
        for pid in reversed(self._frozen):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._frozen = []

    def halt(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``; ``mode="immediate"``: killed, no clean shutdown, as a crash)
        but keep its data and port for :meth:`restart`."""
        self.resume()
        self._run([str(self._pg_ctl), "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(_STOP_TIMEOUT),
                   "stop"], timeout=_STOP_TIMEOUT + 30, what="pg_ctl stop")

    def restart(self) -> None:
        """Start a server stopped by :meth:`halt` again, on the same port."""
        if self.port is None:
            raise PostgresError("PostgresServer has not been started")
        self._run([str(self._pg_ctl), "-D", str(self.data_dir), "-l", str(self.log_path), "-o",
                   self._server_options(self.port), "-w",
                   "-t", str(_START_TIMEOUT), "start"], timeout=_START_TIMEOUT + 30, what="pg_ctl start (again)")

    def _cleanup_after_failed_start(self) -> None:
        self._kill_postmaster()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _kill_postmaster(self) -> None:
        """Kill the postmaster by the pid in ``postmaster.pid``, if there is one."""
        if self.root is None:
            return
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig, wait in ((signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    # -- databases -----------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of database ``dbname`` on this server."""
        if not self._running or self.port is None:
            raise PostgresError("PostgresServer is not running")
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def create_database(self) -> str:
        """Create a fresh, uniquely named database; return its SQLAlchemy URL."""
        try:
            import psycopg
            from psycopg import sql
        except ImportError as error:
            require_component("psycopg", f"cannot import psycopg ({error}); pip install 'psycopg[binary]'")
        if not self._running or self.port is None:
            raise PostgresError("PostgresServer is not running")
        name = f"mfa_test_{next(_database_counter)}_{secrets.token_hex(4)}"
        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                user=SUPERUSER,
                dbname="postgres",
                autocommit=True,
                connect_timeout=10,
            ) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as error:
            raise PostgresError(
                f"CREATE DATABASE {name} failed: {error}\n{self._log_tail()}"
            ) from error
        return self.url(name)

    # -- helpers -------------------------------------------------------------------------

    def _run(self, command: list[str], *, timeout: float, what: str) -> str:
        """Run a server binary (as ``postgres`` when root); return its output or raise."""
        if self._prefix and self._prefix[0] == "su":
            full = [*self._prefix, shlex.join(command)]
        else:
            full = [*self._prefix, *command]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            result = subprocess.run(
                full,
                cwd=self._root,  # a folder the postgres user can enter (initdb needs its cwd)
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            output = error.output.decode(errors="replace") if isinstance(error.output, bytes) else error.output
            raise PostgresError(
                f"{what} timed out after {timeout:.0f}s: {shlex.join(full)}\n"
                f"--- output ---\n{output or ''}\n{self._log_tail()}"
            ) from None
        if result.returncode != 0:
            raise PostgresError(
                f"{what} failed with exit code {result.returncode}: {shlex.join(full)}\n"
                f"--- output ---\n{result.stdout}\n{self._log_tail()}"
            )
        return result.stdout

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except (OSError, PostgresError):
            return ""

    def _log_tail(self) -> str:
        log = self._read_log()
        if not log:
            return "--- server log: (empty or missing) ---"
        if len(log) > _LOG_TAIL_CHARS:
            log = "...\n" + log[-_LOG_TAIL_CHARS:]
        return f"--- server log {self.log_path} ---\n{log}"
