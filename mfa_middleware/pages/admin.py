"""The admin portal under ``<prefix>/admin``: users (search, filters, keyset pages, bulk state changes, CSV import),
one user's detail and helpdesk actions, fraud reports, the audit log (filters, CSV export) and the usage report.

Trust model:

- **Who gets in.** A browser session cookie only (the pages never read an ``Authorization`` header, so an app
  password on the Basic path opens nothing here), of a user whose CURRENT store record says ``is_admin`` (the flag in
  the cookie may be stale), at level 2 with a real second factor: not MFA-exempt, not a remembered device standing
  in for the second factor, not a one-time bypass. Anyone else gets a page that says why and offers a way on
  (security info, verify again, or sign out and in again); every refusal is an audit row.
- **Reading is safe, changing is confirmed.** GET pages change nothing. Every change goes in two steps: a POST
  (with the session's CSRF token) that validates the request and shows a confirmation page, then a POST of that
  page's confirmation token. The token is signed with its own salt and names the acting administrator, their
  session id, the operation, its users and parameters, and when it was made: another administrator's token, a
  token of an older session, a token older than :data:`CONFIRM_TTL` or an edited one applies nothing.
- **Fresh second factor.** Showing a confirmation page and applying it both need a second factor from the last
  few minutes (``PagesApp.fresh_mfa``); otherwise the page offers the step-up and nothing changes.
- **Audited.** Every change is written by the account services with the actor ``admin:<username>``; bulk changes
  and imports add one summary row with the client address.
- **CSV import.** At most :data:`MAX_UPLOAD` bytes and :data:`MAX_IMPORT_ROWS` rows of ``username,state`` (a
  header row, a UTF-8 byte-order mark, CRLF line ends and quoted cells are understood). The preview lists what will
  change, what already is so, unknown users and bad rows; its token carries the planned changes with each user's
  state at preview time. Applying re-checks every one of them first: if any user's state moved since the preview,
  nothing is applied.
- **Output.** Everything shown is escaped by Jinja's autoescape (usernames, reasons and user agents come from
  users and clients); the audit CSV export goes through :mod:`mfa_middleware.listing`, which guards cells against
  spreadsheet formulas, and is streamed page by page.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from itsdangerous import BadData, URLSafeSerializer
from rich.console import Console
from werkzeug.exceptions import NotFound, RequestEntityTooLarge
from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from ..config import USER_STATES
from ..listing import AUDIT_COLUMNS, stream
from ..primary.usernames import canonical_username
from ..services.accounts import AccountError
from ..services.devices import REMEMBERED
from ..services.usage import Usage, UsageError, month_of
from ..store.sql import UserFilter, UserRecord

if TYPE_CHECKING:
    from ..core.tokens import Session
    from .app import PageContext, PagesApp

log = logging.getLogger("mfa_middleware.pages.admin")

SALT_CONFIRM = "mfa_middleware.admin-confirm"
#: how long a confirmation page stays valid (seconds)
CONFIRM_TTL = 10 * 60
#: users per page of the list
PAGE_SIZE = 50
#: rows per page of the audit log and the fraud reports
LOG_PAGE = 50
#: the largest CSV upload, and the most rows it may have
MAX_UPLOAD = 512 * 1024
MAX_IMPORT_ROWS = 5000
#: the largest confirmation form (an import's plan travels in it)
MAX_CONFIRM_FORM = 2 * MAX_UPLOAD
STATE_VERBS = {"enabled": "Enable", "enforced": "Enforce", "disabled": "Disable"}



def rules() -> list[Rule]:
    """The portal's routes, for the pages app's URL map (new objects each time: a rule belongs to one map)."""
    return [Rule("/admin", endpoint="admin", defaults={"view": "users"}, methods=["GET"]),
            Rule("/admin/<view>", endpoint="admin", methods=["GET", "POST"])]


#: single-user actions: (title of the confirmation, what it does, button)
ACTIONS: dict[str, tuple[str, str, str]] = {
    "reset_mfa": ("Require re-registration", "Deletes every verification method of the user, puts them back to "
                  "'enabled' and ends their sessions: they set up a method at their next sign-in.",
                  "Require re-registration"),
    "revoke_sessions": ("Revoke MFA sessions", "Ends every session and sign-in in progress of the user, and forgets "
                        "their remembered devices. They sign in again with both factors.", "Revoke sessions"),
    "delete_app_passwords": ("Delete all app passwords", "Deletes every app password of the user: mail clients and "
                             "other devices that use one stop working until the user creates new ones.",
                             "Delete app passwords"),
    "forget_devices": ("Forget remembered devices", "The user's browsers ask for the second factor again at the "
                       "next sign-in.", "Forget devices"),
    "block": ("Block sign-in", "Refuses the user everywhere (sign-in, second factor, app passwords) and ends their "
              "sessions.", "Block"),
    "unblock": ("Unblock sign-in", "Lets the user sign in again.", "Unblock"),
    "unlock": ("Unlock", "Clears the failed sign-in attempts that locked the account.", "Unlock"),
    "bypass": ("One-time bypass", "The user's next sign-in skips the second factor once (for example after losing "
               "their phone). It expires unused after the duration given.", "Grant bypass"),
}

_QUIET = Console(file=io.StringIO(), force_terminal=False)


def utc(t: float | None) -> str:
    if not t:
        return "never"
    if t > 1e17:
        return "until unlocked"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _tri(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


def _utc_input(text: str) -> float | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` (UTC) from a filter field; None when empty; ValueError when bad."""
    text = text.strip()
    if not text:
        return None
    parsed = datetime.fromisoformat(text[:32])
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """What a CSV upload would do: changes ``(username, state now, new state)``, no-ops ``(username, state)``,
    unknown users ``(line, username)`` and bad rows ``(line, text, why)``."""

    changes: list[tuple[str, str, str]]
    unchanged: list[tuple[str, str]]
    unknown: list[tuple[int, str]]
    bad: list[tuple[int, str, str]]


