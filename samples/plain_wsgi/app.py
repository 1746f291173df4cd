"""A plain WSGI app (one function, no framework) protected by mfa_middleware.

Run it with ``python samples/plain_wsgi/app.py`` (see ``samples/README.md``), or with any WSGI server, e.g.
``gunicorn --chdir samples/plain_wsgi app:app``. The configuration is ``$MFA_CONFIG``, or ``mfa.toml`` beside
this file.

The app never sees an anonymous request on a protected path: the middleware redirects those to its sign-in
pages. On the paths it lets through it sets ``REMOTE_USER`` and ``environ["mfa.identity"]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from html import escape
from pathlib import Path
from typing import Any

from mfa_middleware import MFAMiddleware

PAGES = {
    "/": "Home",
    "/public/": "Public notice board",
    "/admin/": "Administration",
}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The application: a home page, a public page and an admin page; everything else is 404."""
    path = environ.get("PATH_INFO") or "/"
    title = PAGES.get(path)
    if title is None:
        body = b"Not found\n"
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]
    identity = environ.get("mfa.identity")  # None on a bypass path without a session
    if identity is None:
        who = "<p>You are not signed in; this page is public.</p>"
    else:
        groups = ", ".join(identity.groups) or "none"
        who = (f'<p>Signed in as <strong id="user">{escape(environ.get("REMOTE_USER", ""))}</strong> '
               f"with {escape(' + '.join(identity.methods))} (groups: {escape(groups)}).</p>")
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head>
<body><h1>{escape(title)}</h1>{who}
<nav><a href="/">Home</a> | <a href="/public/">Public</a> | <a href="/admin/">Admin</a> |
<a href="/_mfa/">Security info</a> | <a href="/_mfa/logout">Sign out</a></nav></body></html>
"""
    data = html.encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


# Protect the app: the middleware answers /_mfa/* itself and applies the rules of mfa.toml to the rest.
CONFIG = os.environ.get("MFA_CONFIG") or str(Path(__file__).with_name("mfa.toml"))
app = MFAMiddleware(app, CONFIG)


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", int(os.environ.get("PORT", "8000")), app, use_reloader=False)
