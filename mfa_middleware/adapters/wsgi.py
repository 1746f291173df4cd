"""The WSGI adapter: ``MFAMiddleware(app, config)``.

It turns the environ into :class:`RequestFacts`, asks the pure core for a decision and carries it out. Trust
model, as in werkzeug's ProxyFix: nothing from the client is trusted by default. ``REMOTE_USER`` is read from
the environ (set by the server) only when ``remote_user`` is a configured primary method; a ``Remote-User``
request header is removed before the app sees the request. ``X-Forwarded-For``/``-Proto`` count only from
``trusted_proxies``; from any other peer, ``X-Forwarded-For``/``-Proto``/``-Host`` and ``Forwarded`` are removed
before the app sees the request.

The app receives the normalised path (:mod:`mfa_middleware.core.paths`) in ``PATH_INFO`` in the form PEP 3333
requires, its UTF-8 bytes as latin-1 text, exactly as a server hands a path over (a path that is not valid UTF-8
gets 400); ``REMOTE_USER`` set to the signed-in user; and ``environ["mfa.identity"]`` (an
:class:`~mfa_middleware.core.decision.Identity`).

The authenticated hot path reads no store: cookie parse, one HMAC check (none for a cookie verified before, see
:mod:`mfa_middleware.core.tokens`), the timeouts, and a lookup in the in-process revocation cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from ..core.paths import wsgi_form
from .gate import Gate, SignInPages, refreshed_headers

if TYPE_CHECKING:
    from ..runtime import Runtime

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_STRIP_HEADERS = ("HTTP_REMOTE_USER", "HTTP_X_REMOTE_USER")
_FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_FORWARDED")


class WSGIAdapter:
    """The WSGI adapter: the gate in front of ``app``, the sign-in pages under the prefix. Built by
    :class:`mfa_middleware.MFAMiddleware` (``app = MFAMiddleware(app, "mfa.toml")``) from one runtime."""

    def __init__(self, app: WSGIApp, runtime: Runtime, gate: Gate, pages: SignInPages) -> None:
        self.app = app
        self.runtime, self.gate, self.pages = runtime, gate, pages

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        for key in _STRIP_HEADERS:
            environ.pop(key, None)
        if ("HTTP_X_FORWARDED_FOR" in environ or "HTTP_X_FORWARDED_PROTO" in environ
                or "HTTP_X_FORWARDED_HOST" in environ or "HTTP_FORWARDED" in environ):
            if not self.gate.trusts(environ.get("REMOTE_ADDR") or ""):
                # Forwarding headers from a client that is not a trusted proxy are the client's own words: the
                # app must not read them as the truth about the client.
                for key in _FORWARDED_HEADERS:
                    environ.pop(key, None)
        remote_user = environ.get("REMOTE_USER")
        result = self.gate.check(
            method=environ.get("REQUEST_METHOD", "GET").upper(), raw_path=environ.get("PATH_INFO", ""),
            query=environ.get("QUERY_STRING", ""), scheme=environ.get("wsgi.url_scheme", "http"),
            peer=environ.get("REMOTE_ADDR") or "", headers=EnvironHeaders(environ),
            remote_user=remote_user if isinstance(remote_user, str) else None)
        path, https, client_ip, to_pages, _, identity, cookie, reply, _ = result
        if reply is not None:
            start_response(reply.status_line, reply.headers)
            return [reply.body]
        assert path is not None
        environ["PATH_INFO"] = path if path.isascii() else wsgi_form(path)  # PEP 3333: bytes as latin-1 text
        environ["mfa.client_ip"] = client_ip
        if https:
            environ["wsgi.url_scheme"] = "https"
        if to_pages:
            return self.pages(environ, start_response)
        if identity is not None:
            environ["REMOTE_USER"] = identity.username
            environ["mfa.identity"] = identity
        else:
            # A bypass route with nobody signed in: a user the server authenticated on its own (without MFA)
            # must not reach the app as signed in (Django's RemoteUserMiddleware would log them in).
            environ.pop("REMOTE_USER", None)
        if cookie is None:
            return self.app(environ, start_response)

        def refreshing_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, refreshed_headers(headers, cookie), exc_info)

        return self.app(environ, refreshing_start_response)


_ENVIRON_KEYS: Final = {h: "HTTP_" + h.upper().replace("-", "_") for h in (
    "cookie", "accept", "authorization", "host", "user-agent", "x-requested-with", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-host", "x-forwarded-uri", "x-forwarded-method", "x-original-uri",
    "x-original-method")}  # a constant: never changed after import


class EnvironHeaders:
    """Header lookup over a WSGI environ (``cookie`` -> ``HTTP_COOKIE``), without copying the headers."""

    __slots__ = ("environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ

    def get(self, name: str) -> str | None:
        key = _ENVIRON_KEYS.get(name) or "HTTP_" + name.upper().replace("-", "_")
        value = self.environ.get(key)
        return value if isinstance(value, str) else None

__all__ = ["WSGIAdapter"]
