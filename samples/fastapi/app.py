"""A small FastAPI app protected by mfa_middleware's ASGI middleware.

Run it from this folder with ``uvicorn app:app`` (see ``samples/README.md``). The configuration is
``$MFA_CONFIG``, or ``mfa.toml`` beside this file.

The middleware wraps the whole FastAPI app, so ``app`` below ends up being the middleware. It answers
``/_mfa/*`` itself, sends anonymous requests on protected paths to its sign-in page, and hands the rest to
FastAPI with the signed-in user in ``request.user`` (``is_authenticated``, ``username``, ``display_name``,
``identity``), ``request.auth.scopes`` (``authenticated``, ``mfa``, ``group:<name>``) and
``request.scope["mfa.identity"]``. FastAPI's lifespan passes through the middleware untouched.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from mfa_middleware import ASGIMFAMiddleware

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{who}<p>{text}</p>
<nav><a href="/">Home</a> | <a href="/public/">Public</a> | <a href="/admin/">Admin</a> |
<a href="/api/me">/api/me</a> | <a href="/_mfa/">Security info</a> | <a href="/_mfa/logout">Sign out</a></nav>
</body></html>
"""


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    api.state.started = True  # the lifespan scope reaches FastAPI through the middleware
    yield
    api.state.started = False


app = FastAPI(title="FastAPI sample", lifespan=lifespan)


def page(request: Request, title: str, text: str) -> HTMLResponse:
    user = request.user  # set by the middleware (scope["user"]); anonymous only on a public path
    identity = request.scope.get("mfa.identity")
    if user.is_authenticated and identity is not None:
        groups = ", ".join(identity.groups) or "none"
        who = (f'<p>Signed in as <strong id="user">{escape(user.username)}</strong> '
               f"({escape(user.display_name)}) with {escape(' + '.join(identity.methods))} "
               f"(groups: {escape(groups)}).</p>")
    else:
        who = "<p>You are not signed in; this page is public.</p>"
    return HTMLResponse(PAGE.format(title=escape(title), who=who, text=escape(text)))


@app.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    return page(request, "Home", "Only signed-in users with a second factor get here.")


@app.get("/public/", response_class=HTMLResponse)
async def public(request: Request) -> HTMLResponse:
    return page(request, "Public notice board", "Anyone may read this page; no sign-in needed.")


@app.get("/admin/", response_class=HTMLResponse)
async def admin(request: Request) -> HTMLResponse:
    return page(request, "Administration", "Only members of the admins group get here.")


@app.get("/api/me")
async def me(request: Request) -> dict[str, Any]:
    identity = request.scope["mfa.identity"]
    return {"username": request.user.username, "display_name": request.user.display_name,
            "scopes": request.auth.scopes, "level": identity.level, "methods": list(identity.methods)}


# Protect the app: the middleware answers /_mfa/* itself and applies the rules of mfa.toml to the rest.
CONFIG = os.environ.get("MFA_CONFIG") or str(Path(__file__).with_name("mfa.toml"))
app = ASGIMFAMiddleware(app, CONFIG)  # type: ignore[assignment]