def parse_import(data: bytes, lookup: Callable[[str], UserRecord | None]) -> ImportPlan:
    """Read an uploaded ``username,state`` file (see the module docstring) into a plan; changes nothing."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AccountError("The file is not UTF-8 text. Save it as CSV (UTF-8) and upload it again.") from None
    changes: list[tuple[str, str, str]] = []
    unchanged: list[tuple[str, str]] = []
    unknown: list[tuple[int, str]] = []
    bad: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    rows = 0
    try:
        for line, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if line == 1 and [c.lower() for c in cells[:2]] == ["username", "state"]:
                continue
            rows += 1
            if rows > MAX_IMPORT_ROWS:
                raise AccountError(f"The file has more than {MAX_IMPORT_ROWS:,} rows. Split it and upload each "
                                   "part.")
            shown = ",".join(cells)[:200]
            if len(cells) != 2:
                bad.append((line, shown, "expected two cells: username,state"))
                continue
            name, state = canonical_username(cells[0]), cells[1].lower()
            if name is None:
                bad.append((line, shown, "not a valid username"))
                continue
            if state not in USER_STATES:
                bad.append((line, shown, f"the state must be one of {', '.join(USER_STATES)}"))
                continue
            if name in seen:
                bad.append((line, shown, "this user is listed more than once"))
                continue
            seen.add(name)
            user = lookup(name)
            if user is None:
                unknown.append((line, name))
            elif user.state == state:
                unchanged.append((name, state))
            else:
                changes.append((name, user.state, state))
    except csv.Error as exc:
        raise AccountError(f"The file is not valid CSV ({exc}).") from None
    return ImportPlan(changes, unchanged, unknown, bad)


class Portal:
    """One request to the admin portal (built by :func:`dispatch` after the access checks)."""

    def __init__(self, pages: PagesApp, ctx: PageContext, session: Session, admin: UserRecord) -> None:
        self.pages, self.ctx, self.session, self.admin = pages, ctx, session, admin
        self.rt = pages.rt
        self.base = pages.prefix + "/admin"
        self.actor = f"admin:{admin.username}"
        self.csrf = self.rt.codec.make_csrf(session.sid)
        self.confirmer = URLSafeSerializer(list(self.rt.config.secret_keys), salt=SALT_CONFIRM,
                                           signer_kwargs={"digest_method": hashlib.sha256})

    # -- helpers ---------------------------------------------------------------------------------------------
    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        return self.pages.render(self.ctx, template, status=status, admin=self.admin, admin_base=self.base,
                                 csrf=self.csrf, utc=utc, **values)

    def message(self, title: str, message: str, status: int, link: str, link_text: str) -> Response:
        return self.pages.render(self.ctx, "message.html", status=status, title=title, message=message, link=link,
                                 link_text=link_text)

    def audit(self, result: str, *, username: str | None = None, **detail: Any) -> None:
        self.rt.audit.write("admin", result, now=self.ctx.now, actor=self.actor, username=username,
                            client_ip=self.ctx.client.ip, user_agent=self.ctx.client.user_agent, **detail)

    def fresh(self) -> bool:
        return self.pages.fresh_mfa(self.session, self.ctx.now)

    def verify_again(self, back: str) -> Response:
        return self.message("Verify again first",
                            "Changes in the admin portal need a second factor from the last few minutes. "
                            "Nothing was changed. Verify again, then repeat the change.", 403,
                            self.pages.url("step-up?fresh=1&next=" + quote(back, safe="/")), "Verify again")

    def form(self, name: str, limit: int = 300) -> str:
        return self.ctx.request.form.get(name, "")[:limit]

    def user_url(self, username: str) -> str:
        return f"{self.base}/user?name={quote(username, safe='')}"

    def sign(self, op: str, users: list[str], params: dict[str, Any]) -> str:
        return str(self.confirmer.dumps({"a": self.admin.username, "s": self.session.sid, "op": op, "u": users,
                                         "p": params, "t": self.ctx.now}))

    def unsign(self, token: str) -> dict[str, Any] | None:
        try:
            data = self.confirmer.loads(token)
        except (BadData, ValueError, TypeError, UnicodeError):
            return None
        if (not isinstance(data, dict) or data.get("a") != self.admin.username or data.get("s") != self.session.sid
                or not isinstance(data.get("t"), (int, float)) or not isinstance(data.get("u"), list)
                or not isinstance(data.get("p"), dict) or not isinstance(data.get("op"), str)):
            return None
        if not -60 <= self.ctx.now - float(data["t"]) <= CONFIRM_TTL:
            return None
        return data

    def confirm_page(self, op: str, users: list[str], params: dict[str, Any], *, title: str, what: str,
                     button: str, back: str, rows: list[tuple[str, str]] | None = None) -> Response:
        if not self.fresh():
            return self.verify_again(back)
        return self.render("admin_confirm.html", title=title, what=what, button=button, back=back, users=users,
                           rows=rows, params=params, token=self.sign(op, users, params))

    # -- users -----------------------------------------------------------------------------------------------
    def filters(self) -> tuple[UserFilter, dict[str, str]]:
        args = self.ctx.request.args
        raw = {k: args.get(k, "").strip()[:128] for k in ("q", "group", "state", "blocked", "locked", "method")}
        if raw["state"] not in USER_STATES:
            raw["state"] = ""
        if raw["method"] not in {f.kind for f in self.rt.factors}:
            raw["method"] = ""
        for key in ("blocked", "locked"):
            if raw[key] not in ("yes", "no"):
                raw[key] = ""
        return UserFilter(search=raw["q"] or None, group=raw["group"].lower() or None, state=raw["state"] or None,
                          blocked=_tri(raw["blocked"]), locked=_tri(raw["locked"]),
                          method=raw["method"] or None), raw

    def view_users(self, notice: str | None = None, error: str | None = None, status: int = 200) -> Response:
        filters, raw = self.filters()
        args = self.ctx.request.args
        after, before = args.get("after", "")[:128] or None, args.get("before", "")[:128] or None
        last = args.get("last") == "1" and after is None and before is None
        now = self.ctx.now
        if before is not None or last:
            rows = self.rt.store.page_users(filters, before=before, last=last, limit=PAGE_SIZE + 1, now=now)
            has_prev, has_next = len(rows) > PAGE_SIZE, before is not None
            rows = rows[-PAGE_SIZE:]
        else:
            rows = self.rt.store.page_users(filters, after=after, limit=PAGE_SIZE + 1, now=now)
            has_prev, has_next = after is not None, len(rows) > PAGE_SIZE
            rows = rows[:PAGE_SIZE]
        total = self.rt.store.count_users_matching(filters, now=now)
        keep = {k: v for k, v in raw.items() if v}

        def link(**extra: str) -> str:
            return self.base + "?" + urlencode({**keep, **extra}) if keep or extra else self.base

        return self.render("admin_users.html", status=status, title="Users", rows=rows, total=total, raw=raw,
                           filtered=bool(keep), now=now, states=USER_STATES, notice=notice, error=error,
                           methods=[(f.kind, f.label) for f in self.rt.factors],
                           first=link() if has_prev else None, last=link(last="1") if has_next else None,
                           prev=link(before=rows[0][0].username) if has_prev and rows else None,
                           next=link(after=rows[-1][0].username) if has_next and rows else None,
                           here=self.ctx.request.full_path.rstrip("?"))

    def view_bulk(self) -> Response:
        """POST from the list: the selected users and the state to give them -> confirmation."""
        if self.ctx.request.method != "POST":
            return self.pages.redirect(self.base)
        if not self.pages.csrf_ok(self.ctx, self.session.sid):
            return self.pages.csrf_refused(self.ctx)
        state = self.form("state", 16)
        names = list(dict.fromkeys(n for raw in self.ctx.request.form.getlist("user")[:PAGE_SIZE * 4]
                                   if (n := canonical_username(raw[:128])) is not None))
        if state not in USER_STATES:
            return self.view_users(error="Choose what to do with the selected users.", status=400)
        if not names:
            return self.view_users(error="Select at least one user (tick the boxes in the list).", status=400)
        return self.confirm_page("state", names, {"state": state}, title=f"{STATE_VERBS[state]} {len(names)} user(s)",
                                 what=f"These users' MFA state becomes '{state}'.", button=STATE_VERBS[state],
                                 back=self.base)

    def view_user(self, error: str | None = None, status: int = 200, name: str | None = None) -> Response:
        name = name or self.ctx.request.args.get("name", "")[:300]
        user = self.rt.store.get_user(canonical_username(name) or name)
        if user is None:
            return self.message("No such user", "There is no user with that name. It may have been deleted.", 404,
                                self.base, "Back to users")
        store, now = self.rt.store, self.ctx.now
        labels = {f.kind: f.label for f in self.rt.factors}
        last = store.list_audit(username=user.username, event="primary", result="success", limit=1)
        done = {"1": "Done."}.get(self.ctx.request.args.get("done", ""))
        return self.render("admin_user.html", status=status, title=f"User {user.username}", user=user,
                           methods=[(labels.get(m.kind, m.kind), m) for m in store.list_methods(user.id)],
                           app_passwords=len(store.list_app_passwords(user.id)),
                           devices=store.list_devices(user.id, now=now), last_sign_in=last[0] if last else None,
                           locked=user.locked(now), blocked=user.blocked(now),
                           bypass=user.bypass_until is not None and user.bypass_until > now,
                           actions=ACTIONS, error=error, notice=done, fresh=self.fresh(),
                           verify_again=self.pages.url("step-up?fresh=1&next=" + quote(self.user_url(user.username),
                                                                                       safe="/")))

    def view_action(self) -> Response:
        """POST from a user's page: validate, then the confirmation page."""
        if self.ctx.request.method != "POST":
            return self.pages.redirect(self.base)
        if not self.pages.csrf_ok(self.ctx, self.session.sid):
            return self.pages.csrf_refused(self.ctx)
        action, name = self.form("action", 32), self.form("name", 128)
        user = self.rt.store.get_user(name)
        if user is None:
            return self.message("No such user", "There is no user with that name. It may have been deleted.", 404,
                                self.base, "Back to users")
        if action not in ACTIONS:
            return self.view_user(error="Unknown action.", status=400, name=user.username)
        params: dict[str, Any] = {}
        if action in ("block", "bypass"):
            reason = " ".join(self.form("reason", 600).split())
            if not reason:
                return self.view_user(error="Give a reason (it is kept in the audit log).", status=400,
                                      name=user.username)
            if len(reason) > 300:
                return self.view_user(error="Keep the reason under 300 characters.", status=400, name=user.username)
            params["reason"] = reason
            field, low, high, unit = (("days", 1, 3650, "days") if action == "block" else
                                      ("minutes", 1, 1440, "minutes"))
            raw = self.form(field, 8).strip()
            if not raw.isdigit() or not low <= int(raw) <= high:
                return self.view_user(error=f"Enter a duration between {low} and {high} {unit}.", status=400,
                                      name=user.username)
            params[field] = int(raw)
        title, what, button = ACTIONS[action]
        detail: list[tuple[str, str]] = [("Reason", str(params["reason"]))] if "reason" in params else []
        if "days" in params:
            detail.append(("For", f"{params['days']} day(s)"))
        if "minutes" in params:
            detail.append(("Expires unused after", f"{params['minutes']} minute(s)"))
        return self.confirm_page(action, [user.username], params, title=f"{title}: {user.username}", what=what,
                                 button=button, back=self.user_url(user.username), rows=detail)

    # -- import ----------------------------------------------------------------------------------------------
    def view_import(self) -> Response:
        request = self.ctx.request
        if request.method != "POST":
            if not self.fresh():
                return self.verify_again(self.base + "/import")
            return self.render("admin_import.html", title="Bulk update from a file", plan=None, limit=MAX_UPLOAD,
                               rows_limit=MAX_IMPORT_ROWS)
        # werkzeug buffers multipart input in chunks up to max_form_memory_size: both limits follow the upload's
        request.max_content_length = request.max_form_memory_size = MAX_UPLOAD + 16 * 1024
        if not self.pages.csrf_ok(self.ctx, self.session.sid):
            return self.pages.csrf_refused(self.ctx)
        if not self.fresh():
            return self.verify_again(self.base + "/import")
        upload = request.files.get("file")
        try:
            data = upload.read(MAX_UPLOAD + 1) if upload is not None else b""
        finally:
            for each in request.files.values():
                each.close()
        if len(data) > MAX_UPLOAD:
            raise RequestEntityTooLarge()

        def again(message: str, status: int) -> Response:
            return self.render("admin_import.html", status=status, title="Bulk update from a file", plan=None,
                               limit=MAX_UPLOAD, rows_limit=MAX_IMPORT_ROWS, error=message)

        if not data.strip():
            return again("Choose a CSV file with a username and a state on each line.", 400)
        try:
            plan = parse_import(data, self.rt.store.get_user)
        except AccountError as exc:
            return again(str(exc), 400)
        token = self.sign("import", [c[0] for c in plan.changes], {"plan": plan.changes}) if plan.changes else None
        return self.render("admin_import.html", title="Preview of the bulk update", plan=plan, token=token,
                           limit=MAX_UPLOAD, rows_limit=MAX_IMPORT_ROWS)

    # -- applying ----------------------------------------------------------------------------------------------
    def view_confirm(self) -> Response:
        request = self.ctx.request
        if request.method != "POST":
            return self.pages.redirect(self.base)
        request.max_content_length = MAX_CONFIRM_FORM
        request.max_form_memory_size = MAX_CONFIRM_FORM
        if not self.pages.csrf_ok(self.ctx, self.session.sid):
            return self.pages.csrf_refused(self.ctx)
        if not self.fresh():
            return self.verify_again(self.base)
        data = self.unsign(request.form.get("token", ""))
        if data is None:
            self.audit("refused", reason="confirmation")
            return self.message("Confirmation not valid", "This confirmation has expired, was made for another "
                                "session or administrator, or was changed. Nothing was changed. Start the change "
                                "again.", 403, self.base, "Back to users")
        op, users, params = data["op"], [str(u) for u in data["u"]], data["p"]
        if op == "state":
            return self.apply_states([(u, None, str(params.get("state"))) for u in users], summary="bulk_state")
        if op == "import":
            plan = params.get("plan")
            if not isinstance(plan, list) or not all(isinstance(p, list) and len(p) == 3 for p in plan):
                return self.message("Confirmation not valid", "Nothing was changed.", 403, self.base, "Back")
            return self.apply_states([(str(a), str(b), str(c)) for a, b, c in plan], summary="import")
        if op in ACTIONS and len(users) == 1:
            return self.apply_action(op, users[0], params)
        return self.message("Confirmation not valid", "Nothing was changed.", 403, self.base, "Back to users")

    def apply_states(self, changes: list[tuple[str, str | None, str]], *, summary: str) -> Response:
        if any(state not in USER_STATES for _, _, state in changes):
            return self.message("Confirmation not valid", "Nothing was changed.", 403, self.base, "Back to users")
        if summary == "import":
            # The preview is bound to the states it saw: if any moved since, apply nothing.
            moved = [name for name, before, _ in changes
                     if (u := self.rt.store.get_user(name)) is None or u.state != before]
            if moved:
                self.audit("refused", reason="stale_preview", count=len(moved))
                return self.message("The users changed since the preview",
                                    f"{len(moved)} user(s) in the file changed or were deleted after the preview "
                                    f"(for example {moved[0]}). Nothing was applied. Upload the file again to see "
                                    "what it would change now.", 409, self.base + "/import", "Upload again")
        done: list[str] = []
        failed: list[tuple[str, str]] = []
        for name, _, state in changes:
            try:
                self.rt.accounts.set_state(name, state, actor=self.actor)
                done.append(name)
            except AccountError as exc:
                failed.append((name, str(exc)))
        self.audit(summary, count=len(done), state=changes[0][2] if summary == "bulk_state" and changes else None)
        return self.render("admin_done.html", title="Changes applied", done=done, failed=failed,
                           summary=f"{len(done)} user(s) changed.")

    def apply_action(self, op: str, name: str, params: dict[str, Any]) -> Response:
        rt, now, who = self.rt, self.ctx.now, {"client_ip": self.ctx.client.ip,
                                               "user_agent": self.ctx.client.user_agent}
        try:
            user = rt.accounts.get(name)
            if op == "reset_mfa":
                n = rt.accounts.reset_mfa(name, actor=self.actor)
                text = f"{n} method(s) deleted; {name} sets up a method at the next sign-in."
            elif op == "revoke_sessions":
                rt.accounts.revoke_sessions(name, actor=self.actor)
                text = f"Every session of {name} has ended."
            elif op == "delete_app_passwords":
                n = rt.app_passwords.revoke(user, None, actor=self.actor, **who)
                text = f"{n} app password(s) of {name} deleted."
            elif op == "forget_devices":
                n = rt.devices.forget_all(user, actor=self.actor, now=now, reason="admin", **who)
                text = f"{n} remembered device(s) of {name} forgotten."
            elif op == "block":
                rt.accounts.block(name, actor=self.actor, reason=str(params["reason"]), days=int(params["days"]))
                text = f"{name} is blocked for {int(params['days'])} day(s)."
            elif op == "unblock":
                rt.accounts.unblock(name, actor=self.actor)
                text = f"{name} can sign in again."
            elif op == "unlock":
                rt.accounts.unlock(name, actor=self.actor)
                text = f"{name} is unlocked."
            else:  # bypass
                until = rt.accounts.bypass(name, actor=self.actor, seconds=int(params["minutes"]) * 60,
                                           reason=str(params["reason"]))
                text = f"{name}'s next sign-in skips the second factor once (unused, it expires {utc(until)})."
        except (AccountError, KeyError, ValueError, TypeError) as exc:
            log.warning("admin action %s on %s failed: %s", op, name, exc)
            return self.message("Not changed", "The change could not be made: the user may have been deleted. "
                                "Nothing was changed.", 409, self.base, "Back to users")
        rt.revocations.refresh(now)
        return self.render("admin_done.html", title="Change applied", done=[name], failed=[], summary=text,
                           user_link=self.user_url(name))

    # -- logs and reports --------------------------------------------------------------------------------------
    def view_fraud(self) -> Response:
        raw = self.ctx.request.args.get("before", "")
        before = int(raw) if raw.isdigit() and len(raw) < 15 else None
        reports = self.rt.store.list_fraud_reports(limit=LOG_PAGE + 1, before_id=before)
        more = len(reports) > LOG_PAGE
        reports = reports[:LOG_PAGE]
        return self.render("admin_fraud.html", title="Fraud reports", reports=reports, now=self.ctx.now,
                           next=f"{self.base}/fraud?before={reports[-1].id}" if more else None,
                           first=f"{self.base}/fraud" if before is not None else None)

    def audit_filters(self) -> tuple[dict[str, Any], dict[str, str], str | None]:
        args = self.ctx.request.args
        raw = {k: args.get(k, "").strip()[:64] for k in ("user", "event", "result", "since", "until")}
        error = None
        try:
            since, until = _utc_input(raw["since"]), _utc_input(raw["until"])
        except ValueError:
            since = until = None
            error = "Write times as 2026-11-30 or 2026-11-30T08:00 (UTC)."
        query = {"username": raw["user"].lower() or None, "event": raw["event"] or None,
                 "result": raw["result"] or None, "since": since, "until": until}
        return query, raw, error

    def view_audit(self) -> Response:
        query, raw, error = self.audit_filters()
        keep = {k: v for k, v in raw.items() if v}
        if self.ctx.request.args.get("format") == "csv":
            return self.audit_csv(query)
        b = self.ctx.request.args.get("before", "")
        before = int(b) if b.isdigit() and len(b) < 15 else None
        rows = self.rt.store.list_audit(limit=LOG_PAGE + 1, before_id=before, **query)
        more = len(rows) > LOG_PAGE
        rows = rows[:LOG_PAGE]
        return self.render("admin_audit.html", status=400 if error else 200, title="Audit log", rows=rows, raw=raw,
                           error=error,
                           next=self.base + "/audit?" + urlencode({**keep, "before": rows[-1].id}) if more else None,
                           first=self.base + "/audit?" + urlencode(keep) if before is not None else None,
                           export=self.base + "/audit?" + urlencode({**keep, "format": "csv"}))

    def audit_csv(self, query: dict[str, Any]) -> Response:
        """Every matching event, newest first, streamed as CSV one page of the store at a time."""
        store = self.rt.store
        self.audit("audit_export")

        def chunks() -> Iterator[bytes]:
            before: int | None = None
            first = True
            while True:
                page = store.list_audit(limit=1000, before_id=before, **query)
                buffer = io.StringIO()
                stream(page, AUDIT_COLUMNS, "csv", buffer, err=_QUIET)
                text = buffer.getvalue()
                yield (text if first else text.split("\n", 1)[1]).encode("utf-8")
                first = False
                if len(page) < 1000:
                    return
                before = page[-1].id

        stamp = datetime.fromtimestamp(self.ctx.now, UTC).strftime("%Y%m%dT%H%M%SZ")
        return Response(chunks(), content_type="text/csv; charset=utf-8", direct_passthrough=True,
                        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'})

    def view_usage(self) -> Response:
        month = self.ctx.request.args.get("month", "")[:16] or month_of(self.ctx.now)
        try:
            report = Usage(self.rt.store).month(month)
        except UsageError as exc:
            return self.render("admin_usage.html", status=400, title="Usage", report=None, month=month,
                               error=str(exc))
        return self.render("admin_usage.html", title="Usage", report=report, month=report.month, error=None)


VIEWS: dict[str, Callable[[Portal], Response]] = {
    "users": Portal.view_users, "bulk": Portal.view_bulk, "user": Portal.view_user, "action": Portal.view_action,
    "import": Portal.view_import, "confirm": Portal.view_confirm, "fraud": Portal.view_fraud,
    "audit": Portal.view_audit, "usage": Portal.view_usage,
}
STATIC = {"admin.css": "text/css; charset=utf-8", "admin.js": "text/javascript; charset=utf-8"}


def static(name: str) -> Response:
    from importlib.resources import files

    data = files("mfa_middleware.pages").joinpath("static", name).read_bytes()
    response = Response(data, content_type=STATIC[name])
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


def refuse(pages: PagesApp, ctx: PageContext, session: Session, reason: str) -> Response:
    """A page that says why the portal is closed to this session, with a way on; and an audit row."""
    pages.rt.audit.write("admin", "refused", now=ctx.now, actor=session.username, username=session.username,
                         client_ip=ctx.client.ip, user_agent=ctx.client.user_agent, reason=reason)
    here = pages.prefix + "/admin"
    if reason == "not_admin":
        return pages.render(ctx, "message.html", status=403, title="This page is for administrators",
                            message=f"You are signed in as {session.username}, who is not an administrator of this "
                                    "site. If you need access, ask your helpdesk. You can manage your own sign-in "
                                    "methods on your security info page.",
                            link=pages.url(""), link_text="Go to security info")
    if reason == "bypass":
        return pages.render(ctx, "message.html", status=403, title="Sign in with your verification method",
                            message="This session was opened with a one-time bypass of the second factor, which "
                                    "does not open the admin portal. Sign out, then sign in again with your own "
                                    "verification method.",
                            link=pages.url("logout"), link_text="Sign out")
    return pages.render(ctx, "message.html", status=403, title="Verify with your second factor",
                        message="The admin portal needs a second factor from this sign-in"
                                + (": a remembered device is not enough." if reason == "remembered_device" else ".")
                                + " Verify now to continue.",
                        link=pages.url("step-up?fresh=1&next=" + quote(here, safe="/")), link_text="Verify now")


def dispatch(pages: PagesApp, ctx: PageContext, view: str) -> Response:
    """Route one admin request after the access checks (module docstring, "Who gets in")."""
    if view in STATIC and ctx.request.method == "GET":
        return static(view)
    handler = VIEWS.get(view)
    if handler is None:
        raise NotFound()
    session = pages.session(ctx)
    target = ctx.request.full_path.rstrip("?") if ctx.request.method == "GET" else pages.prefix + "/admin"
    if session is None:
        return pages.redirect(pages.url("login", target))
    user = pages.rt.store.get_user(session.username)
    if user is None:
        return pages.redirect(pages.url("login", target))
    if not user.is_admin:
        return refuse(pages, ctx, session, "not_admin")
    if "bypass" in session.methods:
        return refuse(pages, ctx, session, "bypass")
    if session.level < 2 or session.exempt or session.mfa_at is None:
        return refuse(pages, ctx, session, "no_second_factor")
    if REMEMBERED in session.methods:
        return refuse(pages, ctx, session, "remembered_device")
    return handler(Portal(pages, ctx, session, user))


def is_admin_target(prefix: str, target: str) -> bool:
    """Whether ``target`` (a local path with its query) is an admin portal page a sign-in may come back to: GET
    pages of the portal change nothing."""
    path = target.split("?", 1)[0]
    return path == prefix + "/admin" or path.startswith(prefix + "/admin/")


__all__ = ["MAX_IMPORT_ROWS", "MAX_UPLOAD", "PAGE_SIZE", "ImportPlan", "dispatch", "is_admin_target",
           "parse_import", "rules"]
