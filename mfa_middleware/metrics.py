"""Prometheus metrics for operators (README, "Metrics"): off unless ``[metrics] enabled = true``; needs the
``metrics`` extra (``pip install 'mfa-middleware[metrics]'``, which installs ``prometheus-client``).

What is counted (every name starts with ``mfa_``):

- ``mfa_sign_ins_total{step, method, result}``: each audited sign-in step: ``step`` is ``primary`` (the
  password form or the server's Windows sign-in), ``second_factor``, ``enroll`` or ``basic`` (HTTP Basic);
  ``method`` the primary method, the second-factor kind or the Basic credential kind; ``result`` the audit
  result (``success``, ``failure``, ``locked``, ...).
- ``mfa_lockouts_total{step}``: lockouts started (an account reached ``[lockout] max_failures``).
- ``mfa_decisions_total{outcome}``: the gate's decisions: ``pass``, ``redirect``, ``challenge``, ``deny``,
  ``bad_request``, ``unavailable``, ``pages`` (handed to the sign-in pages), ``other``.
- ``mfa_revocation_view_age_seconds``: how old this process's revocation snapshot is (absent before the first).
- ``mfa_store_query_seconds``: a histogram of store statement latencies (each SQL statement, as the driver runs
  it), with ``mfa_store_pool_checked_out`` (PostgreSQL connections in use now).

Rules:

- **No personal data or secrets in labels.** Every label value comes from a fixed, small set known here; any
  other value (a result or kind this module does not know) is counted as ``other``. User names, addresses,
  user agents, codes, passwords and cookies never reach a label or a sample, so a scrape can be shown to anyone
  with access to the monitoring system.
- **One registry per middleware instance** (a private :class:`prometheus_client.CollectorRegistry`), never the
  process-wide default: two middlewares in one process count separately, and tests see only their own counts.
- **Who may scrape:** only client addresses inside ``networks`` (the address as the trusted-proxy chain gives
  it, as everywhere else; on the metrics port, the direct peer); anyone else gets 403.
- **The hot path stays cheap:** a decision is counted with one ``next()`` on an :class:`itertools.count` (atomic
  under the GIL, no lock, no allocation), read back only when scraped (:class:`Tally`); nothing is counted when
  metrics are off (the plain :class:`~mfa_middleware.adapters.gate.Gate` runs).
- Metrics are per process. A server with several worker processes (gunicorn ``--workers``) has one registry per
  worker: use threads (``mfa-middleware serve --workers`` are threads) or scrape each worker's own port.
"""

from __future__ import annotations

import itertools
import logging
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sqlalchemy import event

from .adapters.gate import Gate, GateResult
from .config import KNOWN_METHODS, MetricsConfig
from .core.facts import IPNetwork, is_trusted_peer, parse_networks

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from .adapters.wsgi import StartResponse
    from .runtime import Runtime

log = logging.getLogger("mfa_middleware.metrics")

OUTCOMES = ("pass", "redirect", "challenge", "deny", "bad_request", "unavailable", "pages", "other")
_STATUS_OUTCOME = {302: "redirect", 401: "challenge", 403: "deny", 400: "bad_request", 503: "unavailable"}
STEPS = frozenset({"primary", "second_factor", "enroll", "basic"})
METHODS = frozenset({*KNOWN_METHODS, "forms", "remote_user", "bypass", "app_password"})
RESULTS = frozenset({"success", "failure", "locked", "client_locked", "blocked", "unknown_user", "accepted",
                     "rejected", "replayed", "pending", "fraud", "bypassed", "app_password_required", "started",
                     "resent", "invalid"})
#: store statement latency buckets (seconds): a local database answers in well under a millisecond
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Tally:
    """A counter that costs one ``next()`` to increase and is exact under threads.

    ``add`` is the bound ``__next__`` of an :class:`itertools.count`: a C call that the GIL makes atomic. Reading
    the value calls ``next()`` as well, so each read is remembered and subtracted (under a lock only readers take).
    """

    __slots__ = ("add", "_count", "_reads", "_lock")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.add: Callable[[], int] = self._count.__next__
        self._reads = 0
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        with self._lock:
            seen = next(self._count) - self._reads
            self._reads += 1
            return seen


class CountingGate(Gate):
    """The gate, counting each decision by outcome (used only when metrics are on)."""

    def __init__(self, runtime: Runtime, render_message: Callable[[str, str], str],
                 tallies: Mapping[str, Tally]) -> None:
        super().__init__(runtime, render_message)
        self._tallies = tallies
        self._pass = tallies["pass"].add

    def check(self, **kwargs: Any) -> GateResult:
        result = super().check(**kwargs)
        if result.forward:
            self._pass()
        elif result.blocking:
            pass  # asked again in a thread: counted then
        elif result.to_pages:
            self._tallies["pages"].add()
        else:
            status = result.reply.status if result.reply is not None else 0
            self._tallies[_STATUS_OUTCOME.get(status, "other")].add()
        return result


