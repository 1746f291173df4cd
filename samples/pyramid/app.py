"""A small Pyramid app protected by mfa_middleware.

Run it from this folder with ``waitress-serve --host 127.0.0.1 --port 8000 app:app`` (see
``samples/README.md``), or with any WSGI server, e.g. ``gunicorn --chdir samples/pyramid app:app``. The
configuration is ``$MFA_CONFIG``, or ``mfa.toml`` beside this file.

The middleware wraps the whole Pyramid app, so ``app`` below ends up being the middleware. The views read the
signed-in user from WebOb's ``request.remote_user`` (``REMOTE_USER``, set by the middleware) and the details
from ``request.environ["mfa.identity"]``.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from mfa_middleware import MFAMiddleware

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{who}<p>{text}</p>
<nav><a href="/">Home</a> | <a href="/public/">Public</a> | <a href="/admin/">Admin</a> |
<a href="/_mfa/">Security info</a> | <a href="/_mfa/logout">Sign out</a></nav></body></html>
"""


def page(request: Request, title: str, text: str) -> Response:
    user = request.remote_user  # REMOTE_USER, set by the middleware; None on a public path without a session
    identity = request.environ.get("mfa.identity")
    if user and identity is not None:
        groups = ", ".join(identity.groups) or "none"
        who = (f'<p>Signed in as <strong id="user">{escape(user)}</strong> '
               f"with {escape(' + '.join(identity.methods))} (groups: {escape(groups)}).</p>")
    else:
        who = "<p>You are not signed in; this page is public.</p>"
    return Response(PAGE.format(title=escape(title), who=who, text=escape(text)),
                    content_type="text/html", charset="utf-8")


def home(request: Request) -> Response:
    return page(request, "Home", "Only signed-in users with a second factor get here.")


def public(request: Request) -> Response:
    return page(request, "Public notice board", "Anyone may read this page; no sign-in needed.")


def admin(request: Request) -> Response:
    return page(request, "Administration", "Only members of the admins group get here.")


with Configurator() as config:
    config.add_route("home", "/")
    config.add_route("public", "/public/")
    config.add_route("admin", "/admin/")
    config.add_view(home, route_name="home")
    config.add_view(public, route_name="public")
    config.add_view(admin, route_name="admin")
    app = config.make_wsgi_app()

# Protect the app: the middleware answers /_mfa/* itself and applies the rules of mfa.toml to the rest.
CONFIG = os.environ.get("MFA_CONFIG") or str(Path(__file__).with_name("mfa.toml"))
app = MFAMiddleware(app, CONFIG)


if __name__ == "__main__":
    from waitress import serve

    serve(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
