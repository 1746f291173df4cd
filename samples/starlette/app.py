"""A small Starlette app, with a WebSocket, protected by mfa_middleware's ASGI middleware.

Run it from this folder with ``uvicorn app:app`` (see ``samples/README.md``; for the WebSocket, uvicorn needs
``pip install websockets`` or ``wsproto``). The configuration is ``$MFA_CONFIG``, or ``mfa.toml`` beside this
file.

The middleware wraps the whole Starlette app, so ``app`` below ends up being the middleware. Requests and
WebSocket handshakes get the same rules: an anonymous WebSocket on a protected path is closed before it is
accepted (the server answers the handshake with 403), so ``echo`` only ever runs for a signed-in user. The app
sees the user in ``request.user``/``websocket.user`` and ``request.auth``, without Starlette's
AuthenticationMiddleware; the lifespan passes through the middleware untouched.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from mfa_middleware import ASGIMFAMiddleware

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{who}<p>{text}</p>
<nav><a href="/">Home</a> | <a href="/public/">Public</a> | <a href="/admin/">Admin</a> |
<a href="/api/me">/api/me</a> | <a href="/_mfa/">Security info</a> | <a href="/_mfa/logout">Sign out</a></nav>
</body></html>
"""


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


async def home(request: Request) -> HTMLResponse:
    return page(request, "Home", "Only signed-in users with a second factor get here.")


async def public(request: Request) -> HTMLResponse:
    return page(request, "Public notice board", "Anyone may read this page; no sign-in needed.")


async def admin(request: Request) -> HTMLResponse:
    return page(request, "Administration", "Only members of the admins group get here.")


async def me(request: Request) -> JSONResponse:
    identity = request.scope["mfa.identity"]
    return JSONResponse({"username": request.user.username, "display_name": request.user.display_name,
                         "scopes": request.auth.scopes, "level": identity.level,
                         "methods": list(identity.methods)})


async def echo(websocket: WebSocket) -> None:
    """Greet the signed-in user by name, then echo each text message prefixed with the username."""
    await websocket.accept()
    name = websocket.user.username
    await websocket.send_text(f"hello {name}")
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"{name}: {text}")
    except WebSocketDisconnect:
        pass


@asynccontextmanager
async def lifespan(starlette_app: Starlette) -> AsyncIterator[None]:
    starlette_app.state.started = True  # the lifespan scope reaches Starlette through the middleware
    yield
    starlette_app.state.started = False


app = Starlette(routes=[
    Route("/", home),
    Route("/public/", public),
    Route("/admin/", admin),
    Route("/api/me", me),
    WebSocketRoute("/ws/echo", echo),
], lifespan=lifespan)

# Protect the app: the middleware answers /_mfa/* itself and applies the rules of mfa.toml to the rest.
CONFIG = os.environ.get("MFA_CONFIG") or str(Path(__file__).with_name("mfa.toml"))
app = ASGIMFAMiddleware(app, CONFIG)  # type: ignore[assignment]
