"""The sign-in pages under the reserved prefix (default ``/_mfa``): one werkzeug WSGI app.

Pages: ``login`` (username and password, or Windows sign-in handed over by the server), ``verify`` (the second
factor), ``enroll`` (the "set it up now" wizard), ``step-up`` (from a one-factor session to a second factor),
``logout`` (POST), the account page, and static files. Every POST carries a CSRF token bound to the cookie the
browser holds at that step (anonymous id, pending sign-in id or session id). Every response says
``Cache-Control: no-store`` and ``Vary: Cookie`` and forbids framing.

Session ids change at each step: anonymous -> pending (after the password) -> session (after the second
factor). A pending sign-in and a replaced session are revoked server-side when the step completes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, PrefixLoader, select_autoescape
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.security import safe_join
from werkzeug.wrappers import Request, Response

from . import admin, passwordless
from .settings import SettingsPages
from ..web.cookies import CookieNames, clear_cookie_header, cookie_names, read_cookie, set_cookie_header
from ..web.headers import secure_response
from ..core.facts import wants_json
from ..core.networks import TRUSTED_NETWORK
from ..core.paths import safe_next
from ..core.signin_flow import PAGES, Event, IllegalMove, Stage, advance, stage_of
from ..core.tokens import PendingSignIn, Session, new_session_id, pending_expired, session_expired
from ..primary.remote_user import remote_user_from_environ
from ..factors import Access, EnrollError, EnrollmentView, Factor, FactorContext, FactorRoute, Interaction, TooSoon
from ..gateways import ConsoleGateway, GatewayUnavailable
from ..gateways.phone import ConsolePhoneGateway
from ..config import LOGO_TYPES, BrandingConfig, ConfigError
from ..core.decision import RESTART_EXPIRED, RESTART_SIGNED_OUT
from ..runtime import Runtime
from ..services.devices import REMEMBERED
from ..services.lockout import Client
from ..services.regulation import banned_response
from ..services.signin import FactorResult
from ..store import MethodRecord, SchemaOutOfDate, StoreUnavailable, UserRecord

log = logging.getLogger("mfa_middleware.pages")
STATIC = Path(__file__).with_name("static")
#: what every page says besides the security headers (web/headers.py sets those, for every response)
PAGE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache", "Vary": "Cookie"}
MAX_FORM_BYTES = 16 * 1024
#: what the demo outbox keypad's CSRF token is bound to (the page has no cookie of its own)
OUTBOX_BINDING = "dev-outbox-keypad"
#: how recent a second factor must be for changes to the account's methods (seconds)
FRESH_MFA = 10 * 60
#: why a sign-in starts again, as the ``reason`` the gate (core/decision.py) or these pages put in the login URL.
#: Only these fixed codes are understood: any other ``reason`` (an attacker's text in a link) shows nothing.
RESTART_REASONS = {
    RESTART_EXPIRED: "Your session expired; sign in again.",
    RESTART_SIGNED_OUT: "You were signed out (from another window, or your account's sessions were ended); "
                        "sign in again.",
}
#: messages for requests the URL map refuses, written for people (werkzeug's descriptions are for developers)
REFUSED = {
    405: ("Page not available", "This page cannot be opened that way. Go back and use the page's own buttons."),
    413: ("Form too large", "What you sent was too large. Go back, shorten it and try again."),
}


def brand_stylesheet(branding: BrandingConfig) -> str:
    """The company's colours as CSS custom properties, served as ``<prefix>/static/brand.css`` (the CSP forbids
    inline styles). The colours were checked at load: #rrggbb only, AA contrast against white."""
    return (f":root {{ --primary: {branding.primary}; --accent: {branding.accent}; }}\n"
            "@media (prefers-color-scheme: dark) { :root { --accent: #93c5fd; } }\n")


@dataclass
class PageContext:
    """One request to the pages: the werkzeug request, cookie names, client, time, cookies to send."""

    request: Request
    names: CookieNames
    client: Client
    now: float
    set_cookies: list[str]

    def cookie(self, name: str) -> str | None:
        return read_cookie(self.request.headers.get("Cookie", ""), name)


def enroll_inputs(request: Request, factor: Factor) -> dict[str, str]:
    """What the user entered for ``factor``'s enrollment fields. The choice page lists every method's fields in
    one form, so each input is named ``<kind>.<field>`` (two methods may both ask for a ``phone``); a client
    posting the bare field name (a script) is understood too."""
    form = request.form
    return {f.name: form.get(f"{factor.kind}.{f.name}", form.get(f.name, ""))[:f.max_length]
            for f in factor.enroll_fields}


class FactorRequest:
    """The :class:`mfa_middleware.factors.RouteContext` the pages hand a method's route handler."""

    def __init__(self, pages: PagesApp, ctx: PageContext) -> None:
        self._pages, self._ctx = pages, ctx
        self.request = ctx.request
        self.now = ctx.now
        self.client_ip = ctx.client.ip
        self.user_agent = ctx.client.user_agent
        self.user: UserRecord | None = None
        self.method: MethodRecord | None = None
        self.factor_context = pages.rt.signin.context(ctx.client, ctx.now)
        self.csrf = ""
        self.next = "/"
        self._pending: PendingSignIn | None = None
        self._usable: list[MethodRecord] = []

    def bind(self, *, user: UserRecord, binding: str, fctx: FactorContext, next: str,
             method: MethodRecord | None = None, pending: PendingSignIn | None = None,
             usable: list[MethodRecord] | None = None) -> None:
        self.user, self.method, self.factor_context, self.next = user, method, fctx, next
        self.csrf = self._pages.rt.codec.make_csrf(binding)
        self._pending, self._usable = pending, usable or []

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        return self._pages.render(self._ctx, template, status=status, **values)

    def verify_page(self, *, error: str | None = None, notice: str | None = None, status: int = 200) -> Response:
        assert self._pending is not None and self.user is not None and self.method is not None
        return self._pages.verify_page(self._ctx, self._pending, self.user, self._usable, self.method, error=error,
                                       notice=notice, status=status)

    def cannot_send(self, exc: Exception) -> Response:
        assert self._pending is not None and self.user is not None and self.method is not None
        return self._pages.cannot_send(self._ctx, self._pending, self.user, self._usable, self.method, exc)

    def message(self, title: str, message: str, status: int = 200) -> Response:
        return self._pages.render(self._ctx, "message.html", status=status, title=title, message=message)

    def redirect(self, location: str) -> Response:
        return self._pages.redirect(location)

    def url(self, page: str) -> str:
        return self._pages.url(page)

    def audit(self, event: str, result: str, **detail: object) -> None:
        name = self.user.username if self.user is not None else None
        self._pages.rt.audit.write(event, result, now=self.now, actor=name or "anonymous", username=name,
                                   client_ip=self.client_ip, user_agent=self.user_agent, **detail)


