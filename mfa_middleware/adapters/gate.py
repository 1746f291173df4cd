"""The gate: what every adapter (WSGI, ASGI, forward-auth) does with a request, written once.

An adapter hands over the request line, the peer address, a header lookup and the server's ``REMOTE_USER``
(if it has one); the gate normalises the path, works out the client address and scheme through trusted
proxies, matches the policy, verifies the session cookie or the Basic credential, asks the pure core for a
decision, and returns a :class:`GateResult`: forward to the app (with an identity and maybe a refreshed
cookie), hand the request to the sign-in pages, or send a ready-made :class:`Reply`. Adapters only translate
this into their own calls, so the same scenario gives the same outcome everywhere.

Trust model: nothing from the client is trusted by default. ``X-Forwarded-For``/``-Proto`` count only when the
direct peer is a configured trusted proxy; ``REMOTE_USER`` counts only when the server set it and
``remote_user`` is a configured primary method.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..logs import begin_request
from ..core.basic import BasicFailure, VerifiedCredential, parse_basic
from ..core.decision import (BasicChallenge, Challenge, Decision, Deny, Identity, Pass, Redirect, Unavailable,
                             decide, decide_basic)
from ..core.facts import RequestFacts, client_address, is_trusted_peer, wants_json
from ..core.paths import normalize_path
from ..runtime import Runtime
from ..web.cookies import clear_cookie_header, cookie_names, read_cookie, set_cookie_header
from ..web.headers import secure_headers

log = logging.getLogger("mfa_middleware")

NO_STORE = [("Cache-Control", "no-store"), ("Vary", "Cookie")]
#: the 400 page for a path core/paths.py refuses
REFUSED_PATH = ("The request path could not be understood. Addresses holding forms that servers read in different "
                "ways are refused: encoded slashes or percent signs, backslashes, control characters, a name ending "
                "in a dot or a space, and on Windows servers data streams (name::$DATA), short names (NAME~1) and "
                "wildcard characters. Check the address and try again.")
REASONS = {200: "OK", 302: "Found", 303: "See Other", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 413: "Content Too Large", 429: "Too Many Requests", 503: "Service Unavailable"}


class SignInPages(Protocol):
    """The sign-in pages as the adapters see them: a WSGI app for every path under the prefix, and a renderer for
    the message pages the gate answers with. The adapters never import the pages package; the composition root
    (:mod:`mfa_middleware.middleware`) hands them one."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        ...

    def message_html(self, title: str, message: str) -> str:
        ...


