"""Three servers on one PostgreSQL (issue 13): authenticated requests per second against one server alone and spread
over all three, sign-ins per second (password + TOTP through the pages) with argon2's own time as the floor, and
revocation propagation p50/p99.

Setup: a PostgreSQL database (``--database URL``, else a throwaway server started with ``tests/support/postgres.py``),
migrated; three server processes (``tests/e2e/waitress_server.py``: the middleware around a tiny app, waitress with
8 threads, one shared configuration file; started and stopped by ``bench_revocation.servers``) on three ports.

- **Authenticated requests**: ``GET /`` with a level-2 session cookie (minted with the servers' codec, the payload the
  sign-in pages produce; a pool of cookies used in turn) from ``--clients`` load threads, each on its own kept-alive
  ``http.client`` connection, for ``--seconds``: first every thread at server A, then the threads spread round-robin
  over A, B and C. Only 200 answers are counted. The ratio three/one would approach 3 with a core (or more) per
  server; the load generator runs in this process and shares the machine's cores with the servers and PostgreSQL,
  so the script prints the core count and how much CPU the generator itself used.
- **Sign-ins**: ``--signins`` users (made in-process with the same runtime, TOTP enrolled), each signed in once
  through the pages by ``--clients`` threads spread over the three servers: ``GET /_mfa/login``, ``POST`` the
  password (one argon2 verification), ``GET /_mfa/verify``, ``POST`` the TOTP code. The floor is argon2's own time:
  one ``PasswordHasher().verify`` (the package's parameters) timed here, so at most ``cores / argon2 time`` sign-ins
  per second whatever the number of servers.
- **Revocation propagation**: ``bench_revocation.propagation`` (sign-out on A, B and C probed until they refuse),
  ``--runs`` times.

Prints a table; always exits 0.

    .venv/bin/python benchmarks/bench_three_servers.py [--seconds 5] [--clients 6] [--signins 40] [--runs 200]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pyotp
from argon2 import PasswordHasher

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_revocation, when run from elsewhere

from bench_revocation import (  # noqa: E402
    COOKIE, Probe, admin, database, mint, percentile, propagation, servers, write_config)

from mfa_middleware import MFAMiddleware  # noqa: E402
from mfa_middleware.config import load_config  # noqa: E402
from mfa_middleware.core.tokens import TokenCodec  # noqa: E402
from mfa_middleware.services.lockout import Client  # noqa: E402

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def authenticated_rate(ports: list[int], cookies: list[str], clients: int, seconds: float
                       ) -> tuple[float, float, int]:
    """(200 answers per second, the load threads' CPU seconds per wall second, non-200 answers): ``clients``
    threads on kept-alive connections to ``ports`` (round-robin) for ``seconds``."""
    counts = [0] * clients
    others = [0] * clients
    pool = itertools.cycle(cookies)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def load(i: int) -> None:
        probe = Probe(ports[i % len(ports)])
        with lock:
            mine = [next(pool) for _ in range(64)]
        start.wait()
        for cookie in itertools.cycle(mine):
            if stop.is_set():
                return
            status, _ = probe.request("GET", "/", cookie)
            if status == 200:
                counts[i] += 1
            else:
                others[i] += 1

    threads = [threading.Thread(target=load, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    cpu0 = time.process_time()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)  # the measurement window: a fixed duration, not a timing
    stop.set()
    elapsed = time.perf_counter() - t0
    for thread in threads:
        thread.join(timeout=60)
    cpu = time.process_time() - cpu0
    return sum(counts) / elapsed, cpu / elapsed, sum(others)


def make_users(config: Path, count: int) -> dict[str, str]:
    """``count`` users with a password and a confirmed TOTP method, made in this process: name -> TOTP key."""
    middleware = MFAMiddleware(lambda environ, start_response: [], str(config))
    rt = middleware.runtime
    client = Client("127.0.0.1", "bench")
    keys: dict[str, str] = {}
    try:
        for i in range(count):
            name = f"signin{i}"
            rt.accounts.add(name, actor="bench", password=PASSWORD)
            user = rt.store.get_user(name)
            assert user is not None
            now = time.time()
            view = rt.signin.enroll_begin(user, "totp", client, now)
            key = view.fields["secret"].replace(" ", "")
            result = rt.signin.enroll_finish(user, view.method_id, {"code": pyotp.TOTP(key).at(now)}, client, now)
            assert result.accepted, result
            keys[name] = key
    finally:
        rt.close()
    return keys


class Browser:
    """One kept-alive connection with a cookie jar (the few cookies the sign-in pages set)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        headers = {"Accept": "text/html"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        with self.conn.getresponse() as answer:
            text = answer.read().decode()
            for header in answer.headers.get_all("Set-Cookie") or []:
                pair, *attributes = (part.strip() for part in header.split(";"))
                key, _, value = pair.partition("=")
                if not value or any(a.lower() == "max-age=0" for a in attributes):
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = value.strip('"')
            return answer.status, answer.headers.get("Location", ""), text


def sign_in(port: int, name: str, key: str) -> bool:
    browser = Browser(port)
    _, _, page = browser.request("GET", "/_mfa/login?next=/")
    csrf = CSRF.search(page)
    assert csrf, page
    status, location, _ = browser.request("POST", "/_mfa/login", {"username": name, "password": PASSWORD,
                                                                   "csrf_token": csrf.group(1), "next": "/"})
    if (status, location) != (303, "/_mfa/verify"):
        return False
    _, _, page = browser.request("GET", "/_mfa/verify")
    csrf = CSRF.search(page)
    assert csrf, page
    code = pyotp.TOTP(key).at(time.time() + 30)  # the next step: enrollment used the current one
    status, location, _ = browser.request("POST", "/_mfa/verify", {"code": code, "csrf_token": csrf.group(1)})
    browser.conn.close()
    return (status, location) == (303, "/") and COOKIE in browser.cookies


def sign_in_rate(ports: list[int], keys: dict[str, str], clients: int) -> tuple[float, int]:
    """(completed sign-ins per second, failed ones): every user once, ``clients`` threads over ``ports``."""
    work = list(keys.items())
    lock = threading.Lock()
    done = [0, 0]

    def worker(i: int) -> None:
        port = ports[i % len(ports)]
        while True:
            with lock:
                if not work:
                    return
                name, key = work.pop()
            ok = sign_in(port, name, key)
            with lock:
                done[0 if ok else 1] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return done[0] / (time.perf_counter() - t0), done[1]


def argon2_time(repeats: int = 15) -> float:
    """Median seconds of one ``PasswordHasher().verify`` with the package's parameters (the default hasher)."""
    hasher = PasswordHasher()
    digest = hasher.hash(PASSWORD)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hasher.verify(digest, PASSWORD)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(seconds: float, clients: int, signins: int, runs: int, url: str | None) -> None:
    cores = os.cpu_count() or 1
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mfa-bench-three-") as tmp, database(url) as db:
        config = Path(tmp) / "mfa.toml"
        write_config(config, db)
        admin(config, "db", "upgrade")
        admin(config, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        codec = TokenCodec(load_config(config).secret_keys)
        cookies = [mint(codec) for _ in range(clients * 64)]
        keys = make_users(config, signins)
        floor = argon2_time()
        with servers(config, Path(tmp)) as ports:
            authenticated_rate(ports, cookies, clients, min(1.0, seconds))  # warm-up: caches, connections, pools
            one, one_cpu, one_bad = authenticated_rate(ports[:1], cookies, clients, seconds)
            three, three_cpu, three_bad = authenticated_rate(ports, cookies, clients, seconds)
            rate, failed = sign_in_rate(ports, keys, clients)
            latencies, _ = propagation(ports, codec, runs)
    assert one_bad == three_bad == failed == 0, (one_bad, three_bad, failed)
    load = os.getloadavg()[0]
    rows += [
        ("authenticated requests/s, one server", f"{one:9.0f}   (load generator used {one_cpu:.2f} cores)"),
        ("authenticated requests/s, three servers", f"{three:9.0f}   (load generator used {three_cpu:.2f} cores)"),
        ("ratio three / one", f"{three / one:9.2f}   (close to 3 needs >= 3 free cores; this machine has {cores})"),
        ("sign-ins/s, three servers (password + TOTP)", f"{rate:9.1f}   ({signins} sign-ins)"),
        ("argon2 verify (one, this process)", f"{floor * 1000:9.1f} ms"),
        ("sign-in ceiling, cores / argon2", f"{cores / floor:9.1f} /s"),
        (f"revocation propagation p50 ({len(latencies)} samples)", f"{percentile(latencies, 50):9.2f} ms"),
        ("revocation propagation p99", f"{percentile(latencies, 99):9.2f} ms"),
    ]
    print(f"three waitress servers (8 threads each), one PostgreSQL; {clients} load threads on kept-alive "
          f"connections, {seconds:g} s per rate; {cores} cores, load average {load:.1f}; "
          f"Python {sys.version.split()[0]}")
    print()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print()
    if cores < 4:
        print(f"On {cores} cores the three servers, PostgreSQL and the load generator share the same CPUs, so "
              "spreading the load cannot multiply the rate by 3. An authenticated request runs no store query, so "
              "with a core per server the rates add up; here the ratio only shows that the servers lose nothing to "
              "each other.")
    print(f"p99 under 1 s (issue 13): {'PASS' if percentile(latencies, 99) < 1000 else 'ABOVE TARGET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each requests-per-second run")
    parser.add_argument("--clients", type=int, default=6, help="load threads (kept-alive connections)")
    parser.add_argument("--signins", type=int, default=40, help="users signed in once each")
    parser.add_argument("--runs", type=int, default=200, help="revocations for the propagation figures")
    parser.add_argument("--database", help="a PostgreSQL SQLAlchemy URL (default: a throwaway server)")
    args = parser.parse_args()
    run(args.seconds, args.clients, args.signins, args.runs, args.database)


if __name__ == "__main__":
    main()
