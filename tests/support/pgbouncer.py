"""A real PgBouncer (Debian's ``pgbouncer``) in transaction mode in front of a test PostgreSQL (issue 13).

Recipe: PgBouncer refuses to run as root, so when we are root it runs as the ``postgres`` user (``Popen(user=)``),
with its ini, userlist, log and pid files in a ``/tmp`` folder chowned to that user. It listens on 127.0.0.1 on a
free port (no Unix socket), ``pool_mode = transaction``, ``auth_type = trust`` (the test cluster trusts local
connections; PgBouncer still wants the user in its ``auth_file``), and a small server pool so that client
connections really share server connections. Stopped by its pid (SIGTERM, then SIGKILL) and the folder removed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.components import require_component
from tests.support.postgres import HOST, OS_USER, SUPERUSER, PostgresServer
from tests.support.servers import free_port

START_TIMEOUT = 30.0


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None)


class PgBouncer:
    """``with PgBouncer(server) as bouncer: url = bouncer.url(dbname)``."""

    def __init__(self, server: PostgresServer, *, pool_size: int = 2) -> None:
        self.server = server
        self.pool_size = pool_size
        self.port: int | None = None
        self.root: Path | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> PgBouncer:
        binary = find_pgbouncer()
        if binary is None:
            require_component("pgbouncer", "pgbouncer not found (apt-get install pgbouncer)")
        self.root = Path(tempfile.mkdtemp(prefix="mfa-pgbouncer-", dir="/tmp"))
        user: pwd.struct_passwd | None = pwd.getpwnam(OS_USER) if os.geteuid() == 0 else None
        self.port = free_port(HOST)
        (self.root / "userlist.txt").write_text(f'"{SUPERUSER}" ""\n')
        (self.root / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={HOST} port={self.server.port}

[pgbouncer]
listen_addr = {HOST}
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root / 'userlist.txt'}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 200
server_reset_query =
logfile = {self.root / 'pgbouncer.log'}
pidfile = {self.root / 'pgbouncer.pid'}
""")
        if user is not None:
            for path in [self.root, *self.root.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)
        self._popen = subprocess.Popen([binary, str(self.root / "pgbouncer.ini")], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       user=user.pw_uid if user else None, group=user.pw_gid if user else None)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._popen is not None
            if self._popen.poll() is not None:
                raise RuntimeError(f"pgbouncer exited ({self._popen.returncode}):\n{self.log()}")
            try:
                with psycopg.connect(host=HOST, port=self.port, user=SUPERUSER, dbname="postgres",
                                     connect_timeout=2, prepare_threshold=None) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not answer within {START_TIMEOUT:g} s:\n{self.log()}") from None
                time.sleep(0.1)

    def url(self, database_url: str) -> str:
        """The same database (a URL of :meth:`PostgresServer.create_database`), reached through PgBouncer."""
        name = database_url.rsplit("/", 1)[1]
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{name}"

    def log(self) -> str:
        path = self.root / "pgbouncer.log" if self.root else None
        return path.read_text(errors="replace")[-4000:] if path and path.exists() else "(no log)"

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is not None and popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
