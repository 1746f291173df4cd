"""A WSGI app on IIS, protected by mfa_middleware, with Windows sign-in where IIS hands the user over.

One file for both hostings (see ``samples/iis/README.md``):

- **wfastcgi** (``web.config.wfastcgi``, ``WSGI_HANDLER = app.app``): IIS authenticates the Windows user and
  passes ``REMOTE_USER`` (``CONTOSO\\alice``) in the WSGI environ; with ``remote_user`` in ``[primary] methods``
  the sign-in page takes it without a password form, and the user goes straight to the second factor (or
  sets up the authenticator app the first time).
- **HttpPlatformHandler** (``web.config.httpplatform``, ``waitress-serve ... app:app``): IIS proxies HTTP to
  waitress; no ``REMOTE_USER`` arrives, so users sign in with the password form (``forms``).

The configuration is ``$MFA_CONFIG`` (both web.config files set it), or ``mfa.toml`` beside this file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from html import escape
from pathlib import Path
from typing import Any

from mfa_middleware import MFAMiddleware

PAGES = {
    "/": "Contoso intranet",
    "/public/": "Public notice board",
}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The application: a home page and a public page; everything else is 404."""
    path = environ.get("PATH_INFO") or "/"
    title = PAGES.get(path)
    if title is None:
        body = b"Not found\n"
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]
    identity = environ.get("mfa.identity")  # None on the public page without a session
    if identity is None:
        who = "<p>You are not signed in; this page is public.</p>"
    else:
        how = " + ".join(identity.methods)  # e.g. "remote_user + totp" (Windows sign-in) or "forms + totp"
        who = (f'<p>Signed in as <strong id="user">{escape(environ.get("REMOTE_USER", ""))}</strong> '
               f'with <span id="methods">{escape(how)}</span>.</p>')
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head>
<body><h1>{escape(title)}</h1>{who}
<nav><a href="/">Home</a> | <a href="/public/">Public</a> | <a href="/_mfa/">Security info</a> |
<a href="/_mfa/logout">Sign out</a></nav></body></html>
"""
    data = html.encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


# Protect the app: the middleware answers /_mfa/* itself and applies the rules of mfa.toml to the rest.
CONFIG = os.environ.get("MFA_CONFIG") or str(Path(__file__).with_name("mfa.toml"))
app = MFAMiddleware(app, CONFIG)


if __name__ == "__main__":  # try it without IIS: python app.py (forms sign-in only; nothing sets REMOTE_USER)
    from waitress import serve  # type: ignore[import-untyped]

    serve(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
