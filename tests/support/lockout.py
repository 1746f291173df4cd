"""Helpers for lockout and enumeration tests: a password hasher that counts the checks it makes, and a site that
prepares one account for each sign-in path (forms, Basic, the second factor) with the cookies an attacker would
hold. Used in process, in spawned processes and in real server processes (``tests/e2e/lockout_server.py``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from argon2 import PasswordHasher

T = TypeVar("T")
Path = Literal["forms", "basic-primary", "basic-app-password", "second-factor", "client-address"]
BARRIER_TIMEOUT = 120.0
MAX_FAILURES = 10
BASIC_RULES: list[dict[str, Any]] = [{"path": "/dav/*", "policy": "two_factor", "basic": True},
                                     {"path": "/mail/*", "policy": "one_factor", "basic": True},
                                     {"path": "/*", "policy": "two_factor"}]


class CountingHasher(PasswordHasher):
    """argon2id with small costs that counts every verification except those of the hashes in ``ignored`` (set
    it to the service's dummy hash: ``{runtime.passwords.dummy_hash}``), i.e. the real secrets checked. With
    ``log``, each such verification also appends a line to that file (one ``O_APPEND`` write: safe across
    threads and processes)."""

    def __init__(self, log: str | None = None, *, time_cost: int = 1, memory_cost: int = 64) -> None:
        super().__init__(time_cost=time_cost, memory_cost=memory_cost, parallelism=1)
        self.log = log
        self.ignored: set[str] = set()
        self.verified: list[str] = []
        self.calls = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        text = hash.decode() if isinstance(hash, bytes) else hash
        with self._lock:
            self.calls += 1
            if text not in self.ignored:
                self.verified.append(text)
                if self.log is not None:
                    fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    try:
                        os.write(fd, b"verify\n")
                    finally:
                        os.close(fd)
        return super().verify(hash, password)

    @property
    def real_checks(self) -> int:
        with self._lock:
            return len(self.verified)


def run_together(count: int, fn: Callable[[int], T]) -> list[T]:
    """Run ``fn(i)`` in ``count`` threads released at the same moment by a barrier; re-raise the first error.
    (Across processes, each process first waits on a process barrier, then calls this.)"""
    barrier = threading.Barrier(count)

    def task(i: int) -> T:
        barrier.wait(timeout=BARRIER_TIMEOUT)
        return fn(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(task, i) for i in range(count)]
        return [f.result() for f in futures]


def lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def cookie_header(set_cookies: Iterable[str]) -> str:
    """A Cookie request header from Set-Cookie response headers (name=value of each)."""
    return "; ".join(c.split(";", 1)[0] for c in set_cookies if c.split(";", 1)[0].split("=", 1)[1])
