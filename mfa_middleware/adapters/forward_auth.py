"""Forward authentication: protect apps in any language behind nginx ``auth_request`` or Traefik/Caddy
``forwardAuth``. ``mfa-middleware serve`` runs this app: the sign-in pages plus two authorization endpoints.

``GET /_mfa/auth/nginx`` (for nginx ``auth_request``) and ``GET /_mfa/auth/forward`` (for Traefik
``forwardAuth`` and Caddy ``forward_auth``) decide whether the ORIGINAL request may pass:

- the original method, host and URI are read from ``X-Original-Method``/``X-Original-URI`` (nginx) or
  ``X-Forwarded-Method``/``X-Forwarded-Uri``/``X-Forwarded-Host``/``X-Forwarded-Proto`` (Traefik, Caddy), and
  the client address from ``X-Forwarded-For``, ONLY when the peer is one of ``trusted_proxies``. Any other peer
  gets 403 whatever it sends: it could otherwise ask about any URI it likes. With no trusted proxies
  configured the endpoints refuse everything and say so.
- the session cookie and ``Authorization`` header of the original request (forwarded by the proxy) are checked
  by the same gate as the in-process adapters, so the outcome is the same for the same request.
- only a URI in canonical form is judged (:func:`canonical_path`). The in-process adapters hand the app the
  normalised path; a proxy forwards the URI as the client wrote it, and the server behind it may resolve
  ``..``, ``;params``, ``//``, ``\\`` or a second round of percent-decoding differently from us (``/admin/..;/x``
  is ``/x`` to us and to Tomcat, but a folder named ``..;`` in ``/admin/`` to a static file server). So the
  original URI's path is decoded once and normalised, and unless that changes nothing at all, the answer is 403.
  Refused, among others: any ``.`` or ``..`` segment (also as ``%2e``), ``//``, ``;params``, a trailing ``/.``,
  encoded slashes and backslashes (``%2F``, ``%5C``), backslashes, ``%XX`` left after one decoding (``%2561``),
  control characters, ``#`` or an encoded ``?``, invalid UTF-8 and overlong forms, a segment ending in a dot or a
  space, fullwidth and other compatibility forms of ASCII characters. A trailing slash is kept by normalising,
  so ``/docs/`` and ``/docs`` are both canonical (and judged as written). A URI's valid UTF-8, raw or
  percent-encoded, passes.

Answers: 200 with ``Remote-User``, ``Remote-Groups``, ``Remote-Email``, ``Remote-Name`` (and a refreshed
``Set-Cookie`` when due) when the request may pass; 401 for API and Basic clients (with the gate's body and
``WWW-Authenticate``); for a browser that must sign in, ``/auth/forward`` answers 302 to the sign-in page (an
absolute URL on the original host, so the proxy need not rewrite it) and ``/auth/nginx`` answers 401 with the
sign-in address in ``Location`` (``samples/nginx/nginx.conf`` turns only that case into a redirect, so API
clients keep their 401); 403 for refused or unparseable requests, and for a trusted proxy that does not say
which URI it asks about (a misconfiguration, logged); 503 when the store is down. The four ``Remote-*`` headers
are always sent, empty when nobody is signed in, so a proxy that copies them never passes on the client's own.

The ``Remote-*`` values are printable ASCII whatever the user's data holds (:func:`header_value`): UTF-8,
with every byte outside printable ASCII, every ``%`` and ``,``, and a space that comes first or last, written
as ``%XX``. Plain ASCII values
arrive unchanged; an app that may see other characters reads each value (each ``Remote-Groups`` item after
splitting on ``,``) with ``urllib.parse.unquote`` or its language's percent-decoder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from ..core.facts import is_trusted_peer
from ..core.paths import normalize_path, wsgi_form
from ..runtime import Runtime
from .gate import Gate, Reply, SignInPages
from .wsgi import EnvironHeaders, StartResponse

log = logging.getLogger("mfa_middleware.forward_auth")


class ForwardHeaders:
    """The original request's headers as the proxy forwarded them; the original host comes from
    ``X-Forwarded-Host`` when present."""

    __slots__ = ("host", "inner")

    def __init__(self, inner: EnvironHeaders, host: str | None) -> None:
        self.inner = inner
        self.host = host

    def get(self, name: str) -> str | None:
        if name == "host" and self.host:
            return self.host
        return self.inner.get(name)


class ForwardAuthAdapter:
    """A WSGI app: the authorization endpoints under ``<prefix>/auth/``, the sign-in pages under the prefix. Built
    by :class:`mfa_middleware.middleware.ForwardAuthApp` from a runtime."""

    def __init__(self, runtime: Runtime, gate: Gate, pages: SignInPages) -> None:
        self.rt = runtime
        self.pages = pages
        self.gate = gate
        self.prefix = runtime.config.prefix
        self.endpoints = {f"{self.prefix}/auth/nginx": "nginx", f"{self.prefix}/auth/forward": "forward"}
        if not runtime.trusted_proxies:
            log.warning("no trusted_proxies configured: the forward-auth endpoints will refuse every request")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        for key in ("HTTP_REMOTE_USER", "HTTP_X_REMOTE_USER"):
            environ.pop(key, None)
        kind = self.endpoints.get(environ.get("PATH_INFO", ""))
        if kind is not None:
            return self.authorize(kind, environ, start_response)
        result = self.gate.check(method=environ.get("REQUEST_METHOD", "GET").upper(),
                                 raw_path=environ.get("PATH_INFO", ""), query=environ.get("QUERY_STRING", ""),
                                 scheme=environ.get("wsgi.url_scheme", "http"), peer=environ.get("REMOTE_ADDR") or "",
                                 headers=EnvironHeaders(environ), remote_user=None)
        if result.to_pages:
            assert result.path is not None
            environ["PATH_INFO"] = wsgi_form(result.path)
            environ["mfa.client_ip"] = result.client_ip
            if result.https:
                environ["wsgi.url_scheme"] = "https"
            return self.pages(environ, start_response)
        return self._send(start_response, Reply(404, [("Content-Type", "text/plain")], b"Not found: this server only "
                                                b"answers authorization requests and serves the sign-in pages.\n"))

    def authorize(self, kind: str, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        headers = EnvironHeaders(environ)
        peer = environ.get("REMOTE_ADDR") or ""
        if not is_trusted_peer(peer, self.rt.trusted_proxies):
            return self._send(start_response, Reply(403, [("Content-Type", "text/plain")],
                                                    b"Forbidden: this peer is not a configured trusted proxy.\n"))
        method = headers.get("x-original-method") or headers.get("x-forwarded-method") or "GET"
        uri = headers.get("x-original-uri") or headers.get("x-forwarded-uri")
        if not uri:
            log.error("authorization request from %s without X-Original-URI or X-Forwarded-Uri: check the proxy "
                      "configuration", peer)
            return self._send(start_response, Reply(403, [("Content-Type", "text/plain")],
                                                    b"Forbidden: the proxy did not say which URI to authorize "
                                                    b"(X-Original-URI or X-Forwarded-Uri).\n"))
        if not uri.startswith("/"):  # some proxies send a full URL
            parts = urlsplit(uri)
            uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        path, _, query = uri.partition("?")
        decoded = canonical_path(path)
        if decoded is None:
            log.info("refused a URI that is not in canonical form: %r", uri[:300])
            return self._send(start_response, self.gate.message(
                403, "Access denied", "The address is not in canonical form (dot segments, doubled or encoded "
                "slashes, ;parameters, backslashes or leftover percent-encoding): the server behind the proxy "
                "could read it differently.", headers))
        proto = (headers.get("x-forwarded-proto") or environ.get("wsgi.url_scheme", "http")).split(",")[-1].strip()
        result = self.gate.check(
            method=method.strip().upper()[:16], raw_path=decoded, query=query,
            scheme="https" if proto.lower() == "https" else "http", peer=peer,
            headers=ForwardHeaders(headers, headers.get("x-forwarded-host")), remote_user=None)
        if result.to_pages or result.forward:
            identity = result.identity
            out = [("Content-Type", "text/plain"), ("Cache-Control", "no-store"),
                   ("Remote-User", header_value(identity.username) if identity else ""),
                   ("Remote-Groups", ",".join(header_value(g) for g in identity.groups) if identity else ""),
                   ("Remote-Email", header_value(identity.email or "") if identity else ""),
                   ("Remote-Name", header_value(identity.name or "") if identity else "")]
            if result.refresh_cookie is not None:
                out.append(("Set-Cookie", result.refresh_cookie))
            return self._send(start_response, Reply(200, out, b""))
        reply = result.reply
        assert reply is not None
        if reply.status == 302 and kind == "nginx":
            # nginx auth_request accepts only 2xx, 401 and 403: a browser redirect travels as 401 + Location.
            reply = Reply(401, reply.headers, reply.body)
        elif reply.status == 302:
            # Traefik resolves a relative Location against the auth server: send an absolute one on the
            # original host (both read from the trusted proxy's headers).
            host = headers.get("x-forwarded-host") or headers.get("host") or ""
            if _HOST.match(host):
                scheme = "https" if result.https else "http"
                reply = Reply(302, [(k, f"{scheme}://{host}{v}" if k == "Location" else v) for k, v in reply.headers],
                              reply.body)
        elif reply.status == 400:
            reply = Reply(403, reply.headers, reply.body)
        return self._send(start_response, reply)

    @staticmethod
    def _send(start_response: StartResponse, reply: Reply) -> Iterable[bytes]:
        headers = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(reply.body))))
        start_response(reply.status_line, headers)
        return [reply.body]


_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


_ENCODED_SLASH = re.compile(rb"%(?:2f|5c)", re.IGNORECASE)


def canonical_path(raw: str) -> str | None:
    """The path of a URI as the proxy forwards it (``raw``: still percent-encoded, bytes as latin-1 text),
    decoded once (WSGI form), when it is canonical; ``None`` when it is not and must be refused.

    Canonical means: no encoded slash or backslash (``%2F``, ``%5C``: servers disagree on whether such a slash
    separates segments), and decoding it once then normalising it (:func:`~mfa_middleware.core.paths.normalize_path`)
    changes nothing, so every path it can be read as is the one the rules are matched against.
    """
    try:
        data = raw.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if b"%" in data and _ENCODED_SLASH.search(data):
        return None
    decoded = unquote_to_bytes(data).decode("latin-1") if b"%" in data else raw
    normalised = normalize_path(decoded)
    if normalised is None or wsgi_form(normalised) != decoded:
        return None
    return decoded


def header_value(text: str) -> str:
    """A ``Remote-*`` header value built from user data: printable ASCII, read back with ``urllib.parse.unquote``.

    The text's UTF-8 bytes are written as they are when they are printable ASCII other than ``%`` and ``,``
    (a space too, except first or last), and as ``%XX`` (upper-case hex) otherwise. Plain ASCII values
    (``alice``, ``alice@example.com``, ``Alice Smith``) are unchanged; ``zofia.michał@example.com`` becomes
    ``zofia.micha%C5%82@example.com``. No CR, LF or other control character is ever sent, and a ``,`` inside
    one group name cannot split ``Remote-Groups``.
    """
    if text.isascii() and text.isprintable() and "%" not in text and "," not in text and text.strip(" ") == text:
        return text
    data = text.encode("utf-8", "surrogatepass")
    last = len(data) - 1
    return "".join(chr(b) if (0x21 <= b <= 0x7E and b != 0x25 and b != 0x2C) or (b == 0x20 and 0 < i < last)
                   else f"%{b:02X}" for i, b in enumerate(data))
