"""Health and readiness for load balancers and orchestrators (Kubernetes probes): ``<prefix>/health`` and
``<prefix>/ready``, plus the optional metrics page (:mod:`mfa_middleware.metrics`).

- ``GET <prefix>/health`` answers ``200 ok`` whenever the process answers HTTP at all. It reads nothing.
- ``GET <prefix>/ready`` answers ``200 ready`` when the store answered a trivial query (one read of the user
  table) within :data:`READY_TIMEOUT`, else ``503 not ready``. The answer is kept for :data:`READY_CACHE`, so
  probes from many load balancers cost the store at most one query a second. At most one probe query runs at a
  time, in its own thread: a caller waits for it until :data:`READY_TIMEOUT` after the probe started, never
  longer, so a frozen store (SIGSTOP, a vanished host) cannot hang the probe or pile up threads; a probe still
  running past the bound answers 503 at once until it ends.

Trust model: both are unauthenticated and say nothing a stranger could use: a fixed body, no version, no user
count, no error text (the reason a probe failed goes to the log only). ``Cache-Control: no-store`` so that no
cache between the prober and the server answers for the server. Only ``GET`` and ``HEAD`` are answered.

They are not on the hot path: requests outside the reserved prefix never look at them; under the prefix the
adapters ask :meth:`OpsEndpoints.wants` (one set lookup) before the sign-in pages run. Under ASGI they are
answered on the event loop (readiness awaits the probe's future with the same bound), not in the thread pool the
sign-in pages share, so a pool busy with slow store calls cannot delay a health probe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

from .adapters.gate import Reply, SignInPages
from .core.facts import IPNetwork, is_trusted_peer

if TYPE_CHECKING:
    from .adapters.wsgi import StartResponse

log = logging.getLogger("mfa_middleware.health")

#: the longest ``/ready`` waits for the store (seconds, from the start of the probe query)
READY_TIMEOUT = 2.0
#: how long one readiness answer is reused (seconds)
READY_CACHE = 1.0
PLAIN = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
         ("X-Content-Type-Options", "nosniff")]


class Readiness:
    """Whether ``probe`` (raising means "not ready") succeeds within ``timeout``; see the module docstring."""

    def __init__(self, probe: Callable[[], None], *, timeout: float = READY_TIMEOUT, cache_for: float = READY_CACHE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe, self.timeout, self.cache_for, self.clock = probe, timeout, cache_for, clock
        self._lock = threading.Lock()
        self._answer: bool | None = None
        self._answer_until = 0.0
        self._running: Future[bool] | None = None
        self._running_since = 0.0

    def pending(self) -> tuple[Future[bool], float]:
        """The answer to wait for and the clock time to stop waiting at: a cached answer, the probe already
        running, or a probe started now."""
        with self._lock:
            now = self.clock()
            if self._answer is not None and now < self._answer_until:
                return _done(self._answer), now
            running = self._running
            if running is not None:
                return running, self._running_since + self.timeout
            future: Future[bool] = Future()
            future.set_running_or_notify_cancel()  # nobody may cancel it: every waiter shares it
            self._running, self._running_since = future, now
        threading.Thread(target=self._run, args=(future,), name="mfa-readiness-probe", daemon=True).start()
        return future, now + self.timeout

    def _run(self, future: Future[bool]) -> None:
        try:
            self.probe()
            ok = True
        except Exception as exc:  # any failure means "not ready"; the reason stays in the log
            log.warning("readiness probe failed: %s: %s", type(exc).__name__, exc)
            ok = False
        with self._lock:
            self._answer, self._answer_until, self._running = ok, self.clock() + self.cache_for, None
        future.set_result(ok)

    def ready(self) -> bool:
        """Wait (at most until the bound) for the answer."""
        future, until = self.pending()
        try:
            return future.result(timeout=max(0.0, until - self.clock()))
        except TimeoutError:
            return False

    async def ready_async(self) -> bool:
        """The same, awaited on an event loop without a worker thread."""
        future, until = self.pending()
        if future.done():
            return future.result()
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          max(0.0, until - self.clock()))
        except TimeoutError:
            return False


def _done(value: bool) -> Future[bool]:
    future: Future[bool] = Future()
    future.set_result(value)
    return future


class MetricsPage(Protocol):
    """What :class:`OpsEndpoints` needs of :class:`mfa_middleware.metrics.Metrics`."""

    networks: tuple[IPNetwork, ...]

    def exposition(self) -> tuple[bytes, str]:
        """The scrape body and its content type."""
        ...


class OpsEndpoints:
    """The operator endpoints under the prefix: health, readiness and (when configured) the metrics page."""

    def __init__(self, prefix: str, readiness: Readiness, metrics: MetricsPage | None = None,
                 metrics_path: str | None = None) -> None:
        self.health_path, self.ready_path = f"{prefix}/health", f"{prefix}/ready"
        self.readiness = readiness
        self.metrics = metrics if metrics_path is not None else None
        self.metrics_path = metrics_path if metrics is not None else None
        self.paths = frozenset(p for p in (self.health_path, self.ready_path, self.metrics_path) if p)

    def wants(self, path: str | None) -> bool:
        return path in self.paths

    def _method_refused(self, method: str) -> Reply | None:
        if method in ("GET", "HEAD"):
            return None
        return Reply(405, [*PLAIN, ("Allow", "GET, HEAD")], b"method not allowed\n")

    def reply(self, method: str, path: str, client_ip: str) -> Reply:
        """The answer (readiness waits at most its bound in this thread)."""
        refused = self._method_refused(method)
        if refused is not None:
            return _head(method, refused)
        if path == self.ready_path:
            return _head(method, _ready_reply(self.readiness.ready()))
        return _head(method, self._other(path, client_ip))

    async def reply_async(self, method: str, path: str, client_ip: str) -> Reply:
        refused = self._method_refused(method)
        if refused is not None:
            return _head(method, refused)
        if path == self.ready_path:
            return _head(method, _ready_reply(await self.readiness.ready_async()))
        return _head(method, self._other(path, client_ip))

    def _other(self, path: str, client_ip: str) -> Reply:
        if path == self.health_path:
            return Reply(200, PLAIN, b"ok\n")
        metrics = self.metrics
        assert metrics is not None and path == self.metrics_path
        if not client_ip or not is_trusted_peer(client_ip, metrics.networks):
            return Reply(403, PLAIN, b"forbidden\n")
        body, kind = metrics.exposition()
        return Reply(200, [("Content-Type", kind), ("Cache-Control", "no-store")], body)


def _ready_reply(ok: bool) -> Reply:
    if ok:
        return Reply(200, PLAIN, b"ready\n")
    return Reply(503, [*PLAIN, ("Retry-After", "5")], b"not ready\n")


def _head(method: str, reply: Reply) -> Reply:
    headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
    return Reply(reply.status, headers, b"" if method == "HEAD" else reply.body)


class PagesWithOps:
    """The sign-in pages (a WSGI app) with the operator endpoints answered first. The WSGI and forward-auth
    adapters hand requests under the prefix to this app with ``PATH_INFO`` normalised and ``mfa.client_ip`` set."""

    def __init__(self, pages: SignInPages, ops: OpsEndpoints) -> None:
        self.pages, self.ops = pages, ops

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in self.ops.paths:
            reply = self.ops.reply(str(environ.get("REQUEST_METHOD", "GET")).upper(), path,
                                   str(environ.get("mfa.client_ip") or ""))
            start_response(reply.status_line, reply.headers)
            return [reply.body]
        return self.pages(environ, start_response)

    def message_html(self, title: str, message: str) -> str:
        return self.pages.message_html(title, message)


__all__ = ["OpsEndpoints", "PagesWithOps", "READY_CACHE", "READY_TIMEOUT", "Readiness"]
