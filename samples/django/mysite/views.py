"""Views of the Django sample. They read Django's own ``request.user`` (RemoteUserMiddleware made it from the
``REMOTE_USER`` that MFAMiddleware set) and, for the details, ``request.META["mfa.identity"]``."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title></head>
<body><h1>{}</h1>{}<p>{}</p>
<nav><a href="/">Home</a> | <a href="/public/">Public</a> | <a href="/admin/">Admin</a> |
<a href="/_mfa/">Security info</a> | <a href="/_mfa/logout">Sign out</a></nav></body></html>
"""


def page(request: HttpRequest, title: str, text: str) -> HttpResponse:
    user = request.user
    identity = request.META.get("mfa.identity")  # None on a public page without a session
    if user.is_authenticated:
        methods = " + ".join(identity.methods) if identity is not None else "?"
        groups = ", ".join(identity.groups) if identity is not None else ""
        who = format_html('<p>Signed in as <strong id="user">{}</strong> (Django user #{}) with {} '
                          "(groups: {}).</p>", user.get_username(), user.pk, methods, groups or "none")
    else:
        who = mark_safe("<p>You are not signed in; this page is public.</p>")
    return HttpResponse(format_html(PAGE, title, title, who, text))


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return page(request, "Home", "Only signed-in users with a second factor get here.")


def public(request: HttpRequest) -> HttpResponse:
    return page(request, "Public notice board", "Anyone may read this page; no sign-in needed.")


@login_required
def admin(request: HttpRequest) -> HttpResponse:
    return page(request, "Administration", "Only members of the admins group get here.")