def _label(value: object, known: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in known else "other"


class Metrics:
    """The metrics of one middleware instance (see the module docstring). Built by the composition root."""

    def __init__(self, config: MetricsConfig, runtime: Runtime) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError:
            raise RuntimeError("[metrics] enabled = true needs prometheus-client: "
                               "pip install 'mfa-middleware[metrics]'") from None
        self.config = config
        self.runtime = runtime
        self.networks: tuple[IPNetwork, ...] = parse_networks(config.networks)
        self.registry = CollectorRegistry(auto_describe=True)
        self.sign_ins = Counter("mfa_sign_ins", "Sign-in steps by step, method and result.",
                                ["step", "method", "result"], registry=self.registry)
        self.lockouts = Counter("mfa_lockouts", "Lockouts started, by the step whose failure started them.",
                                ["step"], registry=self.registry)
        self.store_latency = Histogram("mfa_store_query_seconds", "Store statement latency.",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tallies = {outcome: Tally() for outcome in OUTCOMES}
        self.registry.register(cast("Collector", _Collected(self)))
        self._max_failures = runtime.config.lockout.max_failures
        self._engine = runtime.store.engine
        event.listen(self._engine, "before_cursor_execute", self._before)
        event.listen(self._engine, "after_cursor_execute", self._after)
        runtime.audit.observers.append(self.observe_audit)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- sources ---------------------------------------------------------------------------------------------
    @staticmethod
    def _before(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info["mfa_started"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool) -> None:
        started = conn.info.pop("mfa_started", None)
        if started is not None:
            self.store_latency.observe(time.perf_counter() - started)

    def observe_audit(self, event_name: str, result: str, detail: Mapping[str, Any]) -> None:
        """An audit row was written: count sign-in steps and lockouts (labels from fixed sets only)."""
        if event_name not in STEPS:
            return
        kind = detail.get("primary") if event_name == "primary" else (
            detail.get("credential") if event_name == "basic" else detail.get("method"))
        if event_name == "basic" and kind == "primary":
            kind = "password"
        method = _label(kind, METHODS | {"password"}) if kind is not None else "none"
        self.sign_ins.labels(event_name, method, _label(result, RESULTS)).inc()
        count = detail.get("count")
        if "locked_until" in detail or (isinstance(count, int) and count == self._max_failures
                                        and result in ("failure", "rejected", "replayed")):
            self.lockouts.labels(event_name).inc()

    def revocation_age(self) -> float | None:
        view = getattr(self.runtime.revocations, "_view", None)
        fetched = getattr(view, "fetched_at", None)
        if not isinstance(fetched, float | int) or fetched < 0:
            return None
        return max(0.0, self.runtime.clock() - fetched)

    # -- exposition ------------------------------------------------------------------------------------------
    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def wsgi_app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The app of the metrics port: every path answers the scrape, to allowed peers only."""
        if not is_trusted_peer(str(environ.get("REMOTE_ADDR") or ""), self.networks):
            start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", "10")])
            return [b"forbidden\n"]
        body, kind = self.exposition()
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]

    def start_server(self) -> int | None:
        """Serve :meth:`wsgi_app` on ``config.host:config.port`` in a daemon thread; returns the port bound
        (``port = 0`` binds a free one). A port already taken is logged, not fatal: metrics never stop sign-in."""
        if self.config.port is None or self._server is not None:
            return None
        try:
            server = make_server(self.config.host, self.config.port, self.wsgi_app, _ThreadingServer, _QuietHandler)
        except OSError as exc:
            log.error("metrics port %s:%s not served: %s", self.config.host, self.config.port, exc)
            return None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="mfa-metrics-server", daemon=True)
        self._thread.start()
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for name, fn in (("before_cursor_execute", self._before), ("after_cursor_execute", self._after)):
            if event.contains(self._engine, name, fn):
                event.remove(self._engine, name, fn)
        if self.observe_audit in self.runtime.audit.observers:
            self.runtime.audit.observers.remove(self.observe_audit)


class _Collected:
    """Values read at scrape time: decision tallies, the revocation view's age, pool use."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        decisions = CounterMetricFamily("mfa_decisions", "Gate decisions by outcome.", labels=["outcome"])
        for outcome, tally in self.metrics.tallies.items():
            decisions.add_metric([outcome], tally.value)
        yield decisions
        age = GaugeMetricFamily("mfa_revocation_view_age_seconds", "Age of this process's revocation snapshot.")
        value = self.metrics.revocation_age()
        if value is not None:
            age.add_metric([], value)
        yield age
        pool = self.metrics.runtime.store.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        if callable(checked_out):
            yield GaugeMetricFamily("mfa_store_pool_checked_out", "Store connections in use.", value=checked_out())


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


__all__ = ["CountingGate", "Metrics", "OUTCOMES", "Tally"]