class PagesApp:
    def __init__(self, runtime: Runtime, template_dirs: Iterable[str] = ()) -> None:
        self.rt = runtime
        self.prefix = runtime.config.prefix
        config = runtime.config
        # Templates: the operator's folder ([pages] templates) first, then any given in code, then the package's.
        folders = [d for d in (config.pages.templates, *template_dirs) if d]
        for folder in folders:
            if not Path(folder).is_dir():
                raise ConfigError(f"{config.source}: pages.templates: no such folder: {folder}")
        loaders: list[Any] = [FileSystemLoader(folders)] if folders else []
        loaders.append(PackageLoader("mfa_middleware.pages", "templates"))
        # Each method's own screens, as "<kind>/verify.html" and "<kind>/enroll.html" (overridable like the rest).
        loaders.append(PrefixLoader({f.kind: PackageLoader(f.templates, "templates") for f in runtime.factors}))
        self.jinja = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(default=True),
                                 trim_blocks=True, lstrip_blocks=True)
        branding = config.branding
        self.brand_css = brand_stylesheet(branding).encode()
        self.logo: tuple[bytes, str] | None = None
        if branding.logo is not None:
            try:
                self.logo = (Path(branding.logo).read_bytes(), LOGO_TYPES[Path(branding.logo).suffix.lower()])
            except (OSError, KeyError) as exc:
                raise ConfigError(f"{config.source}: branding.logo: cannot read {branding.logo}: {exc}") from None
        # A version in the stylesheets' URLs, so a changed colour or upgrade is not hidden by a browser's cache.
        digest = hashlib.sha256(self.brand_css + (STATIC / "mfa.css").read_bytes() + (self.logo or (b"", ""))[0])
        self.jinja.globals.update(
            site_name=config.site_name, company=branding.company or config.site_name,
            company_named=bool(branding.company), prefix=self.prefix,
            home=branding.home, logo_url=f"{self.prefix}/static/logo" if self.logo else None,
            asset_version=digest.hexdigest()[:12])
        # Security info (pages/settings.py): its endpoints are its own bound methods.
        self.settings = SettingsPages(self)
        self.url_map = Map([
            Rule("/", endpoint=self.settings.page_home),
            *self.settings.rules(),
            Rule("/login", endpoint="login", methods=["GET", "POST"]),
            # Passwordless sign-in with a passkey (pages/passwordless.py; 404 unless configured).
            Rule("/login/passkey", endpoint="login_passkey", methods=["POST"]),
            Rule("/login/passkey/options", endpoint="login_passkey_options", methods=["POST"]),
            Rule("/verify", endpoint="verify", methods=["GET", "POST"]),
            Rule("/enroll", endpoint="enroll", methods=["GET", "POST"]),
            Rule("/step-up", endpoint="step_up"),
            Rule("/logout", endpoint="logout", methods=["GET", "POST"]),
            Rule("/app-passwords", endpoint="app_passwords", methods=["GET", "POST"]),
            Rule("/dev/outbox", endpoint="outbox", methods=["GET", "POST"]),
            Rule("/methods", endpoint="methods", methods=["POST"]),
            Rule("/methods/add", endpoint="add_method", methods=["GET", "POST"]),
            Rule("/static/brand.css", endpoint="brand_css"),
            Rule("/static/logo", endpoint="logo"),
            Rule("/static/<path:filename>", endpoint="static"),
            # The admin portal (pages/admin.py: its own access checks, confirmations and audit rows).
            *admin.rules(),
            # Each method's own pages and endpoints ("Send a new code", backup codes, a call's callbacks).
            *(Rule(route.path, endpoint=("factor", factor.kind, route), methods=list(route.methods))
              for factor in runtime.factors for route in factor.routes),
        ], strict_slashes=False)

    # -- WSGI --------------------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        request.max_form_memory_size = MAX_FORM_BYTES
        request.max_content_length = MAX_FORM_BYTES
        path = request.path[len(self.prefix):] or "/"
        https = request.scheme == "https"
        ctx = PageContext(request=request, names=cookie_names(self.rt.config.session, https),
                          client=Client(ip=str(environ.get("mfa.client_ip") or request.remote_addr or ""),
                                        user_agent=request.headers.get("User-Agent", "")[:300],
                                        origin=request.host_url.rstrip("/")),
                          now=self.rt.clock(), set_cookies=[])
        try:
            endpoint, args = self.url_map.bind("localhost").match(path, method=request.method)
            if isinstance(endpoint, tuple):
                _, kind, route = endpoint
                response = self.factor_route(ctx, kind, route, dict(args))
            elif callable(endpoint):  # security info (pages/settings.py)
                response = endpoint(ctx, **args)
            else:
                response = getattr(self, "page_" + endpoint)(ctx, **args)
        except NotFound:
            response = self.render(ctx, "message.html", status=404, title="Page not found",
                                   message="There is no page at this address. It may have moved, or the link may "
                                           "be incomplete.", account_link=True)
        except HTTPException as exc:
            title, message = REFUSED.get(exc.code or 400, (
                "Request refused", "This request could not be handled. Go back, reload the page and try again."))
            response = self.render(ctx, "message.html", status=exc.code or 400, title=title, message=message)
        except (StoreUnavailable, SchemaOutOfDate) as exc:
            log.error("sign-in page unavailable: %s", exc)
            response = self.unavailable(ctx)
        except Exception:  # a bug: logged with its traceback, answered like every page, its text never shown
            log.exception("sign-in page failed: %s %s", request.method, path)
            ctx.set_cookies.clear()  # nothing half done is handed to the browser
            response = self.failed(ctx)
        for header in ctx.set_cookies:
            response.headers.add("Set-Cookie", header)
        for key, value in PAGE_HEADERS.items():
            if key not in response.headers:
                response.headers[key] = value
        secure_response(response)
        result: Iterable[bytes] = response(environ, start_response)
        return result

    # -- helpers -----------------------------------------------------------------------------------------------
    def url(self, page: str, next_target: str | None = None) -> str:
        base = f"{self.prefix}/{page}" if page else f"{self.prefix}/"
        return base + (f"?next={quote(next_target, safe='/')}" if next_target else "")

    def render(self, ctx: PageContext, template: str, status: int = 200, **values: Any) -> Response:
        html = self.jinja.get_template(template).render(**values)
        return Response(html, status=status, content_type="text/html; charset=utf-8")

    def message_html(self, title: str, message: str) -> str:
        """A full message page (for replies the adapters send without a request context). Every message page
        offers a way on (message.html: back to the app, and the links given here); "Access denied" (the gate's
        403: signed in, but not as someone this address admits) also offers to sign in as someone else."""
        values: dict[str, Any] = {"title": title, "message": message}
        if title == "Access denied":
            values.update(link=self.url("logout"), link_text="Sign in as someone else")
        return self.jinja.get_template("message.html").render(**values)

    def sign_in_again(self, ctx: PageContext, target: str) -> Response:
        """To the login page for a browser without a usable session; says why when its session cookie expired
        or was ended (:data:`RESTART_REASONS`: a fixed code in the URL, never text)."""
        url = self.url("login", target)
        s = self.rt.codec.load_session(ctx.cookie(ctx.names.session))
        if s is not None:
            s_cfg = self.rt.config.session
            if session_expired(s, ctx.now, s_cfg.absolute_timeout, s_cfg.inactivity_timeout):
                url += f"&reason={RESTART_EXPIRED}"
            elif self.rt.revocations.view(ctx.now).revokes(s):
                url += f"&reason={RESTART_SIGNED_OUT}"
        return self.redirect(url)

    def unavailable(self, ctx: PageContext) -> Response:
        """The store is down: 503, a page for a browser, a JSON body for an API client (by ``Accept``), with
        ``Retry-After`` as the gate sends it. Never a pass, and nothing half done is claimed as done."""
        message = ("The sign-in service cannot reach its user store right now. Nothing was changed. Try again in a "
                   "few minutes; if this persists, contact your helpdesk.")
        headers = ctx.request.headers
        if wants_json(headers.get("Accept", ""), headers.get("X-Requested-With", "")):
            response = Response(json.dumps({"error": "service_unavailable", "message": message}), status=503,
                                content_type="application/json")
        else:
            response = self.render(ctx, "message.html", status=503, title="Sign-in is unavailable",
                                   message=message)
        response.headers["Retry-After"] = "30"
        return response

    def failed(self, ctx: PageContext) -> Response:
        """An unexpected error in a page: 500, a page for a browser, a JSON body for an API client, never the
        exception's text (it is in the log). The headers are added by ``secure_response`` like on every page."""
        message = "Something went wrong on our side. Try again; if this persists, contact your helpdesk."
        headers = ctx.request.headers
        if wants_json(headers.get("Accept", ""), headers.get("X-Requested-With", "")):
            return Response(json.dumps({"error": "internal_error", "message": message}), status=500,
                            content_type="application/json")
        try:
            return self.render(ctx, "message.html", status=500, title="Something went wrong", message=message)
        except Exception:  # the templates themselves fail: plain text still carries every header
            log.exception("the error page could not be rendered")
            return Response(message, status=500, content_type="text/plain; charset=utf-8")

    def redirect(self, location: str) -> Response:
        return Response("", status=303, headers={"Location": location})

    def next_of(self, ctx: PageContext) -> str:
        raw = ctx.request.values.get("next") if ctx.request.method == "POST" else ctx.request.args.get("next")
        target = safe_next(raw, "/")
        if target == self.prefix or target.startswith(self.prefix + "/"):
            # Only the account pages are worth coming back to; never login, logout or a form endpoint.
            if admin.is_admin_target(self.prefix, target):  # admin portal pages (GET changes nothing there)
                return target
            if target in (self.prefix + "/", self.prefix + "/app-passwords") or self.settings.returnable(target):
                return target
            return "/"
        return target

    def csrf_ok(self, ctx: PageContext, binding: str | None) -> bool:
        return self.rt.codec.check_csrf(ctx.request.form.get("csrf_token"), binding)

    def csrf_refused(self, ctx: PageContext) -> Response:
        return self.render(ctx, "message.html", status=403, title="Form expired",
                           message="This form has expired or did not come from this site. "
                                   "Go back, reload the page and try again.",
                           link=self.url("login"), link_text="Start again")

    def session(self, ctx: PageContext) -> Session | None:
        s = self.rt.codec.load_session(ctx.cookie(ctx.names.session))
        if s is None:
            return None
        s_cfg = self.rt.config.session
        if session_expired(s, ctx.now, s_cfg.absolute_timeout, s_cfg.inactivity_timeout):
            return None
        if self.rt.revocations.view(ctx.now).revokes(s):
            return None
        return s

    def pending(self, ctx: PageContext) -> PendingSignIn | None:
        """The signed pending sign-in, if it is well formed and within the sign-in timeout. Whether it still
        stands (revoked, user gone, blocked...) is the state machine's question: see :meth:`sign_in_step`."""
        p = self.rt.codec.load_pending(ctx.cookie(ctx.names.pending))
        if p is None or pending_expired(p, ctx.now, self.rt.config.session.sign_in_timeout):
            return None
        return p

    def set_pending(self, ctx: PageContext, pending: PendingSignIn) -> None:
        ctx.set_cookies.append(set_cookie_header(ctx.names.pending, self.rt.codec.dump_pending(pending),
                                                 secure=ctx.names.secure))

    def clear(self, ctx: PageContext, *names: str) -> None:
        for name in names:
            if ctx.cookie(name) is not None:
                ctx.set_cookies.append(clear_cookie_header(name, secure=ctx.names.secure))

    def start_session(self, ctx: PageContext, user: UserRecord, *, level: int, methods: tuple[str, ...],
                      primary_at: float, exempt: bool) -> None:
        session = Session(sid=new_session_id(), username=user.username, groups=user.groups, level=level,
                          methods=methods, primary_at=primary_at, mfa_at=ctx.now if level == 2 else None,
                          issued_at=ctx.now, last_seen=ctx.now, exempt=exempt, admin=user.is_admin,
                          email=user.email, name=user.display_name)
        # The browser might still hold an older session (step-up): end it server-side.
        old = self.rt.codec.load_session(ctx.cookie(ctx.names.session))
        if old is not None:
            self.rt.store.add_revocation(old.username, now=ctx.now, session_id=old.sid)
        ctx.set_cookies.append(set_cookie_header(ctx.names.session, self.rt.codec.dump_session(session),
                                                 secure=ctx.names.secure))
        self.settings.record_session(ctx, user, session)  # listed under "active sessions"

    def device_cookie(self, ctx: PageContext) -> str:
        """The name of the "remember this device" cookie (same prefix and attributes as the others)."""
        return ctx.names.session + "_device"

    def fresh_mfa(self, session: Session, now: float) -> bool:
        """Whether ``session`` had a real second factor in the last :data:`FRESH_MFA` seconds (needed to change
        the account's methods). A remembered device and a one-time bypass never count: they stand in for a second
        factor at sign-in only."""
        fresh = self.rt.config.session.step_up
        return (session.level >= 2 and session.mfa_at is not None and 0 <= now - session.mfa_at <= fresh
                and REMEMBERED not in session.methods and "bypass" not in session.methods)

    def remembered_device(self, ctx: PageContext, user: UserRecord) -> bool:
        """Whether the browser holds a remembered device that still stands for ``user`` (services/devices.py).
        A device cookie that does not (another user's, forgotten, expired, ended) is cleared."""
        name = self.device_cookie(ctx)
        token = ctx.cookie(name)
        if token is None or not self.rt.devices.enabled:
            return False
        device = self.rt.devices.recognise(user, token, client_ip=ctx.client.ip,
                                           user_agent=ctx.client.user_agent, now=ctx.now)
        if device is None:
            self.clear(ctx, name)
            return False
        return True

    def finish_pending(self, ctx: PageContext, pending: PendingSignIn) -> None:
        self.rt.store.add_revocation(pending.username, now=ctx.now, session_id=pending.sid)
        self.rt.revocations.refresh(ctx.now)
        self.clear(ctx, ctx.names.pending)

    def after_primary(self, ctx: PageContext, user: UserRecord, primary: str, target: str) -> Response:
        """The password (or Windows sign-in) was accepted: finish, or go on to the second factor."""
        self.clear(ctx, ctx.names.anonymous)
        stage = stage_of(self.rt.signin.facts(user, ctx.now), exempt_ok=True)
        if stage is Stage.EXEMPT:
            self.rt.signin.complete_exempt(user, ctx.client, ctx.now)
            self.start_session(ctx, user, level=1, methods=(primary,), primary_at=ctx.now, exempt=True)
            return self.redirect(target)
        if stage not in PAGES:
            return self.off_track(ctx, stage, user)
        if self.rt.policy.match("GET", urlsplit(target).path or "/", ctx.client.ip).trusts(ctx.client.ip):
            # A trusted network: the primary factor is enough here. The session says so, and the decision lets it
            # through two_factor rules only from a network they trust (elsewhere: step up).
            self.rt.signin.complete_trusted_network(user, ctx.client, ctx.now, primary)
            self.start_session(ctx, user, level=1, methods=(primary, TRUSTED_NETWORK), primary_at=ctx.now,
                               exempt=False)
            return self.redirect(target)
        # "Remember this device": after the primary step, never instead of it; only for a user who has a method to
        # skip (VERIFY: not blocked, not locked, sign-in not revoked; the machine said so just above).
        if stage is Stage.VERIFY and self.remembered_device(ctx, user):
            self.rt.lockout.succeeded(user, ctx.client, ctx.now)
            self.start_session(ctx, user, level=2, methods=(primary, REMEMBERED), primary_at=ctx.now, exempt=False)
            return self.redirect(target)
        if self.rt.signin.use_bypass(user, ctx.client, ctx.now):
            # A helpdesk granted a one-time bypass of the second factor (lost phone): used up now.
            self.start_session(ctx, user, level=2, methods=(primary, "bypass"), primary_at=ctx.now, exempt=False)
            return self.redirect(target)
        requirement = self.rt.policy.match("GET", urlsplit(target).path or "/", ctx.client.ip)
        if requirement.policy in ("one_factor", "bypass"):
            # The operator asks only one factor here; a two_factor page later steps up.
            self.start_session(ctx, user, level=1, methods=(primary,), primary_at=ctx.now, exempt=False)
            return self.redirect(target)
        pending = PendingSignIn(sid=new_session_id(), username=user.username, primary_method=primary,
                                primary_at=ctx.now, next=target)
        self.set_pending(ctx, pending)
        return self.redirect(self.url(PAGES[stage]))

    def sign_in_step(self, ctx: PageContext, page: Stage,
                     event: Event) -> tuple[PendingSignIn, UserRecord] | Response:
        """The pending sign-in and its user, when the state machine, asked with the user's CURRENT record, puts
        the sign-in at ``page`` and lets it take ``event``; else the response that puts the browser back on track
        (the page of the stage it is really at, or the page saying the sign-in has ended)."""
        pending = self.pending(ctx)
        if pending is None:
            return self.off_track(ctx, Stage.ENDED, None)
        user = self.rt.store.get_user(pending.username)
        facts = self.rt.signin.facts(user, ctx.now, since=pending.primary_at, sign_in_id=pending.sid)
        try:
            stage = advance(facts, event)
        except IllegalMove as exc:
            if exc.stage not in PAGES:
                return self.off_track(ctx, exc.stage, user)
            if event is not Event.SHOW:  # an old form, or a cookie from before the user's record changed
                log.warning("sign-in of %s refused: %s", pending.username, exc)
            return self.redirect(self.url(PAGES[exc.stage]))
        if stage is not page:
            return self.redirect(self.url(PAGES[stage]))
        assert user is not None
        return pending, user

    def off_track(self, ctx: PageContext, stage: Stage, user: UserRecord | None) -> Response:
        """The answer for a sign-in that cannot go on: ended (expired, revoked, user gone), blocked or locked."""
        self.clear(ctx, ctx.names.pending)
        if stage is Stage.BLOCKED:
            return self.blocked(ctx)
        if stage is Stage.LOCKED:
            return self.locked(ctx, user.locked_until if user is not None else None)
        return self.render(ctx, "message.html", status=401, title="Sign-in expired",
                           message="Your sign-in took too long, has already been used or was ended. Sign in again.",
                           link=self.url("login"), link_text="Sign in")

    # -- pages -------------------------------------------------------------------------------------------------
    def page_brand_css(self, ctx: PageContext) -> Response:
        response = Response(self.brand_css, content_type="text/css; charset=utf-8")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    def page_logo(self, ctx: PageContext) -> Response:
        if self.logo is None:
            raise NotFound()
        response = Response(self.logo[0], content_type=self.logo[1])
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    def page_static(self, ctx: PageContext, filename: str) -> Response:
        path = safe_join(str(STATIC), filename)
        if path is None or not Path(path).is_file():
            raise NotFound()
        kind = "text/css; charset=utf-8" if path.endswith(".css") else "application/octet-stream"
        if path.endswith(".svg"):
            kind = "image/svg+xml"
        elif path.endswith(".js"):
            kind = "text/javascript; charset=utf-8"
        response = Response(Path(path).read_bytes(), content_type=kind)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    def page_login(self, ctx: PageContext) -> Response:
        target = self.next_of(ctx)
        session = self.session(ctx)
        if session is not None and ctx.request.method == "GET":
            return self.redirect(target)
        remote = remote_user_from_environ(ctx.request.environ, self.rt.config.primary)
        if remote is not None:
            result = self.rt.signin.remote_user(remote, ctx.client, ctx.now)
            if result.ok and result.user is not None:
                return self.after_primary(ctx, result.user, "remote_user", target)
            if result.reason == "locked":
                return self.locked(ctx, result.locked_until)
            if result.reason == "blocked":
                return self.blocked(ctx)
            if "forms" not in self.rt.config.primary.methods:
                return self.render(ctx, "message.html", status=403, title="No access",
                                   message="Your Windows account is not registered for this site. "
                                           "Contact your helpdesk.")
        if "forms" not in self.rt.config.primary.methods:
            return self.render(ctx, "message.html", status=401, title="Windows sign-in required",
                               message="This site signs you in with your Windows account, but the server did not "
                                       "pass one on. Open the site from a computer joined to the domain.")
        anon = ctx.cookie(ctx.names.anonymous)
        if ctx.request.method == "POST":
            if not self.csrf_ok(ctx, anon):
                return self.csrf_refused(ctx)
            username = ctx.request.form.get("username", "")[:256]
            password = ctx.request.form.get("password", "")
            if not username or not password:
                return self.login_form(ctx, anon, target, username, "Enter your username and password.", 400)
            result = self.rt.signin.forms(username, password, ctx.client, ctx.now)
            if result.reason == "blocked":  # only ever after the correct password
                return self.blocked(ctx)
            if result.reason == "banned":  # the client address: whatever the username, so nothing about it
                return self.banned(ctx, result.locked_until)
            if not result.ok or result.user is None:  # wrong, unknown, no local password, locked: one answer
                return self.login_form(ctx, anon, target, username, self.rt.lockout.failed_message(), 401)
            return self.after_primary(ctx, result.user, "forms", target)
        return self.login_form(ctx, anon, target, "", None, 200)

    def login_form(self, ctx: PageContext, anon: str | None, target: str, username: str, error: str | None,
                   status: int) -> Response:
        if anon is None:
            anon = secrets.token_urlsafe(18)
            ctx.set_cookies.append(set_cookie_header(ctx.names.anonymous, anon, secure=ctx.names.secure))
        # After a failure the focus goes to the field to fix: the password (the username is kept), or the username
        # when it is the one missing.
        fix = None if error is None else ("username" if not username else "password")
        notice = None if error is not None or ctx.request.method != "GET" else RESTART_REASONS.get(
            ctx.request.args.get("reason", ""))
        return self.render(ctx, "login.html", status=status, title="Sign in", csrf=self.rt.codec.make_csrf(anon),
                           next=target, username=username, error=error, fix=fix, notice=notice,
                           passwordless=passwordless.offered(self, ctx))

    # -- passwordless sign-in with a passkey (pages/passwordless.py) ---------------------------------------------
    def page_login_passkey_options(self, ctx: PageContext) -> Response:
        return passwordless.page_options(self, ctx)

    def page_login_passkey(self, ctx: PageContext) -> Response:
        return passwordless.page_sign_in(self, ctx)

    # -- the admin portal (pages/admin.py) ------------------------------------------------------------------------
    def page_admin(self, ctx: PageContext, view: str) -> Response:
        return admin.dispatch(self, ctx, view)

    def locked(self, ctx: PageContext, until: float | None) -> Response:
        if until is None or until > 1e17:
            when = "An administrator must unlock it."
        else:
            stamp = datetime.fromtimestamp(until, tz=UTC).strftime("%H:%M UTC")
            when = f"Try again after {stamp}, or ask your helpdesk to unlock it."
        return self.render(ctx, "message.html", status=429, title="Account locked",
                           message=f"Too many failed sign-in attempts. Sign-in for this account is paused. {when}",
                           link=self.url("login"), link_text="Back to sign-in")

    def banned(self, ctx: PageContext, until: float | None) -> Response:
        """429 for a client address banned by regulation (``services/regulation.py``): Retry-After, JSON for API
        clients. It names no account, so it says nothing about whether the username exists."""
        return banned_response(ctx.request, until, ctx.now, self.message_html)

    def blocked(self, ctx: PageContext) -> Response:
        self.clear(ctx, ctx.names.pending)
        return self.render(ctx, "message.html", status=403, title="Account blocked",
                           message="Sign-in for this account has been blocked. Contact your helpdesk.")

    def page_verify(self, ctx: PageContext) -> Response:
        action = ctx.request.form.get("action", "") if ctx.request.method == "POST" else (
            "choose" if ctx.request.args.get("another") else "")
        event = Event.SHOW if action in ("choose", "use") else (
            Event.ANSWER if ctx.request.method == "POST" else Event.SHOW)
        found = self.sign_in_step(ctx, Stage.VERIFY, event)
        if isinstance(found, Response):
            return found
        pending, user = found
        if ctx.request.method == "POST" and not self.csrf_ok(ctx, pending.sid):
            return self.csrf_refused(ctx)
        usable, method = self.rt.signin.chosen(user, pending.method_id)
        if method is None:
            # Confirmed methods exist, but none of a kind this site offers (its configuration changed).
            return self.render(ctx, "message.html", status=403, title="No usable verification method",
                               message="None of your verification methods can be used on this site. "
                                       "Contact your helpdesk.")
        if action == "choose":
            return self.choose_page(ctx, pending, user, usable, method)
        if action == "use":
            picked = next((m for m in usable if str(m.id) == ctx.request.form.get("method_id", "")), None)
            if picked is not None:
                self.set_pending(ctx, replace(pending, method_id=picked.id))
            return self.redirect(self.url("verify"))
        factor = self.rt.factors.get(method.kind)
        assert factor is not None
        fctx = self.rt.signin.context(ctx.client, ctx.now, pending.sid)
        error = None
        status = 200
        if event is Event.ANSWER:
            if ctx.request.form.get("method_id", str(method.id)) != str(method.id):
                return self.redirect(self.url("verify"))  # a form for another method than this attempt's
            answer = {name: ctx.request.form.get(name, "")[:64] for name in ("code", "next_code")}
            result = self.rt.signin.verify(user, answer, ctx.client, ctx.now, method_id=method.id,
                                           attempt_id=pending.sid)
            remember = self.rt.devices.enabled and ctx.request.form.get("remember") == "1"
            done = self.second_factor_done(ctx, pending, user, result, remember=remember)
            if done is not None:
                return done
            if result.outcome == "pending":  # out-of-band: not answered yet (costs no attempt)
                return self.verify_page(ctx, pending, user, usable, method, notice=self.not_yet(method.kind))
            if result.outcome == "fraud":
                self.clear(ctx, ctx.names.pending)
                return self.render(ctx, "message.html", status=403, title="Sign-in reported",
                                   message="This sign-in was reported as fraud and stopped.")
            if factor.interaction is Interaction.OUT_OF_BAND:
                return self.render(ctx, "message.html", status=401, title="Sign-in not approved",
                                   message=self.not_accepted(method.kind, result.outcome)
                                           + (" Sign in another way." if len(usable) > 1 else ""),
                                   link=self.url("verify") + ("?another=1" if len(usable) > 1 else ""),
                                   link_text="Sign in another way" if len(usable) > 1 else "Back")
            error = self.not_accepted(method.kind, result.outcome)
            status = 401
        try:
            factor.begin(user, method, fctx)  # sends at most once per attempt (the factor keeps track)
        except (GatewayUnavailable, TooSoon) as exc:
            return self.cannot_send(ctx, pending, user, usable, method, exc)
        return self.verify_page(ctx, pending, user, usable, method, error=error, status=status)

    def verify_page(self, ctx: PageContext, pending: PendingSignIn, user: UserRecord, usable: list[MethodRecord],
                    method: MethodRecord, *, error: str | None = None, notice: str | None = None,
                    status: int = 200) -> Response:
        """The second-factor page of ``method`` (its own ``<kind>/verify.html``). Renders only: no side effects."""
        factor = self.rt.factors.get(method.kind)
        assert factor is not None
        fctx = self.rt.signin.context(ctx.client, ctx.now, pending.sid)
        return self.render(ctx, f"{method.kind}/verify.html", status=status, title="Verify your identity",
                           csrf=self.rt.codec.make_csrf(pending.sid), prompt=factor.prompt(user, method, fctx),
                           error=error, notice=notice, method=method, username=user.username, others=len(usable) > 1,
                           remember_days=self.rt.devices.days if self.rt.devices.enabled else None)

    def not_yet(self, kind: str) -> str:
        """The notice for an answer that has not come yet (out-of-band or ceremony: it costs no attempt)."""
        factor = self.rt.factors.get(kind)
        if factor is not None and factor.interaction is Interaction.CEREMONY:
            return "We haven't had your passkey or security key yet. Use it when the browser asks, then try again."
        return "We haven't had your answer yet. Answer on your phone, then try again."

    def not_accepted(self, kind: str, outcome: str) -> str:
        """The error for an answer that was checked and refused, in the words of the method's interaction."""
        factor = self.rt.factors.get(kind)
        if factor is not None and factor.interaction is Interaction.CEREMONY:
            return "That passkey or security key was not accepted. Try again, or use another one."
        if factor is not None and factor.interaction is Interaction.OUT_OF_BAND:
            return "The request was not answered or not approved."
        if outcome == "replayed":
            return "That code has already been used. Wait for the next code in your app."
        if kind == "totp":
            return "That code didn't work. Check that the time on your phone is right and enter the newest code."
        return "That code didn't work. Check it and try again."

    def factor_route(self, ctx: PageContext, kind: str, route: FactorRoute, args: dict[str, str]) -> Response:
        """One of a method's own routes, after checking its :class:`Access` (the method never sees a request that
        failed the check)."""
        factor = self.rt.factors.get(kind)
        assert factor is not None
        rctx = FactorRequest(self, ctx)
        if route.access is Access.SIGN_IN:
            found = self.sign_in_step(ctx, Stage.VERIFY, Event.SHOW)
            if isinstance(found, Response):
                return found
            pending, user = found
            if ctx.request.method != "GET" and not self.csrf_ok(ctx, pending.sid):
                return self.csrf_refused(ctx)
            usable, method = self.rt.signin.chosen(user, pending.method_id)
            if method is None or method.kind != kind:
                return self.redirect(self.url("verify"))  # this attempt does not use this method now
            rctx.bind(user=user, method=method, pending=pending, usable=usable, binding=pending.sid,
                      fctx=self.rt.signin.context(ctx.client, ctx.now, pending.sid), next=pending.next)
        elif route.access is Access.FRESH_SESSION:
            here = self.prefix + ctx.request.path[len(self.prefix):]
            session = self.session(ctx)
            if session is None:
                return self.sign_in_again(ctx, here)
            if not self.fresh_mfa(session, ctx.now):
                return self.render(ctx, "message.html", status=403, title="Verify again first",
                                   message="For your security, this page needs a second factor from the last few "
                                           "minutes. Verify again, then come back.",
                                   link=self.url("step-up?fresh=1&next=" + quote(here, safe="/")),
                                   link_text="Verify again")
            user_now = self.rt.store.get_user(session.username)
            if user_now is None:
                return self.redirect(self.url("login"))
            if ctx.request.method != "GET" and not self.csrf_ok(ctx, session.sid):
                return self.csrf_refused(ctx)
            target = self.next_of(ctx) if ctx.request.values.get("next") else self.prefix + "/"
            rctx.bind(user=user_now, binding=session.sid, next=target,
                      fctx=self.rt.signin.context(ctx.client, ctx.now, first_method_only=False))
        return factor.handle(route.name, rctx, **args)

    def cannot_send(self, ctx: PageContext, pending: PendingSignIn, user: UserRecord, usable: list[MethodRecord],
                    method: MethodRecord, exc: Exception) -> Response:
        """The code could not be sent (gateway down, or too many codes): say so and offer the other methods;
        never a pass."""
        if isinstance(exc, GatewayUnavailable):
            log.error("sign-in of %s: could not send a code by %s: %s", user.username, method.kind, exc)
            message, status = ("We couldn't send your code just now. Try again in a few minutes"
                               + (", or sign in another way." if len(usable) > 1 else "."), 503)
        else:
            message, status = str(exc), 429
        if len(usable) > 1:
            return self.render(ctx, "message.html", status=status, title="Code not sent", message=message,
                               link=self.url("verify") + "?another=1", link_text="Sign in another way")
        return self.render(ctx, "message.html", status=status, title="Code not sent", message=message,
                           link=self.url("verify"), link_text="Try again")



    def choose_page(self, ctx: PageContext, pending: PendingSignIn, user: UserRecord, usable: list[MethodRecord],
                    current: MethodRecord) -> Response:
        """ "Sign in another way": every usable method, the backup codes last ("I can't use my authenticator")."""
        choices = []
        for m in sorted(usable, key=lambda m: (m.kind == "backup_codes", not m.is_default, m.id)):
            factor = self.rt.factors.get(m.kind)
            assert factor is not None
            if m.kind == "backup_codes":
                title, hint = "I can't use my other methods", "Enter one of your backup codes."
            else:
                title = m.label if m.label != factor.label else factor.label
                hint = factor.description
            choices.append({"method": m, "title": title, "hint": hint, "current": m.id == current.id})
        return self.render(ctx, "choose.html", title="Sign in another way", csrf=self.rt.codec.make_csrf(pending.sid),
                           choices=choices, username=user.username)

    def second_factor_done(self, ctx: PageContext, pending: PendingSignIn, user: UserRecord,
                           result: FactorResult, then: str | None = None, *, remember: bool = False) -> Response | None:
        """The response that ends a second-factor step (signed in, locked or blocked), or None to ask again.
        ``then="app-passwords"`` (offered at the end of enrollment) goes on to create an app password first.
        ``remember``: the user ticked "Don't ask again on this device" (only honoured when the answer passed)."""
        if result.accepted:
            # A revocation (password change, revoke-sessions, block) may have landed while the answer was
            # checked: the machine is asked once more before a session is issued.
            user_now = self.rt.store.get_user(user.username)
            facts = self.rt.signin.facts(user_now, ctx.now, since=pending.primary_at, sign_in_id=pending.sid)
            if stage_of(facts) in (Stage.ENDED, Stage.BLOCKED):
                return self.off_track(ctx, stage_of(facts), user_now)
            assert user_now is not None
            user = user_now
            self.start_session(ctx, user, level=2, methods=(pending.primary_method, result.method or "unknown"),
                               primary_at=pending.primary_at, exempt=False)
            self.finish_pending(ctx, pending)
            if remember:
                made = self.rt.devices.remember(user, client_ip=ctx.client.ip, user_agent=ctx.client.user_agent,
                                                now=ctx.now)
                if made is not None:
                    ctx.set_cookies.append(set_cookie_header(self.device_cookie(ctx), made.token,
                                                             secure=ctx.names.secure, max_age=made.max_age))
            if then == "app-passwords" and self.rt.app_passwords.may_create(user):
                return self.redirect(self.url("app-passwords", pending.next))
            if then == "backup-codes":
                return self.redirect(self.url("backup-codes", pending.next))
            return self.redirect(pending.next)
        if result.outcome == "locked":
            self.clear(ctx, ctx.names.pending)
            return self.locked(ctx, result.locked_until)
        if result.outcome == "blocked":
            return self.blocked(ctx)
        return None

    def page_enroll(self, ctx: PageContext) -> Response:
        action = ctx.request.form.get("action", "") if ctx.request.method == "POST" else ""
        event = {"start": Event.ENROLL_START, "confirm": Event.ENROLL_CONFIRM}.get(action, Event.SHOW)
        found = self.sign_in_step(ctx, Stage.ENROLL, event)
        if isinstance(found, Response):
            return found
        pending, user = found
        csrf = self.rt.codec.make_csrf(pending.sid)
        if ctx.request.method == "POST":
            if not self.csrf_ok(ctx, pending.sid):
                return self.csrf_refused(ctx)
            if event is Event.ENROLL_START:
                kind = ctx.request.form.get("method", "")
                factor = self.rt.factors.get(kind)
                if factor is None or not factor.standalone:
                    return self.enroll_choice(ctx, user, csrf, "Choose one of the methods listed.", status=400)
                inputs = enroll_inputs(ctx.request, factor)
                try:
                    view = self.rt.signin.enroll_begin(user, kind, ctx.client, ctx.now, inputs,
                                                       attempt_id=pending.sid)
                except EnrollError as exc:
                    return self.enroll_choice(ctx, user, csrf, str(exc), status=400, kind=kind, inputs=inputs)
                except (GatewayUnavailable, TooSoon) as exc:
                    log.error("enrollment of %s: could not send a code: %s", user.username, exc)
                    message = str(exc) if isinstance(exc, TooSoon) else (
                        "We couldn't send the code just now. Try again in a few minutes, or choose another method.")
                    return self.enroll_choice(ctx, user, csrf, message, status=503 if isinstance(
                        exc, GatewayUnavailable) else 429, kind=kind, inputs=inputs)
                self.set_pending(ctx, replace(pending, enrollment_id=view.method_id))
                return self.redirect(self.url("enroll"))
            if event is Event.ENROLL_CONFIRM and pending.enrollment_id is not None:
                result = self.rt.signin.enroll_finish(user, pending.enrollment_id,
                                                      {"code": ctx.request.form.get("code", "")[:64]},
                                                      ctx.client, ctx.now, attempt_id=pending.sid)
                then = ctx.request.form.get("then")
                if result.accepted and self.rt.factors.get("backup_codes") is not None:
                    then = then or "backup-codes"
                done = self.second_factor_done(ctx, pending, user, result, then)
                if done is not None:
                    return done
                again = self.rt.signin.enroll_view(user, pending.enrollment_id, ctx.client, ctx.now)
                if again is None:
                    return self.redirect(self.url("enroll"))
                if result.outcome == "pending":  # out-of-band: not answered yet (costs no attempt)
                    return self.enroll_screen(ctx, user, again, csrf, None, status=200,
                                              notice=self.not_yet(result.method or ""))
                if result.outcome == "fraud":
                    self.clear(ctx, ctx.names.pending)
                    return self.render(ctx, "message.html", status=403, title="Sign-in reported",
                                       message="This sign-in was reported as fraud and stopped.")
                enrolling = self.rt.factors.get(result.method or "")
                if enrolling is not None and enrolling.interaction is Interaction.OUT_OF_BAND:
                    return self.enroll_screen(ctx, user, again, csrf, "The call was not answered or not approved. "
                                              "Choose \"Use another number or method\" to try again.", status=401)
                if enrolling is not None and enrolling.interaction is Interaction.CEREMONY:
                    return self.enroll_screen(ctx, user, again, csrf, self.not_accepted(enrolling.kind, result.outcome),
                                              status=401)
                return self.enroll_screen(ctx, user, again, csrf, "That code didn't work. Enter the newest code.",
                                          status=401)
            if action == "restart":
                self.rt.store.delete_methods(user.id, unconfirmed_only=True)
                self.set_pending(ctx, replace(pending, enrollment_id=None))
            return self.redirect(self.url("enroll"))
        if pending.enrollment_id is not None:
            shown = self.rt.signin.enroll_view(user, pending.enrollment_id, ctx.client, ctx.now)
            if shown is not None:
                return self.enroll_screen(ctx, user, shown, csrf, None)
        return self.enroll_choice(ctx, user, csrf, None)

    def enroll_choice(self, ctx: PageContext, user: UserRecord, csrf: str, error: str | None, status: int = 200,
                      kind: str | None = None, inputs: dict[str, str] | None = None) -> Response:
        """ "How should we verify you?": the methods the configuration enables that can stand alone."""
        factors = [f for f in self.rt.factors if f.standalone]
        return self.render(ctx, "enroll_start.html", status=status, title="More information required", csrf=csrf,
                           username=user.username, factors=factors, error=error,
                           selected=kind or factors[0].kind, inputs=inputs or {})

    def enroll_screen(self, ctx: PageContext, user: UserRecord, view: EnrollmentView, csrf: str, error: str | None,
                      status: int = 200, notice: str | None = None) -> Response:
        method = self.rt.store.get_method(view.method_id)
        kind = method.kind if method is not None else "totp"
        factor = self.rt.factors.get(kind)
        return self.render(ctx, f"{kind}/enroll.html", status=status,
                           title=f"Set up {factor.label.lower() if factor else 'your method'}", csrf=csrf, view=view,
                           username=user.username, error=error, notice=notice,
                           offer_app_passwords=self.rt.app_passwords.may_create(user))

    def page_outbox(self, ctx: PageContext) -> Response:
        """The demo's outbox: emails, texts and calls the console gateways kept, newest first, with a keypad to
        answer a call (``dev_outbox = true`` only; the configuration refuses it next to a real gateway).

        The keypad's form carries a CSRF token bound to this page (signed with the secret key), so another site
        cannot answer a call through a visitor's browser; the keys go to the phone-call method exactly as a
        provider's signed callback would."""
        if not self.rt.config.dev_outbox:
            raise NotFound()
        email, phone = self.rt.email_gateway, self.rt.phone_gateway
        notice = error = None
        status = 200
        if ctx.request.method == "POST":
            answerers = [a for f in self.rt.factors if (a := getattr(f, "answer_console", None)) is not None]
            if not self.csrf_ok(ctx, OUTBOX_BINDING):
                return self.csrf_refused(ctx)
            keys = ctx.request.form.get("keys", "")[:33]
            result = None
            if not answerers or not keys or any(k not in "0123456789*#" for k in keys) or "#" not in keys:
                error, status = "Type the keys the caller presses, ending with # (for example # or 0#).", 400
            else:
                for answer in answerers:  # the phone-call method that placed the call answers it
                    try:
                        result = answer(ctx.request.form.get("call", "")[:64], keys, ctx.now)
                        break
                    except LookupError:
                        continue
                    except ValueError as exc:
                        error, status = str(exc).capitalize() + ".", 400
                        break
                else:
                    error, status = "No phone-call method placed that call.", 400
                if result is not None:
                    notice = {"approved": "The call approved the sign-in.",
                              "fraud": "The call reported fraud.",
                              "failed": "The call did not approve the sign-in."}.get(result, "The call is waiting.")
        messages = email.outbox.messages() if isinstance(email, ConsoleGateway) else []
        texts = list(phone.texts()) if isinstance(phone, ConsolePhoneGateway) else []
        calls = list(phone.calls()) if isinstance(phone, ConsolePhoneGateway) else []
        return self.render(ctx, "outbox.html", status=status, title="Outbox (demo)", messages=messages, texts=texts,
                           calls=calls, csrf=self.rt.codec.make_csrf(OUTBOX_BINDING), notice=notice, error=error,
                           fraud_code=self.rt.config.fraud.code)

    def page_step_up(self, ctx: PageContext) -> Response:
        target = self.next_of(ctx)
        session = self.session(ctx)
        if session is None:
            return self.sign_in_again(ctx, target)
        # ``fresh=1``: a full session whose second factor is no longer recent (or was a remembered device) asks for
        # a new one before the account's methods may change. Any other full session has nothing to step up to.
        again = session.level >= 2 and ctx.request.args.get("fresh") == "1" and not self.fresh_mfa(session, ctx.now)
        if session.level >= 2 and not again:
            return self.redirect(target)
        user = self.rt.store.get_user(session.username)
        if user is None:
            return self.redirect(self.url("login", target))
        # Exemption never applies here: the step-up exists because the target asks for a second factor. A user
        # with a method (exempt or not) is asked for it; only a user without one enrolls.
        stage = stage_of(self.rt.signin.facts(user, ctx.now))
        if stage not in PAGES:
            return self.off_track(ctx, stage, user)
        # The primary step of this session may be older than the sign-in timeout: the step-up counts from now, once
        # the store (not only this process's cache) confirms the session still stands.
        if self.rt.store.sign_in_revoked(user.username, since=session.issued_at, session_id=session.sid):
            return self.off_track(ctx, Stage.ENDED, user)
        pending = PendingSignIn(sid=new_session_id(), username=user.username, primary_method=session.methods[0],
                                primary_at=ctx.now, next=target)
        self.set_pending(ctx, pending)
        return self.redirect(self.url(PAGES[stage]))

    def page_logout(self, ctx: PageContext) -> Response:
        session = self.rt.codec.load_session(ctx.cookie(ctx.names.session))
        pending = self.rt.codec.load_pending(ctx.cookie(ctx.names.pending))
        holder = session or pending
        if ctx.request.method == "GET":
            if holder is None:
                return self.render(ctx, "message.html", title="Signed out", message="You are not signed in.",
                                   link=self.url("login"), link_text="Sign in")
            return self.render(ctx, "logout.html", title="Sign out", csrf=self.rt.codec.make_csrf(holder.sid),
                               username=holder.username)
        # "Cancel and sign out" on a step-up page carries a token bound to the pending sign-in while the browser
        # also holds its session: a token bound to either of the browser's own cookies is accepted.
        if not any(self.csrf_ok(ctx, item.sid) for item in (session, pending) if item is not None):
            return self.csrf_refused(ctx)
        # A logout always ends the session in the browser and in this process, even while the store is down: the
        # revocation is queued then and written once the store is back (services/revocation.py).
        self.clear(ctx, ctx.names.session, ctx.names.pending)
        for item in (session, pending):
            if item is not None:
                self.rt.revocations.revoke(item.username, now=ctx.now, session_id=item.sid)
                self.rt.audit.write("logout", "success", now=ctx.now, actor=item.username, username=item.username,
                                    client_ip=ctx.client.ip, user_agent=ctx.client.user_agent)
        return self.render(ctx, "message.html", title="Signed out",
                           message="You have signed out. Close the browser if you are on a shared computer.",
                           link=self.url("login"), link_text="Sign in again")

    def page_account(self, ctx: PageContext, notice: str | None = None, error: str | None = None,
                     status: int = 200) -> Response:
        """Security info: the account, its methods (add, remove, rename, default after a fresh second factor),
        backup codes, remembered devices (forget one by one) and app passwords."""
        session = self.session(ctx)
        if session is None:
            return self.sign_in_again(ctx, self.prefix + "/")
        user = self.rt.store.get_user(session.username)
        if user is None:
            return self.redirect(self.url("login"))
        methods = self.rt.signin.methods(user)
        labels = {f.kind: f.label for f in self.rt.factors}
        fmt = "%Y-%m-%d %H:%M UTC"
        codes = self.rt.factors.get("backup_codes")
        addable = [f for f in self.rt.factors if f.standalone]
        notice = notice or {"added": "The method was added.", "removed": "The method was removed.",
                            "renamed": "The method was renamed.", "default": "Your default method was changed.",
                            "forgotten": "The device was forgotten."}.get(ctx.request.args.get("done", ""))
        return self.render(ctx, "account.html", status=status, title="Security info", user=user, session=session,
                           methods=[(labels.get(m.kind, m.kind), m) for m in methods if m.kind != "backup_codes"],
                           signed_in=time.strftime(fmt, time.gmtime(session.primary_at)),
                           fmt_time=lambda t: time.strftime(fmt, time.gmtime(t)) if t else "never",
                           csrf=self.rt.codec.make_csrf(session.sid), fresh=self.fresh_mfa(session, ctx.now),
                           verify_again=self.url("step-up?fresh=1&next=" + quote(self.prefix + "/", safe="/")),
                           backup_codes=codes is not None and user.state != "disabled",
                           backup_remaining=self.rt.store.count_backup_codes(user.id) if codes is not None else 0,
                           may_add=bool(addable), remember=self.rt.devices.enabled,
                           devices=self.rt.devices.of_user(user, now=ctx.now) if self.rt.devices.enabled else [],
                           notice=notice, error=error)

    def page_methods(self, ctx: PageContext) -> Response:
        """The security info page's forms (POST): ``remove``, ``rename`` or ``default`` a method (each after a fresh
        second factor), ``forget`` a remembered device. Every change writes an audit row."""
        session = self.session(ctx)
        if session is None:
            return self.sign_in_again(ctx, self.prefix + "/")
        if not self.csrf_ok(ctx, session.sid):
            return self.csrf_refused(ctx)
        user = self.rt.store.get_user(session.username)
        if user is None:
            return self.redirect(self.url("login"))
        form = ctx.request.form
        action = form.get("action", "")
        who = {"actor": user.username, "client_ip": ctx.client.ip, "user_agent": ctx.client.user_agent}
        if action == "forget":
            # Forgetting a device only takes access away: a full session is enough, no fresh second factor.
            if session.level < 2 and not session.exempt:
                return self.redirect(self.url("step-up", self.prefix + "/"))
            device_id = form.get("device_id", "")
            if not device_id.isdigit() or not self.rt.devices.forget(user, int(device_id), now=ctx.now, **who):
                return self.page_account(ctx, error="That device is not in your list.", status=400)
            return self.redirect(self.url("?done=forgotten"))
        if action not in ("remove", "rename", "default"):
            return self.page_account(ctx, error="Unknown action.", status=400)
        if not self.fresh_mfa(session, ctx.now):
            return self.render(ctx, "message.html", status=403, title="Verify again first",
                               message="For your security, changing your sign-in methods needs a second factor from "
                                       "the last few minutes. Nothing was changed.",
                               link=self.url("step-up?fresh=1&next=" + quote(self.prefix + "/", safe="/")),
                               link_text="Verify again")
        method_id = form.get("method_id", "")
        method = next((m for m in self.rt.signin.methods(user) if str(m.id) == method_id), None)
        if method is None or method.kind == "backup_codes":
            return self.page_account(ctx, error="That method is not in your list.", status=400)

        def audit(result: str, **detail: str) -> None:
            self.rt.audit.write("method", result, now=ctx.now, actor=user.username, username=user.username,
                                client_ip=ctx.client.ip, user_agent=ctx.client.user_agent, **detail)

        if action == "rename":
            label = " ".join(form.get("label", "").split())[:100]
            if not label:
                return self.page_account(ctx, error="Enter a name for the method.", status=400)
            self.rt.store.rename_method(user.id, method.id, label)
            audit("renamed", method=method.kind, label=label)
            return self.redirect(self.url("?done=renamed"))
        factor = self.rt.factors.get(method.kind)
        if action == "default":
            if factor is None or not factor.standalone or not self.rt.store.set_default_method(user.id, method.id):
                return self.page_account(ctx, error="That method cannot be the default.", status=400)
            audit("default", method=method.kind)
            return self.redirect(self.url("?done=default"))
        # remove: while the user is enforced, never the last method that can stand alone (backup codes only back
        # up another method). The store checks under a lock on the user's row, so two removals at once cannot
        # both pass.
        standalone = tuple(f.kind for f in self.rt.factors if f.standalone)
        enforced = user.state == "enforced"
        # Remembered devices stood for the methods the user had: forgotten first, so a failure leaves none.
        self.rt.devices.forget_all(user, now=ctx.now, reason="method_removed", **who)
        if not self.rt.store.delete_method(user.id, method.id, keep_one=enforced, counted_kinds=standalone):
            audit("refused", method=method.kind, reason="last_method")
            return self.page_account(ctx, status=409,
                                     error="This is your only sign-in method and your organisation requires one. "
                                           "Add another method first, then remove this one.")
        if method.is_default:
            rest = [m for m in self.rt.signin.methods(user) if m.kind in standalone]
            if rest:
                self.rt.store.set_default_method(user.id, rest[0].id)
        audit("removed", method=method.kind, label=method.label)
        return self.redirect(self.url("?done=removed"))

    def page_add_method(self, ctx: PageContext) -> Response:
        """Add a method to an account that has one: choose (GET), start (POST ``start``: the method's enrollment
        inputs), confirm (POST ``confirm`` with ``?id=`` of the unconfirmed method). Every step needs a full session
        with a fresh second factor; the enrollment is the method's own, with ``first_method_only=False``."""
        here = self.prefix + "/methods/add"
        session = self.session(ctx)
        if session is None:
            return self.sign_in_again(ctx, self.prefix + "/")
        if not self.fresh_mfa(session, ctx.now):
            return self.render(ctx, "message.html", status=403, title="Verify again first",
                               message="For your security, adding a sign-in method needs a second factor from the "
                                       "last few minutes.",
                               link=self.url("step-up?fresh=1&next=" + quote(self.prefix + "/", safe="/")),
                               link_text="Verify again")
        user = self.rt.store.get_user(session.username)
        if user is None:
            return self.redirect(self.url("login"))
        csrf = self.rt.codec.make_csrf(session.sid)
        factors = [f for f in self.rt.factors if f.standalone]
        raw_id = ctx.request.args.get("id", "")
        method_id = int(raw_id) if raw_id.isdigit() and len(raw_id) < 12 else None
        action = ctx.request.form.get("action", "") if ctx.request.method == "POST" else ""
        if ctx.request.method == "POST" and not self.csrf_ok(ctx, session.sid):
            return self.csrf_refused(ctx)

        def choice(error: str | None, status: int, kind: str | None = None,
                   inputs: dict[str, str] | None = None) -> Response:
            return self.render(ctx, "add_method.html", status=status, title="Add a sign-in method", csrf=csrf,
                               factors=factors, error=error, selected=kind or factors[0].kind, inputs=inputs or {})

        if action == "start":
            kind = ctx.request.form.get("method", "")
            factor = self.rt.factors.get(kind)
            if factor is None or not factor.standalone:
                return choice("Choose one of the methods listed.", 400)
            inputs = enroll_inputs(ctx.request, factor)
            try:
                view = self.rt.signin.enroll_begin(user, kind, ctx.client, ctx.now, inputs, attempt_id=session.sid,
                                                   first_method_only=False)
            except EnrollError as exc:
                return choice(str(exc), 400, kind, inputs)
            except (GatewayUnavailable, TooSoon) as exc:
                log.error("adding a method for %s: could not send a code: %s", user.username, exc)
                return choice(str(exc) if isinstance(exc, TooSoon) else
                              "We couldn't send the code just now. Try again in a few minutes.", 503, kind, inputs)
            return self.redirect(f"{here}?id={view.method_id}")
        if method_id is not None:
            shown = self.rt.signin.enroll_view(user, method_id, ctx.client, ctx.now)
            if shown is None:
                return self.redirect(here)
            error: str | None = None
            notice: str | None = None
            status = 200
            if action == "confirm":
                result = self.rt.signin.enroll_finish(user, method_id, {"code": ctx.request.form.get("code", "")[:64]},
                                                      ctx.client, ctx.now, attempt_id=session.sid,
                                                      first_method_only=False)
                if result.accepted:
                    self.settings.method_added(ctx, user, result.method or "")  # the notification email
                    return self.redirect(self.url("?done=added"))
                if result.outcome == "locked":
                    return self.locked(ctx, result.locked_until)
                if result.outcome == "blocked":
                    return self.blocked(ctx)
                confirming = self.rt.factors.get(result.method or "")
                if result.outcome == "pending":  # out-of-band or ceremony: not answered yet (costs no attempt)
                    notice = self.not_yet(result.method or "")
                elif confirming is not None and confirming.interaction is not Interaction.CODE:
                    error, status = self.not_accepted(confirming.kind, result.outcome), 401
                else:
                    error, status = "That code didn't work. Enter the newest code.", 401
            method = self.rt.store.get_method(method_id)
            kind = method.kind if method is not None else "totp"
            factor = self.rt.factors.get(kind)
            return self.render(ctx, f"{kind}/enroll.html", status=status,
                               title=f"Set up {factor.label.lower() if factor else 'your method'}", csrf=csrf,
                               view=shown, username=user.username, error=error, notice=notice,
                               offer_app_passwords=False,
                               enroll_action=f"{here}?id={method_id}")
        return choice(None, 200)

    def page_app_passwords(self, ctx: PageContext) -> Response:
        """Create, list and revoke app passwords; only after a full sign-in (second factor, or MFA-exempt). The
        page itself moved to security info (GET redirects there); these forms still work."""
        if ctx.request.method == "GET":
            return self.settings.page_legacy_app_passwords(ctx)
        from ..services.accounts import AccountError
        from ..services.app_passwords import display

        session = self.session(ctx)
        if session is None:
            return self.sign_in_again(ctx, self.prefix + "/app-passwords")
        if session.level < 2 and not session.exempt:
            return self.redirect(self.url("step-up", self.prefix + "/app-passwords"))
        user = self.rt.store.get_user(session.username)
        if user is None:
            return self.redirect(self.url("login"))
        csrf = self.rt.codec.make_csrf(session.sid)
        created = None
        error = None
        status = 200
        if ctx.request.method == "POST":
            if not self.csrf_ok(ctx, session.sid):
                return self.csrf_refused(ctx)
            action = ctx.request.form.get("action", "")
            try:
                if action == "create":
                    record, password = self.rt.app_passwords.create(
                        user, ctx.request.form.get("label", "")[:200], actor=user.username, client_ip=ctx.client.ip,
                        user_agent=ctx.client.user_agent)
                    created = (record.label, display(password))
                elif action == "revoke":
                    self.rt.app_passwords.revoke(user, ctx.request.form.get("label", ""), actor=user.username,
                                                 client_ip=ctx.client.ip, user_agent=ctx.client.user_agent)
                    return self.redirect(self.url("app-passwords"))
                else:
                    raise AccountError("Unknown action.")
            except AccountError as exc:
                error, status = str(exc)[:1].upper() + str(exc)[1:], 400
        fmt = "%Y-%m-%d %H:%M UTC"
        target = ctx.request.args.get("next")
        return self.render(ctx, "app_passwords.html", status=status, title="App passwords", csrf=csrf, user=user,
                           continue_to=self.next_of(ctx) if target else None,
                           items=self.rt.app_passwords.list(user), created=created, error=error,
                           allowed=self.rt.app_passwords.may_create(user),
                           limit=self.rt.config.basic.max_app_passwords,
                           fmt_time=lambda t: time.strftime(fmt, time.gmtime(t)) if t else "never")
