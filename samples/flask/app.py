"""A small Flask app protected by mfa_middleware.

Run it with ``python samples/flask/app.py`` (see ``samples/README.md``), or with any WSGI server, e.g.
``gunicorn --chdir samples/flask app:app``. The configuration is ``$MFA_CONFIG``, or ``mfa.toml`` beside this
file.

The middleware wraps the whole Flask app, so ``app`` below ends up being the middleware, not the Flask object
(``flask run`` wants the Flask object; with it, wrap ``app.wsgi_app`` instead:
``app.wsgi_app = MFAMiddleware(app.wsgi_app, CONFIG)``).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, render_template_string, request

from mfa_middleware import MFAMiddleware

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body><h1>{{ title }}</h1>
{% if user %}
<p>Signed in as <strong id="user">{{ user }}</strong>{% if identity %} with {{ identity.methods | join(" + ") }}
(groups: {{ identity.groups | join(", ") or "none" }}){% endif %}.</p>
{% else %}
<p>You are not signed in; this page is public.</p>
{% endif %}
<p>{{ text }}</p>
<nav><a href="/">Home</a> | <a href="/public/">Public</a> | <a href="/admin/">Admin</a> |
<a href="/_mfa/">Security info</a> | <a href="/_mfa/logout">Sign out</a></nav></body></html>
"""

app = Flask(__name__)


def page(title: str, text: str) -> str:
    # The middleware sets REMOTE_USER and mfa.identity on every request it lets through with a session.
    return render_template_string(PAGE, title=title, text=text, user=request.environ.get("REMOTE_USER"),
                                  identity=request.environ.get("mfa.identity"))


@app.get("/")
def home() -> str:
    return page("Home", "Only signed-in users with a second factor get here.")


@app.get("/public/")
def public() -> str:
    return page("Public notice board", "Anyone may read this page; no sign-in needed.")


@app.get("/admin/")
def admin() -> str:
    return page("Administration", "Only members of the admins group get here.")


# Protect the app: the middleware answers /_mfa/* itself and applies the rules of mfa.toml to the rest.
CONFIG = os.environ.get("MFA_CONFIG") or str(Path(__file__).with_name("mfa.toml"))
app = MFAMiddleware(app, CONFIG)  # type: ignore[assignment]


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", int(os.environ.get("PORT", "8000")), app, use_reloader=False)
