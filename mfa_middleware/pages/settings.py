"""Security info (``/_mfa/settings``): a signed-in user's own methods, app passwords, remembered devices, backup
codes, sessions and recent sign-in activity.

Trust model and rules:

- Every page needs a full session (a second factor, or an MFA-exempt sign-in) that the STORE still confirms (not
  only this process's revocation cache): a session ended elsewhere cannot replay a settings form here, even within
  the revocation interval.
- Every change is a POST carrying a CSRF token bound to the current session id. A step-up issues a new session id,
  so a form from before it is refused.
- Every change needs a real second factor from the last ``[session] step_up`` seconds (a remembered device never
  counts). Without one, nothing changes and the page offers the step-up, which returns to the same place.
- Every id in a form (method, app password, device, session) is looked up among the signed-in user's OWN rows;
  another user's id changes nothing and gets "not in your list".
- Bad input changes nothing; messages are written for users, never taken from an exception.
- Every change is audited, and the user gets a notification email when ``[email]`` is configured and the account has
  an address (best effort, in the background: see :mod:`mfa_middleware.services.account_notices`).
- Secrets (a new app password, new backup codes) are shown once, on the response to the POST that made them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from ..core.paths import safe_next
from ..core.tokens import Session
from ..services.account_notices import AccountNotices
from ..services.app_passwords import check_label, display
from ..services.accounts import AccountError
from ..factors.backup_codes import display as code_display
from ..services.devices import REMEMBERED, device_name
from ..services.sessions import SessionLog
from ..store import UserRecord

if TYPE_CHECKING:
    from .app import PageContext, PagesApp

#: longest method name (a label the user chooses)
MAX_METHOD_NAME = 100
#: rows of recent activity shown
ACTIVITY_ROWS = 25

#: how a session's sign-in steps read in words
STEP_WORDS = {"forms": "password", "remote_user": "Windows sign-in", "passwordless": "passkey",
              REMEMBERED: "remembered device", "bypass": "one-time bypass", "unknown": "second factor"}

#: notices after a change (``?done=``)
DONE = {
    "renamed": "The method was renamed.",
    "default": "Your default method was changed. It is offered first when you sign in.",
    "removed": "The method was removed.",
    "revoked": "The app password was revoked. Devices using it can no longer sign in.",
    "forgotten": "The device was forgotten. It will ask for a second factor next time.",
    "forgotten_all": "All remembered devices were forgotten.",
    "signed_out": "Your other sessions were signed out.",
    "signed_out_one": "That session was signed out.",
    "verified": "You verified your identity. You can make changes for the next few minutes.",
    "added": "The method was added.",
}


@dataclass(frozen=True, slots=True)
class Visit:
    """A settings request that passed the checks: the session, the user, and whether changes are allowed now."""

    session: Session
    user: UserRecord
    fresh: bool
    csrf: str


def iso(at: float | None) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="seconds") if at else ""


def utc_text(at: float | None) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC") if at else "never"


class SettingsPages:
    """The security info pages, bound to one :class:`PagesApp` (its session checks, templates and runtime)."""

    #: pages a step-up may return to (GET pages; never a form endpoint)
    RETURNABLE = ("/settings", "/settings/methods/remove", "/settings/app-passwords/revoke",
                  "/settings/backup-codes", "/settings/devices/forget-all")

    def __init__(self, pages: PagesApp) -> None:
        self.pages = pages
        rt = pages.rt
        self.sessions = SessionLog(rt.store, rt.audit, absolute_timeout=rt.config.session.absolute_timeout)
        self.notices = AccountNotices(rt.email_gateway, rt.audit, site_name=rt.config.site_name)

    def rules(self) -> list[Rule]:
        page: dict[str, Callable[..., Response]] = {
            "/settings": self.page_show,
            "/settings/methods/rename": self.page_rename,
            "/settings/methods/default": self.page_default,
            "/settings/methods/remove": self.page_remove,
            "/settings/app-passwords/create": self.page_create_app_password,
            "/settings/app-passwords/revoke": self.page_revoke_app_password,
            "/settings/devices/forget": self.page_forget_device,
            "/settings/devices/forget-all": self.page_forget_all,
            "/settings/backup-codes": self.page_backup_codes,
            "/settings/sessions/sign-out": self.page_sign_out_session,
            "/settings/sessions/sign-out-others": self.page_sign_out_others,
        }
        gets = {"/settings", "/settings/methods/remove", "/settings/app-passwords/revoke", "/settings/backup-codes",
                "/settings/devices/forget-all"}
        return [Rule(path, endpoint=handler, methods=["GET", "POST"] if path in gets else ["POST"])
                for path, handler in page.items()]

    def returnable(self, target: str) -> bool:
        path = urlsplit(target).path
        return any(path == self.pages.prefix + p for p in self.RETURNABLE)

    def record_session(self, ctx: PageContext, user: UserRecord, session: Session) -> None:
        """Called by the pages where a session cookie is made (never on an authenticated request)."""
        self.sessions.record(user, session.sid, methods=session.methods, client_ip=ctx.client.ip,
                             user_agent=ctx.client.user_agent, now=ctx.now)

    # -- checks ------------------------------------------------------------------------------------------------
    def url(self, path: str = "") -> str:
        return f"{self.pages.prefix}/settings{path}"

    def visit(self, ctx: PageContext, here: str, *, change: bool) -> Visit | Response:
        """The checks every settings request passes (see the module rules), in order: a session that the store
        confirms, a full one, the user, the CSRF token (POST), a recent second factor (changes)."""
        pages = self.pages
        session = pages.session(ctx)
        if session is None:
            return pages.sign_in_again(ctx, self.url())
        if session.level < 2 and not session.exempt:
            return pages.redirect(pages.url("step-up", self.url()))
        if pages.rt.store.sign_in_revoked(session.username, since=session.issued_at, session_id=session.sid):
            pages.clear(ctx, ctx.names.session)
            return pages.render(ctx, "message.html", status=401, title="Session ended",
                                message="This session was signed out, from another browser or by your helpdesk. "
                                        "Nothing was changed. Sign in again to continue.",
                                link=pages.url("login", self.url()), link_text="Sign in again")
        user = pages.rt.store.get_user(session.username)
        if user is None:
            return pages.redirect(pages.url("login"))
        csrf = pages.rt.codec.make_csrf(session.sid)
        if ctx.request.method == "POST" and not pages.csrf_ok(ctx, session.sid):
            return pages.render(ctx, "message.html", status=403, title="Form expired",
                                message="This form has expired (for example after you verified your identity "
                                        "again) or did not come from this site. Nothing was changed. Reload the "
                                        "page and try again.",
                                link=self.url(), link_text="Back to security info")
        fresh = pages.fresh_mfa(session, ctx.now)
        if change and not fresh:
            return self.step_up_prompt(ctx, here)
        return Visit(session=session, user=user, fresh=fresh, csrf=csrf)

    def step_up_link(self, here: str) -> str:
        return self.pages.url("step-up?fresh=1&next=" + quote(here, safe="/"))

    def step_up_prompt(self, ctx: PageContext, here: str) -> Response:
        minutes = max(1, round(self.pages.rt.config.session.step_up / 60))
        return self.render(ctx, "settings_step_up.html", status=403, title="Verify your identity again",
                           minutes=minutes, link=self.step_up_link(here))

    def render(self, ctx: PageContext, template: str, status: int = 200, **values: Any) -> Response:
        values.setdefault("iso", iso)
        values.setdefault("utc_text", utc_text)
        values.setdefault("settings_url", self.url())
        return self.pages.render(ctx, template, status=status, **values)

    def done(self, key: str, section: str) -> Response:
        return self.pages.redirect(f"{self.url()}?done={key}#{section}")

    def audit(self, ctx: PageContext, user: UserRecord, event: str, result: str, **detail: Any) -> None:
        self.pages.rt.audit.write(event, result, now=ctx.now, actor=user.username, username=user.username,
                                  client_ip=ctx.client.ip, user_agent=ctx.client.user_agent, **detail)

    def notify(self, ctx: PageContext, user: UserRecord, change: str, reason: str) -> None:
        self.notices.notify(user, change, reason=reason, client_ip=ctx.client.ip, user_agent=ctx.client.user_agent,
                            now=ctx.now)

    def kind_words(self, kind: str) -> str:
        factor = self.pages.rt.factors.get(kind)
        return factor.label if factor is not None else STEP_WORDS.get(kind, kind.replace("_", " "))

    def steps_words(self, methods: tuple[str, ...]) -> str:
        words = [STEP_WORDS.get(m) or self.kind_words(m).lower() for m in methods]
        return " and ".join(w for w in words if w) or "unknown"

    def method_added(self, ctx: PageContext, user: UserRecord, kind: str) -> None:
        """The add-method flow (pages/app.py) confirmed a new method: tell the user by email."""
        self.notify(ctx, user, f"A sign-in method was added to your account: {self.kind_words(kind)}.",
                    "method_added")

    # -- the old addresses --------------------------------------------------------------------------------------
    def page_home(self, ctx: PageContext) -> Response:
        """``/_mfa/`` (the old account page): security info."""
        if self.pages.session(ctx) is None:
            return self.pages.sign_in_again(ctx, self.url())
        done = ctx.request.args.get("done", "")
        return self.pages.redirect(self.url() + (f"?done={quote(done)}" if done in DONE else ""))

    def page_legacy_app_passwords(self, ctx: PageContext) -> Response:
        """``GET /_mfa/app-passwords`` (the old page; the end of enrollment offers it with ``next``): the app
        passwords section of security info, keeping where to continue to."""
        if self.pages.session(ctx) is None:
            return self.pages.sign_in_again(ctx, self.pages.prefix + "/app-passwords")
        target = ctx.request.args.get("next")
        query = f"?next={quote(safe_next(target, '/'), safe='/')}" if target else ""
        return self.pages.redirect(self.url() + query + "#app-passwords")

    # -- the page ----------------------------------------------------------------------------------------------
    def page_show(self, ctx: PageContext, *, error: str | None = None, status: int = 200,
                  label_value: str = "") -> Response:
        found = self.visit(ctx, self.url(), change=False)
        if isinstance(found, Response):
            return found
        if ctx.request.method == "POST" and error is None:
            return self.pages.redirect(self.url())
        return self.show(ctx, found, error=error, status=status, label_value=label_value)

    def show(self, ctx: PageContext, v: Visit, *, error: str | None = None, status: int = 200,
             label_value: str = "", error_field: str | None = None) -> Response:
        rt = self.pages.rt
        user = v.user
        methods = [m for m in rt.signin.methods(user) if m.kind != "backup_codes"]
        standalone = {f.kind for f in rt.factors if f.standalone}
        codes = rt.factors.get("backup_codes")
        raw_next = ctx.request.args.get("next")
        back = safe_next(raw_next, "/")
        if back == self.pages.prefix or back.startswith(self.pages.prefix + "/"):
            back = "/"
        return self.render(
            ctx, "settings.html", status=status, title="Security info", user=user, v=v, error=error,
            error_field=error_field, notice=DONE.get(ctx.request.args.get("done", "")), back=back,
            continue_to=back if raw_next else None,
            signed_in_with=self.steps_words(v.session.methods), signed_in_at=v.session.primary_at,
            step_up_link=self.step_up_link(self.url()),
            step_up_minutes=max(1, round(rt.config.session.step_up / 60)),
            methods=[{"m": m, "kind": self.kind_words(m.kind), "standalone": m.kind in standalone}
                     for m in methods],
            may_add=any(f.standalone for f in rt.factors),
            app_passwords=rt.app_passwords.list(user), may_create=rt.app_passwords.may_create(user),
            app_password_limit=rt.config.basic.max_app_passwords, label_value=label_value,
            remember=rt.devices.enabled, devices=rt.devices.of_user(user, now=ctx.now) if rt.devices.enabled else [],
            backup_codes=codes is not None and any(m.kind in standalone for m in methods),
            backup_remaining=rt.store.count_backup_codes(user.id) if codes is not None else 0,
            sessions=self.sessions.active(user, current_sid=v.session.sid, now=ctx.now,
                                          revoked=rt.revocations.view(ctx.now)),
            activity=self.activity(user))

    def activity(self, user: UserRecord) -> list[dict[str, Any]]:
        """The user's own recent sign-ins, failures and changes, in words (rows of other kinds are skipped)."""
        rows = self.pages.rt.store.list_audit(username=user.username, limit=ACTIVITY_ROWS * 4)
        shown: list[dict[str, Any]] = []
        for row in rows:
            words = self.describe(row.event, row.result, row.detail)
            if words is None:
                continue
            text, failed = words
            shown.append({"at": row.at, "text": text, "failed": failed, "place": row.client_ip or "",
                          "device": _device(row.user_agent)})
            if len(shown) >= ACTIVITY_ROWS:
                break
        return shown

    def describe(self, event: str, result: str, detail: dict[str, Any]) -> tuple[str, bool] | None:
        method = self.kind_words(str(detail.get("method", ""))) if detail.get("method") else "a method"
        label = str(detail.get("label") or "")
        if event == "primary":
            return ("Password accepted", False) if result == "success" else ("Sign-in failed: wrong password or "
                                                                             "account paused", True)
        if event == "second_factor":
            if result == "success":
                return f"Signed in with {method.lower() if detail.get('method') else 'a second factor'}", False
            if result == "bypassed":
                return "Signed in with a one-time bypass", False
            return "Second-factor check failed", True
        if event == "passwordless":
            return ("Signed in with a passkey", False) if result == "success" else ("Passkey sign-in failed", True)
        if event == "logout":
            return "Signed out", False
        if event == "enroll" and result == "success":
            return f"Method added: {method}", False
        if event == "method":
            return {"removed": (f"Method removed: {label or method}", False),
                    "renamed": (f"Method renamed to “{label}”", False),
                    "default": (f"Default method set: {method}", False),
                    "refused": ("Removing your only method was refused", True)}.get(result)
        if event == "app_password_create":
            return f"App password created: {label}", False
        if event == "app_password_revoke":
            return (f"App password revoked: {label}" if label != "*" else "All app passwords revoked"), False
        if event == "backup_codes" and result == "created":
            return "New backup codes made", False
        if event == "device":
            return {"remembered": ("Device remembered", False), "forgotten": ("Remembered device forgotten", False)
                    }.get(result)
        if event == "sessions" and result == "signed_out_others":
            return "Other sessions signed out", False
        if event == "sessions" and result == "signed_out_one":
            return "A session was signed out", False
        if event == "sessions_revoked":
            return "All sessions ended by your helpdesk", False
        return None

    # -- methods -----------------------------------------------------------------------------------------------
    def own_method(self, v: Visit, raw: str) -> Any:
        return next((m for m in self.pages.rt.signin.methods(v.user) if str(m.id) == raw and m.kind != "backup_codes"),
                    None)

    def page_rename(self, ctx: PageContext) -> Response:
        v = self.visit(ctx, self.url() + "#methods", change=True)
        if isinstance(v, Response):
            return v
        method = self.own_method(v, ctx.request.form.get("method_id", ""))
        if method is None:
            return self.show(ctx, v, error="That method is not in your list.", status=400)
        label = " ".join(ctx.request.form.get("label", "").split())
        if not label or len(label) > MAX_METHOD_NAME or any(ord(c) < 0x20 or ord(c) == 0x7F for c in label):
            return self.show(ctx, v, error=f"Enter a name of 1 to {MAX_METHOD_NAME} characters for the method.",
                             status=400)
        self.pages.rt.store.rename_method(v.user.id, method.id, label)
        self.audit(ctx, v.user, "method", "renamed", method=method.kind, label=label)
        return self.done("renamed", "methods")

    def page_default(self, ctx: PageContext) -> Response:
        v = self.visit(ctx, self.url() + "#methods", change=True)
        if isinstance(v, Response):
            return v
        method = self.own_method(v, ctx.request.form.get("method_id", ""))
        if method is None:
            return self.show(ctx, v, error="That method is not in your list.", status=400)
        factor = self.pages.rt.factors.get(method.kind)
        if factor is None or not factor.standalone or not self.pages.rt.store.set_default_method(v.user.id,
                                                                                                  method.id):
            return self.show(ctx, v, error="That method cannot be the default.", status=400)
        self.audit(ctx, v.user, "method", "default", method=method.kind)
        return self.done("default", "methods")

    def page_remove(self, ctx: PageContext) -> Response:
        raw = ctx.request.values.get("method_id", "")[:20]
        here = self.url("/methods/remove") + (f"?method_id={quote(raw)}" if raw.isdigit() else "")
        v = self.visit(ctx, here, change=True)
        if isinstance(v, Response):
            return v
        rt = self.pages.rt
        method = self.own_method(v, raw)
        if method is None:
            return self.show(ctx, v, error="That method is not in your list.", status=400)
        if ctx.request.method == "GET":
            return self.render(ctx, "settings_confirm.html", title="Remove a sign-in method", csrf=v.csrf,
                               action=self.url("/methods/remove"), field="method_id", value=method.id,
                               question=f"Remove “{method.label}” ({self.kind_words(method.kind)})?",
                               explain="You will no longer be able to sign in with it. Remembered devices are "
                                       "forgotten too.", button="Remove method", cancel=self.url() + "#methods")
        standalone = tuple(f.kind for f in rt.factors if f.standalone)
        who = {"actor": v.user.username, "client_ip": ctx.client.ip, "user_agent": ctx.client.user_agent}
        rt.devices.forget_all(v.user, now=ctx.now, reason="method_removed", **who)
        if not rt.store.delete_method(v.user.id, method.id, keep_one=v.user.state == "enforced",
                                      counted_kinds=standalone):
            if self.own_method(v, raw) is None:  # removed meanwhile (a double submit): nothing left to do
                return self.show(ctx, v, error="That method is not in your list.", status=400)
            self.audit(ctx, v.user, "method", "refused", method=method.kind, reason="last_method")
            return self.show(ctx, v, status=409, error="This is your only sign-in method and your organisation "
                                                       "requires one. Add another method first, then remove this "
                                                       "one.")
        if method.is_default:
            rest = [m for m in rt.signin.methods(v.user) if m.kind in standalone]
            if rest:
                rt.store.set_default_method(v.user.id, rest[0].id)
        self.audit(ctx, v.user, "method", "removed", method=method.kind, label=method.label)
        self.notify(ctx, v.user, f"A sign-in method was removed from your account: {method.label} "
                                 f"({self.kind_words(method.kind)}).", "method_removed")
        return self.done("removed", "methods")

    # -- app passwords -----------------------------------------------------------------------------------------
    def page_create_app_password(self, ctx: PageContext) -> Response:
        v = self.visit(ctx, self.url() + "#app-passwords", change=True)
        if isinstance(v, Response):
            return v
        rt = self.pages.rt
        raw = ctx.request.form.get("label", "")
        typed = " ".join(raw.split())[:200]

        def refuse(message: str, status: int = 400) -> Response:
            return self.show(ctx, v, error=message, status=status, label_value=typed[:64],
                             error_field="app-password-label")

        if not rt.app_passwords.may_create(v.user):
            return refuse("Administrator accounts cannot have app passwords.", 403)
        try:
            label = check_label(raw)
        except AccountError:
            return refuse("Enter a device name of 1 to 64 characters, for example “Outlook on my laptop”.")
        existing = rt.app_passwords.list(v.user)
        if any(item.label == label for item in existing):
            return refuse(f"You already have an app password named “{label}”. Choose another name, or revoke "
                          "that one first.", 409)
        if len(existing) >= rt.config.basic.max_app_passwords:
            return refuse(f"You have the most app passwords allowed ({rt.config.basic.max_app_passwords}). "
                          "Revoke one you no longer use first.", 409)
        try:
            record, password = rt.app_passwords.create(v.user, label, actor=v.user.username, client_ip=ctx.client.ip,
                                                       user_agent=ctx.client.user_agent)
        except AccountError:
            # Lost a race with another request (the same name, or the last free place): say which.
            if any(item.label == label for item in rt.app_passwords.list(v.user)):
                return refuse(f"You already have an app password named “{label}”. Choose another name, or "
                              "revoke that one first.", 409)
            return refuse("The app password could not be created. Reload the page and try again.", 409)
        self.notify(ctx, v.user, f"An app password named “{record.label}” was created for your account.",
                    "app_password_created")
        return self.render(ctx, "settings_secret.html", title="Your new app password", label=record.label,
                           password=display(password), back=self.url() + "#app-passwords")

    def page_revoke_app_password(self, ctx: PageContext) -> Response:
        raw = ctx.request.values.get("app_password_id", "")[:20]
        here = self.url("/app-passwords/revoke") + (f"?app_password_id={quote(raw)}" if raw.isdigit() else "")
        v = self.visit(ctx, here, change=True)
        if isinstance(v, Response):
            return v
        rt = self.pages.rt
        item = next((a for a in rt.app_passwords.list(v.user) if str(a.id) == raw), None)
        if item is None:
            return self.show(ctx, v, error="That app password is not in your list.", status=400)
        if ctx.request.method == "GET":
            return self.render(ctx, "settings_confirm.html", title="Revoke an app password", csrf=v.csrf,
                               action=self.url("/app-passwords/revoke"), field="app_password_id", value=item.id,
                               question=f"Revoke the app password “{item.label}”?",
                               explain="Apps and devices using it will stop signing in within a few seconds.",
                               button="Revoke app password", cancel=self.url() + "#app-passwords")
        try:
            rt.app_passwords.revoke(v.user, item.label, actor=v.user.username, client_ip=ctx.client.ip,
                                    user_agent=ctx.client.user_agent)
        except AccountError:
            return self.show(ctx, v, error="That app password is not in your list.", status=400)
        rt.revocations.refresh(ctx.now)
        self.notify(ctx, v.user, f"The app password named “{item.label}” was revoked.", "app_password_revoked")
        return self.done("revoked", "app-passwords")

    # -- remembered devices --------------------------------------------------------------------------------------
    def page_forget_device(self, ctx: PageContext) -> Response:
        v = self.visit(ctx, self.url() + "#devices", change=True)
        if isinstance(v, Response):
            return v
        raw = ctx.request.form.get("device_id", "")
        rt = self.pages.rt
        if not (raw.isdigit() and len(raw) < 12) or not rt.devices.forget(
                v.user, int(raw), actor=v.user.username, client_ip=ctx.client.ip, user_agent=ctx.client.user_agent,
                now=ctx.now):
            return self.show(ctx, v, error="That device is not in your list.", status=400)
        return self.done("forgotten", "devices")

    def page_forget_all(self, ctx: PageContext) -> Response:
        v = self.visit(ctx, self.url("/devices/forget-all"), change=True)
        if isinstance(v, Response):
            return v
        if ctx.request.method == "GET":
            return self.render(ctx, "settings_confirm.html", title="Forget all remembered devices", csrf=v.csrf,
                               action=self.url("/devices/forget-all"), field=None, value=None,
                               question="Forget every remembered device?",
                               explain="Each of them will ask for a second factor at the next sign-in.",
                               button="Forget all devices", cancel=self.url() + "#devices")
        self.pages.rt.devices.forget_all(v.user, actor=v.user.username, client_ip=ctx.client.ip,
                                         user_agent=ctx.client.user_agent, now=ctx.now, reason="user")
        return self.done("forgotten_all", "devices")

    # -- backup codes ----------------------------------------------------------------------------------------------
    def page_backup_codes(self, ctx: PageContext) -> Response:
        v = self.visit(ctx, self.url("/backup-codes"), change=True)
        if isinstance(v, Response):
            return v
        rt = self.pages.rt
        factor = rt.factors.get("backup_codes")
        generate = getattr(factor, "generate", None)
        if factor is None or generate is None or not any(
                m.kind != "backup_codes" for m in rt.signin.methods(v.user)):
            return self.show(ctx, v, error="Backup codes are not available for your account.", status=400)
        if ctx.request.method == "GET":
            return self.render(ctx, "settings_confirm.html", title="New backup codes", csrf=v.csrf,
                               action=self.url("/backup-codes"), field=None, value=None,
                               question="Make a new set of backup codes?",
                               explain="Your current backup codes stop working at once. The new ones are shown "
                                       "only once: print them or save them somewhere safe.",
                               button="Make new codes", cancel=self.url() + "#backup-codes")
        _method_id, codes = generate(v.user, rt.signin.context(ctx.client, ctx.now, first_method_only=False))
        self.audit(ctx, v.user, "backup_codes", "created", count=len(codes))
        self.notify(ctx, v.user, "A new set of backup codes was made for your account; the old codes no longer "
                                 "work.", "backup_codes_regenerated")
        return self.render(ctx, "settings_codes.html", title="Your new backup codes",
                           codes=[code_display(c) for c in codes],
                           back=self.url() + "#backup-codes")

    # -- sessions ----------------------------------------------------------------------------------------------
    def page_sign_out_others(self, ctx: PageContext) -> Response:
        v = self.visit(ctx, self.url() + "#sessions", change=True)
        if isinstance(v, Response):
            return v
        count = self.sessions.sign_out_others(v.user, current_sid=v.session.sid, client_ip=ctx.client.ip,
                                              user_agent=ctx.client.user_agent, now=ctx.now)
        self.pages.rt.revocations.refresh(ctx.now)
        if count:
            self.notify(ctx, v.user, f"{count} other session{'s' if count != 1 else ''} of your account "
                                     f"{'were' if count != 1 else 'was'} signed out.", "sessions_signed_out")
        return self.done("signed_out", "sessions")

    def page_sign_out_session(self, ctx: PageContext) -> Response:
        v = self.visit(ctx, self.url() + "#sessions", change=True)
        if isinstance(v, Response):
            return v
        sid = ctx.request.form.get("session_id", "")[:64]
        if not sid or sid == v.session.sid:
            return self.show(ctx, v, error="That session is not in your list.", status=400)
        ended = self.pages.rt.store.end_session_records(v.user.id, v.user.username, keep_sid=v.session.sid,
                                                        now=ctx.now, sids=[sid])
        if not ended:
            return self.show(ctx, v, error="That session is not in your list.", status=400)
        self.pages.rt.revocations.refresh(ctx.now)
        self.audit(ctx, v.user, "sessions", "signed_out_one", count=1)
        self.notify(ctx, v.user, "One of your sessions was signed out.", "sessions_signed_out")
        return self.done("signed_out_one", "sessions")


def _device(user_agent: str | None) -> str:
    return device_name(user_agent) if user_agent else ""
