"""The composition root: builds one runtime, its sign-in pages and its gate, and hands them to an adapter.

This is the only module that knows both the adapters (:mod:`mfa_middleware.adapters`) and the pages
(:mod:`mfa_middleware.pages`); those two packages never import each other. The public classes keep the one-line
wrapping the README shows::

    app = MFAMiddleware(app, "mfa.toml")          # WSGI
    app = ASGIMFAMiddleware(app, "mfa.toml")      # ASGI
    app = ForwardAuthApp(Runtime(load_config("mfa.toml")))   # nginx auth_request, Traefik/Caddy forwardAuth
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .adapters.asgi import ASGIAdapter, ASGIApp
from .adapters.forward_auth import ForwardAuthAdapter
from .adapters.gate import Gate
from .adapters.wsgi import WSGIAdapter, WSGIApp
from .config import Config, load_config
from .health import READY_TIMEOUT, OpsEndpoints, PagesWithOps, Readiness
from .pages.app import PagesApp
from .runtime import Runtime

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from .metrics import Metrics
    from .store import Store


@dataclass(frozen=True, slots=True)
class Assembly:
    """What every adapter is built from: the runtime, the sign-in pages (with the operator endpoints in front:
    health, readiness, metrics) and the gate; ``metrics`` is None unless ``[metrics] enabled``."""

    runtime: Runtime
    pages: PagesWithOps
    gate: Gate
    ops: OpsEndpoints
    metrics: Metrics | None = None


def assemble(config: Config | str | os.PathLike[str] | Runtime, *, clock: Callable[[], float] = time.time,
             store: Store | None = None, password_hasher: PasswordHasher | None = None,
             template_dirs: Iterable[str] = ()) -> Assembly:
    """Build the parts from a configuration (a :class:`Config` or a path to a TOML file) or an existing runtime."""
    if isinstance(config, Runtime):
        runtime = config
    else:
        cfg = config if isinstance(config, Config) else load_config(config)
        runtime = Runtime(cfg, clock=clock, store=store, password_hasher=password_hasher)
    pages = PagesApp(runtime, template_dirs)
    cfg = runtime.config
    metrics: Metrics | None = None
    gate: Gate
    if cfg.metrics.enabled:
        from .metrics import CountingGate, Metrics

        metrics = Metrics(cfg.metrics, runtime)
        gate = CountingGate(runtime, pages.message_html, metrics.tallies)
    else:
        gate = Gate(runtime, pages.message_html)  # nothing counted: the hot path is exactly as it was
    store = runtime.store
    ops = OpsEndpoints(cfg.prefix, Readiness(lambda: store.ping(READY_TIMEOUT)), metrics, cfg.metrics.path)
    if metrics is not None:
        metrics.start_server()
    return Assembly(runtime, PagesWithOps(pages, ops), gate, ops, metrics)


class MFAMiddleware(WSGIAdapter):
    """Wrap a WSGI app: ``app = MFAMiddleware(app, "mfa.toml")``."""

    def __init__(self, app: WSGIApp, config: Config | str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.time, store: Store | None = None,
                 password_hasher: PasswordHasher | None = None, template_dirs: Iterable[str] = ()) -> None:
        parts = assemble(config, clock=clock, store=store, password_hasher=password_hasher,
                         template_dirs=template_dirs)
        super().__init__(app, parts.runtime, parts.gate, parts.pages)
        self.ops, self.metrics = parts.ops, parts.metrics


class ASGIMFAMiddleware(ASGIAdapter):
    """Wrap an ASGI app: ``app = ASGIMFAMiddleware(app, "mfa.toml")``."""

    def __init__(self, app: ASGIApp, config: Config | str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.time, store: Store | None = None,
                 password_hasher: PasswordHasher | None = None, template_dirs: Iterable[str] = ()) -> None:
        parts = assemble(config, clock=clock, store=store, password_hasher=password_hasher,
                         template_dirs=template_dirs)
        super().__init__(app, parts.runtime, parts.gate, parts.pages)
        self.ops, self.metrics = parts.ops, parts.metrics


class ForwardAuthApp(ForwardAuthAdapter):
    """The forward-auth server's WSGI app (``mfa-middleware serve``) for one runtime."""

    def __init__(self, runtime: Runtime, template_dirs: Iterable[str] = ()) -> None:
        parts = assemble(runtime, template_dirs=template_dirs)
        super().__init__(parts.runtime, parts.gate, parts.pages)
        self.ops, self.metrics = parts.ops, parts.metrics
