"""The demo's sample app: a small intranet page that shows who signed in and how."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapters.wsgi import MFAMiddleware


def demo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    identity = environ.get("mfa.identity")
    if identity is None:
        who = "<p>You are not signed in (this page is public).</p>"
    else:
        when = time.strftime("%H:%M:%S UTC", time.gmtime(identity.primary_at))
        who = (f"<p>Signed in as <strong>{escape(identity.username)}</strong> with "
               f"{escape(' + '.join(identity.methods))} at {when}.</p>"
               f"<p>REMOTE_USER = <code>{escape(environ.get('REMOTE_USER', ''))}</code>; "
               f"groups: {escape(', '.join(identity.groups) or '-')}</p>")
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Contoso intranet</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}
nav a{{margin-right:1rem}}</style></head><body>
<h1>Contoso intranet</h1><p>You are on <code>{escape(path)}</code>.</p>{who}
<nav><a href="/">Home</a><a href="/public/">Public page</a><a href="/admin/">Admin area</a>
<a href="/_mfa/">Security info</a><a href="/_mfa/logout">Sign out</a></nav></body></html>"""
    data = body.encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def prepare_demo(folder: Path) -> tuple[MFAMiddleware, str]:
    """Config, migrated SQLite store and a `demo` user (fresh password, no methods) in ``folder``."""
    from .adapters.wsgi import MFAMiddleware
    from .cli import write_starter_config
    from .config import load_config
    from .services.accounts import AccountError

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "mfa.toml"
    if not config_path.exists():
        write_starter_config(config_path, database="sqlite:///mfa.db", issuer="mfa_middleware demo")
    middleware = MFAMiddleware(demo_app, load_config(config_path))
    rt = middleware.runtime
    rt.store.upgrade()
    password = secrets.token_urlsafe(9)
    try:
        rt.accounts.add("demo", actor="demo", password=password, groups=("admins",), display_name="Demo User")
    except AccountError:
        rt.accounts.set_password("demo", password, actor="demo")
        rt.accounts.reset_mfa("demo", actor="demo")
    return middleware, password