class Headers(Protocol):
    def get(self, name: str) -> str | None:
        """The value of request header ``name`` (lower case, e.g. ``"x-forwarded-for"``), or None."""
        ...


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer of ours (not the app's). Its headers always carry the security headers
    (:func:`~mfa_middleware.web.headers.secure_headers`), whoever builds it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", secure_headers(self.headers))

    @property
    def status_line(self) -> str:
        return f"{self.status} {REASONS.get(self.status, 'Error')}"


class GateResult(NamedTuple):
    """What to do with one request (a NamedTuple: immutable and cheap, as one is built per request)."""

    path: str | None  # the normalised path as text (decoded UTF-8); adapters hand WSGI apps its wsgi_form()
    https: bool
    client_ip: str
    to_pages: bool = False
    forward: bool = False
    identity: Identity | None = None
    refresh_cookie: str | None = None  # Set-Cookie value to add to the app's response
    reply: Reply | None = None
    #: set by ``check(may_block=False)``: deciding needs I/O (a store query or argon2); call again in a thread
    blocking: bool = False


class Gate:
    def __init__(self, runtime: Runtime, render_message: Callable[[str, str], str]) -> None:
        self.rt = runtime
        self.render_message = render_message
        self.prefix = runtime.config.prefix
        self._prefix_slash = self.prefix + "/"
        self._names = (cookie_names(runtime.config.session, False), cookie_names(runtime.config.session, True))
        self._trusted = runtime.trusted_proxies
        self._remote_user_trusted = "remote_user" in runtime.config.primary.methods
        self._windows = runtime.config.paths.windows  # IIS path folding (core/paths.py, rules 9 to 13)

    def trusts(self, peer: str) -> bool:
        """Whether the direct peer is a configured trusted proxy (whose ``X-Forwarded-*`` headers count)."""
        return bool(self._trusted) and is_trusted_peer(peer, self._trusted)

    def https(self, scheme: str, peer: str, headers: Headers) -> bool:
        if scheme == "https":
            return True
        if self._trusted:
            proto = headers.get("x-forwarded-proto")
            if proto and is_trusted_peer(peer, self._trusted):
                return proto.split(",")[-1].strip().lower() == "https"
        return False

    def check(self, *, method: str, raw_path: str, query: str, scheme: str, peer: str, headers: Headers,
              remote_user: str | None, may_block: bool = True) -> GateResult:
        """Decide one request. ``raw_path`` is the path as a WSGI server hands it over (percent-decoded once,
        latin-1 text standing for bytes); a path :func:`~mfa_middleware.core.paths.normalize_path` refuses gets
        400 (forward auth turns it into 403). ``remote_user`` is what the server itself authenticated, if anything.
        With ``may_block=False`` (an event loop), a decision that needs I/O returns ``blocking=True`` instead."""
        rt = self.rt
        incoming = headers.get("x-request-id")
        begin_request(incoming if incoming is not None and self.trusts(peer) else None)
        if self._trusted:
            https = self.https(scheme, peer, headers)
            client_ip = client_address(peer, headers.get("x-forwarded-for"), self._trusted)
        else:  # no trusted proxy: the connection itself says everything
            https, client_ip = scheme == "https", peer
        path = normalize_path(raw_path, self._windows)
        if path is None:
            return GateResult(None, https, client_ip,
                              reply=self.message(400, "Bad request", REFUSED_PATH, headers))
        if path == self.prefix or path.startswith(self._prefix_slash):
            return GateResult(path, https, client_ip, to_pages=True)

        now = rt.clock()
        requirement = rt.policy.match(method, path, client_ip)
        names = self._names[https]
        token = read_cookie(headers.get("cookie") or "", names.session)
        accept = headers.get("accept") or ""
        basic = requirement.basic
        facts = RequestFacts(method, path, query, "https" if https else "http", client_ip, token,
                             headers.get("authorization") if basic else None,  # read only where Basic counts
                             wants_json(accept, headers.get("x-requested-with") or ""), "text/html" in accept)
        if not may_block and rt.revocations.due(now):
            return GateResult(path, https, client_ip, blocking=True)
        view = rt.revocations.view(now)
        decision: Decision
        if basic and (facts.authorization is not None or (token is None and not facts.wants_html)):
            creds = parse_basic(facts.authorization)
            verdict: VerifiedCredential | BasicFailure
            if creds is None:
                verdict = BasicFailure("malformed")
            elif may_block:
                verdict = rt.basic.authenticate(creds, client_ip=client_ip,
                                                user_agent=(headers.get("user-agent") or "")[:300], now=now,
                                                view=view, trusted_network=requirement.trusts(client_ip))
            else:
                hit = rt.basic.cached(creds, now=now, view=view)
                if hit is None:
                    return GateResult(path, https, client_ip, blocking=True)
                verdict = hit
            decision = decide_basic(facts, requirement, verdict, now, view, rt.decision_settings)
        else:
            session = rt.codec.load_session(token) if token else None
            mapped = None
            if self._remote_user_trusted and remote_user:
                mapped = rt.remote_user.username(remote_user)
            decision = decide(facts, requirement, session, now, view, rt.decision_settings, mapped)

        if isinstance(decision, Pass):
            refresh = None
            if decision.refreshed is not None:
                refresh = set_cookie_header(names.session, rt.codec.dump_session(decision.refreshed),
                                            secure=names.secure)
            return GateResult(path, https, client_ip, False, True, decision.identity, refresh)  # forward
        return GateResult(path, https, client_ip, reply=self.reply_for(decision, names.session, names.secure,
                                                                       facts.wants_json, headers))

    def reply_for(self, decision: Decision, cookie: str, secure: bool, as_json: bool, headers: Headers) -> Reply:
        extra: list[tuple[str, str]] = []
        if getattr(decision, "clear_session", False):
            extra.append(("Set-Cookie", clear_cookie_header(cookie, secure=secure)))
        if isinstance(decision, Redirect):
            return Reply(302, [("Location", decision.location), ("Content-Type", "text/plain"),
                               ("Content-Length", "0"), *NO_STORE, *extra], b"")
        if isinstance(decision, Challenge):
            body = json.dumps({"error": "authentication_required", "message": decision.reason,
                               "login_url": decision.login_url}).encode()
            return Reply(401, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                               *NO_STORE, *extra], body)
        if isinstance(decision, BasicChallenge):
            body = (decision.reason + "\n").encode()
            return Reply(401, [("WWW-Authenticate", f'Basic realm="{self.rt.config.basic.realm}", charset="UTF-8"'),
                               ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                               *NO_STORE], body)
        if isinstance(decision, Deny):
            if decision.retry_after is not None:  # 429: a banned client address (services/regulation.py)
                reply = self.message(decision.status, "Too many attempts", decision.reason, headers, as_json)
                return Reply(reply.status, [*reply.headers, ("Retry-After", str(decision.retry_after))], reply.body)
            title = "Access denied" if decision.status == 403 else "Bad request"
            return self.message(decision.status, title, decision.reason, headers, as_json)
        assert isinstance(decision, Unavailable), decision
        log.error("answering 503: %s", decision.reason)
        reply = self.message(503, "Service unavailable",
                             "Sign-in is unavailable right now. Try again in a few minutes.", headers, as_json)
        return Reply(503, [*reply.headers, ("Retry-After", "30")], reply.body)

    def message(self, status: int, title: str, message: str, headers: Headers,
                as_json: bool | None = None) -> Reply:
        if as_json is None:
            as_json = wants_json(headers.get("accept") or "", headers.get("x-requested-with") or "")
        if as_json:
            body = json.dumps({"error": title.lower().replace(" ", "_"), "message": message}).encode()
            kind = "application/json"
        else:
            body = self.render_message(title, message).encode()
            kind = "text/html; charset=utf-8"
        return Reply(status, [("Content-Type", kind), ("Content-Length", str(len(body))), *NO_STORE], body)


def refreshed_headers(headers: list[tuple[str, str]], cookie: str) -> list[tuple[str, str]]:
    """The app's response headers plus our refreshed cookie; such a response must never be stored by a
    shared cache, so the app's Cache-Control is replaced and Cookie is added to Vary."""
    vary = [v for k, v in headers if k.lower() == "vary"]
    kept = [(k, v) for k, v in headers if k.lower() not in ("cache-control", "vary")]
    return [*kept, ("Set-Cookie", cookie), ("Cache-Control", "private, no-store"),
            ("Vary", ", ".join([*vary, "Cookie"]))]
