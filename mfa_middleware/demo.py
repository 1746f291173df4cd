"""The demo's sample app: a small intranet page that shows who signed in and how."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from html import escape
from typing import Any


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
