"""The admin portal's user list at 100,000 users: server time per page, first and last page, with and without a
search.

Measured in one process: a temporary SQLite store (migrated) with N users inserted in one bulk statement (every
tenth in group ``ops``, every seventh disabled), an administrator's level-2 session cookie minted with the
middleware's own codec, and ``GET /_mfa/admin?...`` sent straight to the WSGI callable (no HTTP server, so the time
is the middleware's pages app, its store queries and the template). Each row is the median of R requests, after
one warm-up request; the SQL statements of one request are counted too (the test suite pins that number in
tests/test_admin_scale.py).

Rows:

- first page, no search;
- last page, no search (``last=1``: keyset from the end, as the "Last" link does);
- a deep page, no search (``after=`` a username 90% of the way in, as "Next" would reach it);
- first and last page with a search that matches 10 users (``q=u09999``) and one that matches everyone
  (``q=example.org``: the count scans every row).

    .venv/bin/python benchmarks/bench_admin_list.py [--users N] [--repeats R]

Prints the table; exits 0 (benchmarks are not tests).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import event, insert

from mfa_middleware import MFAMiddleware
from mfa_middleware.config import config_from_dict
from mfa_middleware.core.tokens import Session, new_session_id
from mfa_middleware.store.schema import users


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        now = time.time()
        config = config_from_dict({
            "secret_keys": ["b" * 40], "encryption_key": Fernet.generate_key().decode(),
            "database": f"sqlite:///{Path(folder) / 'mfa.db'}", "default_policy": "two_factor",
            "methods": {"enabled": ["totp"]}}, source="bench")
        mw = MFAMiddleware(app, config)
        rt = mw.runtime
        rt.store.upgrade()
        started = time.perf_counter()
        rows = [dict(username=f"u{i:06d}", email=f"u{i}@example.org", display_name=f"User {i}",
                     groups="staff,ops" if i % 10 == 0 else "staff", is_admin=False,
                     state="disabled" if i % 7 == 0 else "enabled", password_hash=None, failed_count=0,
                     consecutive_failures=0, created_at=now, updated_at=now) for i in range(args.users)]
        rt.store._run(lambda c: c.execute(insert(users), rows))
        rt.store.create_user("root", now=now, is_admin=True, state="enforced")
        seeded = time.perf_counter() - started
        session = Session(sid=new_session_id(), username="root", groups=(), level=2, methods=("forms", "totp"),
                          primary_at=now, mfa_at=now, issued_at=now, last_seen=now, exempt=False, admin=True)
        cookie = f"{config.session.cookie_name}={rt.codec.dump_session(session)}"
        deep = f"u{int(args.users * 0.9):06d}"
        cases = [
            ("first page", ""), ("last page", "last=1"), ("deep page (90%)", f"after={deep}"),
            ("search 10 matches, first page", "q=u09999"), ("search 10 matches, last page", "q=u09999&last=1"),
            ("search all, first page", "q=example.org"), ("search all, last page", "q=example.org&last=1"),
            ("group + state filter, last page", "group=ops&state=enabled&last=1"),
        ]
        statements: list[str] = []
        event.listen(rt.store.engine, "before_cursor_execute",
                     lambda _c, _k, statement, *_a: statements.append(statement))

        def request(query: str) -> tuple[float, int, bytes]:
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/_mfa/admin", "QUERY_STRING": query,
                       "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                       "wsgi.input": io.BytesIO(), "HTTP_COOKIE": cookie,
                       "REMOTE_ADDR": "127.0.0.1"}
            status: list[str] = []
            t0 = time.perf_counter()
            body = b"".join(mw(environ, lambda s, h, exc=None: status.append(s)))
            elapsed = time.perf_counter() - t0
            assert status[0].startswith("200"), (status, body[:500])
            return elapsed, len(statements), body

        print(f"admin user list, {args.users:,} users (seeded in {seeded:.1f} s), median of {args.repeats} "
              f"requests; Python {sys.version.split()[0]}\n")
        print(f"  {'page':<36}{'ms/page':>10}{'SQL statements':>17}{'rows shown':>12}")
        for label, query in cases:
            request(query)  # warm-up
            times = []
            counted = 0
            body = b""
            for _ in range(args.repeats):
                before = len(statements)
                elapsed, after, body = request(query)
                times.append(elapsed)
                counted = after - before
            shown = body.count(b'name="user" value=')
            print(f"  {label:<36}{statistics.median(times) * 1000:>10.1f}{counted:>17}{shown:>12}")
        rt.close()


if __name__ == "__main__":
    main()
