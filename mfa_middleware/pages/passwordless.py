"""The sign-in page's "Sign in with a passkey" (``[methods.webauthn] passwordless = true``): two POST endpoints.

- ``POST <prefix>/login/passkey/options``: a new ceremony bound to this browser (JSON options for
  ``navigator.credentials.get``);
- ``POST <prefix>/login/passkey``: the assertion (form field ``credential``), checked by
  :class:`~mfa_middleware.factors.webauthn.passwordless.PasswordlessSignIn`; a success is a full session.

Trust model: both need the browser's anonymous pre-sign-in cookie and a CSRF token bound to it (the forms page's
own), so another site can neither start a ceremony in a visitor's browser nor post an assertion into it, and the
ceremony itself is bound to that cookie. Both answer 404 unless passwordless sign-in is on and ``forms`` is a
primary method; where the server passed REMOTE_USER they refuse (403): the server's name decides who signs in.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ..factors.webauthn import WebAuthnFactor
from ..factors.webauthn.passwordless import PasswordlessOutcome, PasswordlessSignIn
from ..primary.remote_user import remote_user_from_environ

if TYPE_CHECKING:
    from .app import PageContext, PagesApp

#: the longest assertion accepted in the form (a passkey's is well under 2,000 characters)
MAX_CREDENTIAL = 12_000


def service(pages: PagesApp) -> PasswordlessSignIn | None:
    """The passwordless sign-in, when the configuration turns it on for the forms page; else None."""
    factor = pages.rt.factors.get("webauthn")
    if not isinstance(factor, WebAuthnFactor) or not factor.settings.passwordless:
        return None
    if "forms" not in pages.rt.config.primary.methods:
        return None
    return PasswordlessSignIn(pages.rt.store, pages.rt.audit, pages.rt.lockout, factor)


def offered(pages: PagesApp, ctx: PageContext) -> bool:
    """Whether the sign-in page shows "Sign in with a passkey" (on, forms, and no name from the server)."""
    return service(pages) is not None and remote_user_from_environ(ctx.request.environ,
                                                                   pages.rt.config.primary) is None


def _checked(pages: PagesApp, ctx: PageContext) -> tuple[PasswordlessSignIn, str] | Response:
    """The service and the browser's anonymous cookie, once every check of the module docstring passed."""
    found = service(pages)
    if found is None:
        raise NotFound()
    if remote_user_from_environ(ctx.request.environ, pages.rt.config.primary) is not None:
        return pages.render(ctx, "message.html", status=403, title="Passkey sign-in not used here",
                            message="This server signs you in with your Windows account. Use your passkey as "
                                    "the second step.", link=pages.url("login"), link_text="Continue")
    anon = ctx.cookie(ctx.names.anonymous)
    if anon is None or not pages.csrf_ok(ctx, anon):
        return pages.csrf_refused(ctx)
    return found, anon


def page_options(pages: PagesApp, ctx: PageContext) -> Response:
    checked = _checked(pages, ctx)
    if isinstance(checked, Response):
        if checked.status_code == 403:
            return Response(json.dumps({"error": "This form has expired. Reload the page."}), status=403,
                            content_type="application/json")
        return checked
    passwordless, anon = checked
    return Response(passwordless.options(anon, ctx.now), content_type="application/json",
                    headers={"Cache-Control": "no-store"})


def page_sign_in(pages: PagesApp, ctx: PageContext) -> Response:
    checked = _checked(pages, ctx)
    if isinstance(checked, Response):
        return checked
    passwordless, anon = checked
    target = pages.next_of(ctx)
    raw = ctx.request.form.get("credential", "")[:MAX_CREDENTIAL + 1]
    result = passwordless.sign_in(raw, anon, ctx.client, ctx.now)
    if result.outcome is PasswordlessOutcome.BLOCKED:
        return pages.blocked(ctx)
    if result.outcome is PasswordlessOutcome.EXPIRED:
        return pages.login_form(ctx, anon, target, "", "That passkey request has expired or was used. Try again.",
                                401)
    if result.outcome is not PasswordlessOutcome.SIGNED_IN or result.user is None:
        return pages.login_form(ctx, anon, target, "", pages.rt.lockout.failed_message(), 401)
    # A password sign-in this browser may have left half-way is ended; the anonymous id is spent.
    pending = pages.rt.codec.load_pending(ctx.cookie(ctx.names.pending))
    if pending is not None:
        pages.finish_pending(ctx, pending)
    pages.clear(ctx, ctx.names.anonymous)
    pages.start_session(ctx, result.user, level=2, methods=("passwordless", "webauthn"), primary_at=ctx.now,
                        exempt=False)
    return pages.redirect(target)


__all__ = ["offered", "page_options", "page_sign_in", "service"]
