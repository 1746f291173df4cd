"""The WSGI adapter: ``MFAMiddleware(app, config)``.

It turns the environ into :class:`RequestFacts`, asks the pure core for a decision and carries it out. Trust
model, as in werkzeug's ProxyFix: nothing from the client is trusted by default. ``REMOTE_USER`` is read from
the environ (set by the server) only when ``remote_user`` is a configured primary method; a ``Remote-User``
request header is removed before the app sees the request. ``X-Forwarded-For``/``-Proto`` count only from
``trusted_proxies``.

The app receives the normalised path in ``PATH_INFO``, ``REMOTE_USER`` set to the signed-in user, and
``environ["mfa.identity"]`` (an :class:`~mfa_middleware.core.decision.Identity`).

The authenticated hot path reads no store: cookie parse, one HMAC check, the timeouts, and a lookup in the
in-process revocation cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..config import Config, load_config
from ..core.basic import BasicFailure, parse_basic
from ..core.decision import BasicChallenge, Challenge, Deny, Pass, Redirect, Unavailable, decide, decide_basic
from ..core.facts import RequestFacts, client_address, is_trusted_peer, wants_json
from ..core.paths import normalize_path
from ..primary.remote_user import remote_user_from_environ
from ..runtime import Runtime
from .cookies import clear_cookie_header, cookie_names, read_cookie, set_cookie_header

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from ..store import Store

log = logging.getLogger("mfa_middleware")
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
NO_STORE = [("Cache-Control", "no-store"), ("Vary", "Cookie")]
_STRIP_HEADERS = ("HTTP_REMOTE_USER", "HTTP_X_REMOTE_USER")


class MFAMiddleware:
    """Wrap a WSGI app: ``app = MFAMiddleware(app, "mfa.toml")``."""

    def __init__(self, app: WSGIApp, config: Config | str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.time, store: Store | None = None,
                 password_hasher: PasswordHasher | None = None, template_dirs: Iterable[str] = ()) -> None:
        from ..pages.app import PagesApp

        cfg = config if isinstance(config, Config) else load_config(config)
        self.app = app
        self.runtime = Runtime(cfg, clock=clock, store=store, password_hasher=password_hasher)
        self.pages = PagesApp(self.runtime, template_dirs)
        self.prefix = cfg.prefix
        self._prefix_slash = cfg.prefix + "/"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        rt = self.runtime
        path = normalize_path(environ.get("PATH_INFO", ""))
        if path is None:
            return self._page(start_response, 400, "Bad request", "The request path could not be understood.",
                              environ)
        environ["PATH_INFO"] = path
        for key in _STRIP_HEADERS:
            environ.pop(key, None)
        https = self._https(environ)
        if https:
            environ["wsgi.url_scheme"] = "https"
        peer = environ.get("REMOTE_ADDR", "") or ""
        client_ip = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"), rt.trusted_proxies)
        environ["mfa.client_ip"] = client_ip
        if path == self.prefix or path.startswith(self._prefix_slash):
            return self.pages(environ, start_response)

        now = rt.clock()
        method = environ.get("REQUEST_METHOD", "GET").upper()
        requirement = rt.policy.match(method, path)
        names = cookie_names(rt.config.session, https)
        token = read_cookie(environ.get("HTTP_COOKIE", ""), names.session)
        session = rt.codec.load_session(token) if token else None
        facts = RequestFacts(
            method=method, path=path, query=environ.get("QUERY_STRING", ""), scheme="https" if https else "http",
            host=environ.get("HTTP_HOST", ""), client_ip=client_ip, session_cookie=token,
            authorization=environ.get("HTTP_AUTHORIZATION"),
            wants_json=wants_json(environ.get("HTTP_ACCEPT", ""), environ.get("HTTP_X_REQUESTED_WITH", "")),
            wants_html="text/html" in environ.get("HTTP_ACCEPT", ""),
            user_agent=environ.get("HTTP_USER_AGENT", ""))
        if requirement.basic and self._wants_basic(facts, token):
            view = rt.revocations.view(now)
            creds = parse_basic(facts.authorization)
            verdict = (rt.basic.authenticate(creds, client_ip=client_ip, user_agent=facts.user_agent, now=now,
                                             view=view) if creds is not None else BasicFailure("malformed"))
            decision = decide_basic(facts, requirement, verdict, now, view, rt.decision_settings)
        else:
            remote = remote_user_from_environ(environ, rt.config.primary)
            decision = decide(facts, requirement, session, now, rt.revocations.view(now), rt.decision_settings,
                              remote)

        if isinstance(decision, Pass):
            if decision.identity is None:
                return self.app(environ, start_response)
            environ["REMOTE_USER"] = decision.identity.username
            environ["mfa.identity"] = decision.identity
            if decision.refreshed is None:
                return self.app(environ, start_response)
            cookie = set_cookie_header(names.session, rt.codec.dump_session(decision.refreshed), secure=names.secure)

            def refreshing_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                # A response that sets our cookie must never be stored by a shared cache.
                vary = [v for k, v in headers if k.lower() == "vary"]
                kept = [(k, v) for k, v in headers if k.lower() not in ("cache-control", "vary")]
                kept += [("Set-Cookie", cookie), ("Cache-Control", "private, no-store"),
                         ("Vary", ", ".join([*vary, "Cookie"]))]
                return start_response(status, kept, exc_info)

            return self.app(environ, refreshing_start_response)

        extra: list[tuple[str, str]] = []
        if getattr(decision, "clear_session", False):
            extra.append(("Set-Cookie", clear_cookie_header(names.session, secure=names.secure)))
        if isinstance(decision, Redirect):
            start_response("302 Found", [("Location", decision.location), ("Content-Type", "text/plain"),
                                         ("Content-Length", "0"), *NO_STORE, *extra])
            return [b""]
        if isinstance(decision, Challenge):
            body = json.dumps({"error": "authentication_required", "message": decision.reason,
                               "login_url": decision.login_url}).encode()
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body))), *NO_STORE, *extra])
            return [body]
        if isinstance(decision, BasicChallenge):
            body = (decision.reason + "\n").encode()
            realm = rt.config.basic.realm
            start_response("401 Unauthorized", [
                ("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *NO_STORE])
            return [body]
        if isinstance(decision, Deny):
            title = "Access denied" if decision.status == 403 else "Bad request"
            return self._page(start_response, decision.status, title, decision.reason, environ, facts.wants_json)
        assert isinstance(decision, Unavailable)
        log.error("refusing requests: %s", decision.reason)
        return self._page(start_response, 503, "Service unavailable",
                          "Sign-in is unavailable right now. Try again in a few minutes.", environ, facts.wants_json)

    @staticmethod
    def _wants_basic(facts: RequestFacts, session_token: str | None) -> bool:
        """On a Basic rule: any Authorization header goes the Basic way; so does a client with no session
        cookie that is not a browser (a browser asks for HTML and is sent to the sign-in page instead)."""
        if facts.authorization is not None:
            return True
        return session_token is None and not facts.wants_html

    def _https(self, environ: dict[str, Any]) -> bool:
        if environ.get("wsgi.url_scheme") == "https":
            return True
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto and self.runtime.trusted_proxies:
            if is_trusted_peer(environ.get("REMOTE_ADDR", "") or "", self.runtime.trusted_proxies):
                return bool(proto.split(",")[-1].strip().lower() == "https")
        return False

    def _page(self, start_response: StartResponse, status: int, title: str, message: str,
              environ: dict[str, Any], as_json: bool | None = None) -> Iterable[bytes]:
        if as_json is None:
            as_json = wants_json(environ.get("HTTP_ACCEPT", ""), environ.get("HTTP_X_REQUESTED_WITH", ""))
        reasons = {400: "Bad Request", 403: "Forbidden", 503: "Service Unavailable"}
        if as_json:
            body = json.dumps({"error": title.lower().replace(" ", "_"), "message": message}).encode()
            kind = "application/json"
        else:
            body = self.pages.jinja.get_template("message.html").render(
                title=title, message=message, site_name=self.runtime.config.site_name, prefix=self.prefix).encode()
            kind = "text/html; charset=utf-8"
        headers = [("Content-Type", kind), ("Content-Length", str(len(body))), *NO_STORE]
        if status == 503:
            headers.append(("Retry-After", "30"))
        start_response(f"{status} {reasons.get(status, 'Error')}", headers)
        return [body]


__all__ = ["MFAMiddleware"]
