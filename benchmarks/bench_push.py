"""Push sign-in from request to approval: the time the server adds, over N runs (default 100).

Setup, in one process: a temporary SQLite store, ``MFAMiddleware`` around a tiny app, served by werkzeug (threaded)
on 127.0.0.1; one user with push set up through the pages and the console authenticator's client
(:class:`mfa_middleware.authenticator.DeviceClient`), which long-polls ``GET /device/v1/requests?wait=25`` in a
thread, exactly as ``mfa-authenticator watch`` does.

One run: a password sign-in (not timed), then

1. ``GET /_mfa/verify``: the server makes the request (number, cap check, store row) and wakes the long-poll;
2. the device's long-poll returns with the signed request, and the device answers ``approve`` with the number;
3. ``POST /_mfa/verify``: the sign-in is accepted and the session issued.

The server-added time is (1) the verify page's response time, plus (2) the time from that response to the device
receiving the request (the long-poll's wake-up and the signed listing), plus (3) the answer's response time and
(4) the final POST's response time. The test's own work between those (parsing, signing the answer) is not
counted. For reference the script also prints one bare HTTP round trip to a static file of the same server.
Prints median and 95th percentile in milliseconds; always exits 0.

    .venv/bin/python benchmarks/bench_push.py [--runs 100]
"""

from __future__ import annotations

import argparse
import queue
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from cryptography.fernet import Fernet

from mfa_middleware import MFAMiddleware
from mfa_middleware.authenticator.client import DeviceClient, PendingRequest, register
from mfa_middleware.config import config_from_dict

PASSWORD = "correct horse battery staple"


def app(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [b"ok"]


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()

    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    folder = Path(tempfile.mkdtemp())
    config = config_from_dict({
        "secret_keys": ["k" * 40], "encryption_key": Fernet.generate_key().decode(),
        "database": f"sqlite:///{folder / 'mfa.db'}", "default_policy": "deny",
        "rules": [{"path": "/*", "policy": "two_factor"}],
        "methods": {"enabled": ["push", "totp"], "push": {"max_per_10_minutes": 100}},
        "lockout": {"max_failures": 100}}, source="bench.toml")
    mw = MFAMiddleware(app, config, password_hasher=PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
    mw.runtime.store.upgrade()
    mw.runtime.accounts.add("bench", actor="bench", password=PASSWORD)
    server = make_server("127.0.0.1", 0, mw, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"

    def login() -> httpx.Client:
        http = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
        page = http.get("/_mfa/login?next=/")
        http.post("/_mfa/login", data={"username": "bench", "password": PASSWORD, "next": "/",
                                       "csrf_token": csrf(page.text)})
        return http

    http = login()
    page = http.get("/_mfa/enroll")
    http.post("/_mfa/enroll", data={"action": "start", "method": "push", "csrf_token": csrf(page.text)})
    page = http.get("/_mfa/enroll")
    url = re.search(r'id="registration-url" class="secret">([^<]+)<', page.text)
    assert url
    account = register(url.group(1).replace("&amp;", "&"), "bench", "ed25519")
    done = http.post("/_mfa/enroll", data={"action": "confirm", "csrf_token": csrf(page.text)})
    assert done.status_code == 303, done.text
    device = DeviceClient(account)

    received: queue.Queue[tuple[float, PendingRequest]] = queue.Queue()
    stop = threading.Event()
    answered: set[str] = set()

    def poll_forever() -> None:
        while not stop.is_set():
            for request in device.pending(wait=25):
                if request.id not in answered:
                    answered.add(request.id)
                    received.put((time.perf_counter(), request))

    threading.Thread(target=poll_forever, daemon=True).start()
    time.sleep(0.3)  # let the first long-poll reach the server before the first run (not measured)

    totals: list[float] = []
    parts: dict[str, list[float]] = {"verify page (makes the request)": [], "delivery by long-poll": [],
                                     "answer": [], "final POST": []}
    bare: list[float] = []
    for _ in range(args.runs):
        person = login()
        t0 = time.perf_counter()
        verify = person.get("/_mfa/verify")
        t1 = time.perf_counter()
        number = re.search(r'id="push-number"[^>]*>(\d\d)<', verify.text)
        assert number, verify.text
        t_received, request = received.get(timeout=30)
        t2 = time.perf_counter()
        result = device.answer(request.id, "approve", int(number.group(1)))
        t3 = time.perf_counter()
        assert result["status"] == "approved", result
        t4 = time.perf_counter()
        final = person.post("/_mfa/verify", data={"code": "", "csrf_token": csrf(verify.text)})
        t5 = time.perf_counter()
        assert final.status_code == 303 and final.headers["Location"] == "/", final.text
        steps = (t1 - t0, max(0.0, t_received - t1), t3 - t2, t5 - t4)
        for name, value in zip(parts, steps, strict=True):
            parts[name].append(value * 1000)
        totals.append(sum(steps))
        b0 = time.perf_counter()
        person.get("/_mfa/static/mfa.css")
        bare.append(time.perf_counter() - b0)
        person.close()
    stop.set()

    ms = [t * 1000 for t in totals]
    print(f"push sign-in, request to approval, server-added time over {args.runs} runs: "
          f"median {statistics.median(ms):.1f} ms, p95 {percentile(ms, 95):.1f} ms")
    for name, values in parts.items():
        print(f"  {name}: median {statistics.median(values):.1f} ms, p95 {percentile(values, 95):.1f} ms")
    print(f"reference: one bare HTTP round trip to a static file: median {statistics.median(bare) * 1000:.2f} ms")
    server.shutdown()
    mw.runtime.close()


if __name__ == "__main__":
    main()
