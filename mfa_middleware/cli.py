"""Command line: ``mfa-admin`` (operators and helpdesk) and ``mfa-middleware`` (demo and utilities)."""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .config import KNOWN_METHODS, USER_STATES, Config, ConfigError, load_config
from .listing import AUDIT_COLUMNS, FORMATS, TABLE_LIMIT, Column, iso, local_time, paged, stream, table_page
from .secretbox import SecretBox

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)


def _fmt_time(t: float | None) -> str:
    if not t:
        return "-"
    if t > 1e17:
        return "until unlocked"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _actor() -> str:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"cli:{who}"


STARTER_CONFIG = '''\
# mfa_middleware configuration. Durations: "45s", "30m", "12h", "7d". Secrets may be written inline or as
# "env:NAME" to read them from the environment. Unknown keys are errors.

# Keys that sign session cookies. The LAST key signs; all of them verify. To rotate, append a new key, and
# remove the old one after the absolute session timeout has passed.
secret_keys = ["{secret_key}"]

# Encrypts TOTP seeds at rest. The FIRST key encrypts; all of them decrypt. Keep it outside the database
# backups, e.g. encryption_key = "env:MFA_ENCRYPTION_KEY".
encryption_key = "{encryption_key}"

# SQLAlchemy URL. A relative SQLite path is relative to this file. For several app servers sharing one user
# base: "postgresql+psycopg://user:password@dbhost/mfa" (pip install "mfa-middleware[postgresql]").
database = "{database}"

# What applies to a path no rule matches: bypass, one_factor, two_factor or deny.
default_policy = "deny"

# The sign-in pages live under this prefix; it is reserved and never reaches the app.
# prefix = "/_mfa"
# site_name = "Contoso sign-in"

# Addresses (or networks) of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto headers are believed.
# Tell the server too: waitress deletes these headers otherwise (README, "Behind a proxy").
# trusted_proxies = ["127.0.0.1"]

[session]
absolute_timeout = "12h"      # a session ends this long after sign-in, whatever happens
inactivity_timeout = "30m"    # ... or after this long without a request
# refresh_after = "1m"        # how often the cookie's last-seen time is renewed
# cookie_secure = "auto"      # auto: Secure (and __Host- prefix) on HTTPS; "always"; "never"
# revocation_interval = "5s"  # how soon a logout or revocation reaches every process

[primary]
# forms: username and password against this store. remote_user: Windows authentication done by the server
# (IIS, Apache); trusted only when listed here.
methods = ["forms"]
# remote_user_strip_domain = true     # CORP\\alice and alice@corp.example both become alice
# remote_user_domains = ["corp"]      # accept only these domains

[lockout]
max_failures = 10      # failed passwords or codes in a row before the account is paused (at most 100)
reset_after = "15m"    # the counter starts again after this long without a failure
lock_for = "15m"       # how long the pause lasts

[totp]
issuer = "{issuer}"    # the name shown in the authenticator app

[methods.push]
# Web Push for browser authenticators (RFC 8292 VAPID): the site's P-256 key, kept secret like the keys above
# (or "env:NAME"), and a contact that push services may use when something goes wrong.
vapid_private_key = "{vapid_private_key}"
vapid_subject = "mailto:admin@example.com"   # change to a real address (or an https:// contact page)
# Hosts a device's push channel may point to (exact names or "*.suffix"); the default lists the big browsers'
# Web Push services. Add the host of a webhook (ntfy, UnifiedPush) service your users use.
# channel_hosts = ["fcm.googleapis.com", "*.push.services.mozilla.com", "*.push.apple.com", "*.notify.windows.com"]
# send_timeout = "10s"

# Rules: the first rule whose path (glob, or path_regex) and methods match decides.
# policy: bypass | one_factor | two_factor | deny. users/groups: who may pass (others get 403).
[[rules]]
path = "/public/*"
policy = "bypass"

[[rules]]
path = "/admin/*"
policy = "two_factor"
groups = ["admins"]

[[rules]]
path = "/*"
policy = "two_factor"
'''


def new_vapid_private_key() -> str:
    """A fresh VAPID key (RFC 8292): base64url of the raw 32-byte P-256 private key."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec

    number = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode("ascii")


def write_starter_config(path: Path, *, database: str, issuer: str = "mfa_middleware") -> None:
    text = STARTER_CONFIG.format(secret_key=secrets.token_urlsafe(48), encryption_key=SecretBox.generate_key(),
                                 database=database, issuer=issuer, vapid_private_key=new_vapid_private_key())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


class _State:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._runtime: Any = None

    def config(self) -> Config:
        if not self.config_path:
            raise click.UsageError("no configuration: pass --config PATH or set MFA_CONFIG "
                                   "(create one with `mfa-admin init mfa.toml`)")
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None

    def runtime(self) -> Any:
        if self._runtime is None:
            from .runtime import Runtime

            rt = Runtime(self.config())
            click.get_current_context().call_on_close(rt.close)
            with _errors():
                rt.store.check_schema()
            self._runtime = rt
        return self._runtime


@contextmanager
def _errors() -> Iterator[None]:
    from .services.accounts import AccountError
    from .store import SchemaOutOfDate, StoreUnavailable

    try:
        yield
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    except StoreUnavailable as exc:
        raise click.ClickException(f"{exc}; check the `database` setting and that the server is running") from None
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="MFA_CONFIG", type=click.Path(dir_okay=False),
              help="Configuration file (or set MFA_CONFIG).")
@click.pass_context
def admin(ctx: click.Context, config_path: str | None) -> None:
    """Administer mfa_middleware users and the store."""
    ctx.obj = _State(config_path)


@admin.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--database", default="sqlite:///mfa.db", show_default=True, help="SQLAlchemy URL of the store.")
@click.option("--issuer", default="mfa_middleware", show_default=True, help="Name shown in authenticator apps.")
def init(path: str, database: str, issuer: str) -> None:
    """Write a commented starter configuration with freshly generated keys."""
    target = Path(path)
    if target.exists():
        raise click.ClickException(f"{target} already exists; choose another path or remove it first")
    try:
        write_starter_config(target, database=database, issuer=issuer)
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror}") from None
    console.print(f"Wrote [bold]{target}[/] (mode 600). Next: [bold]mfa-admin --config {target} db upgrade[/]")


@admin.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(state: _State) -> None:
    """Create or migrate the store's tables to this version."""
    from .store import Store

    config = state.config()
    store = Store(config.database)
    try:
        with _errors(), console.status("Migrating the store..."):
            store.upgrade()
            current, _head = store.schema_revision()
    finally:
        store.close()
    console.print(f"Store is at schema revision [bold]{current}[/] ({_redact(config.database)}).")


@db.command("status")
@click.pass_obj
def db_status(state: _State) -> None:
    """Show the schema revision of the store."""
    from .store import Store

    config = state.config()
    store = Store(config.database)
    try:
        with _errors():
            current, head = store.schema_revision()
    finally:
        store.close()
    mark = "up to date" if current == head else "out of date: run `mfa-admin db upgrade`"
    console.print(f"Schema revision {current or 'none'} (newest {head}): {mark}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


@admin.group()
def user() -> None:
    """Users: add, list, show, change state, reset, revoke, delete."""


def _read_password(password_stdin: bool, no_password: bool, confirm: bool = True) -> str | None:
    if no_password:
        return None
    if password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise click.ClickException("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise click.ClickException("standard input is not a terminal: use --password-stdin to pipe the password, "
                                   "or --no-password for a Windows-only account")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=confirm))


@user.command("add")
@click.argument("name")
@click.option("--email", help="Email address.")
@click.option("--name", "display_name", help="Display name.")
@click.option("--groups", default="", help="Comma-separated groups, e.g. admins,finance.")
@click.option("--admin", "is_admin", is_flag=True, help="Administrator account.")
@click.option("--state", "user_state", type=click.Choice(USER_STATES), default="enabled", show_default=True,
              help="disabled: no MFA; enabled: enroll at next sign-in; enforced: MFA every sign-in.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--no-password", is_flag=True, help="No local password (Windows sign-in only).")
@click.pass_obj
def user_add(state: _State, name: str, email: str | None, display_name: str | None, groups: str, is_admin: bool,
             user_state: str, password_stdin: bool, no_password: bool) -> None:
    """Add a user (new users are `enabled`: they set up MFA at their next sign-in)."""
    password = _read_password(password_stdin, no_password)
    rt = state.runtime()
    with _errors():
        record = rt.accounts.add(name, actor=_actor(), password=password, email=email, display_name=display_name,
                                 groups=groups, is_admin=is_admin, state=user_state)
    console.print(f"Added [bold]{record.username}[/] ({record.state}).")


def _listing_options(default_format: str = "table", formats: tuple[str, ...] = FORMATS) -> Callable[[F], F]:
    """--limit and --format, shared by every listing command."""
    def wrap(f: F) -> F:
        f = click.option("--format", "fmt", type=click.Choice(formats), default=default_format, show_default=True,
                         help="table: one page for people; csv/json: every matching row, streamed.")(f)
        return click.option("--limit", type=click.IntRange(1, None),
                            help=f"At most this many rows (tables: {TABLE_LIMIT} unless given; csv/json: all).")(f)
    return wrap


def _next_page(command: str, options: dict[str, Any], key_option: str, key: object) -> str:
    words = [command]
    for name, value in options.items():
        if value is None or value is False:
            continue
        words.append(f"--{name}" if value is True else f"--{name} {shlex.quote(str(value))}")
    words.append(f"{key_option} {shlex.quote(str(key))}")
    return " ".join(words)


def _out() -> Any:
    return sys.stdout


_USER_COLUMNS: tuple[Column[tuple[Any, int]], ...] = (
    Column("Username", lambda r: r[0].username),
    Column("State", lambda r: r[0].state),
    Column("Email", lambda r: r[0].email),
    Column("Groups", lambda r: r[0].groups, "list"),
    Column("Admin", lambda r: r[0].is_admin, "bool"),
    Column("Methods", lambda r: r[1], "count"),
    Column("Locked until", lambda r: r[0].locked_until if r[0].locked(time.time()) else None, "time"),
    Column("Blocked until", lambda r: r[0].blocked_until if r[0].blocked(time.time()) else None, "time"),
    Column("Created", lambda r: r[0].created_at, "time"),
)


@user.command("list")
@click.option("--search", help="Part of the username, email or display name (any case).")
@click.option("--state", "user_state", type=click.Choice(USER_STATES), help="Only users in this MFA state.")
@click.option("--group", help="Only members of this group.")
@click.option("--method", type=click.Choice(KNOWN_METHODS), help="Only users with this method set up.")
@click.option("--blocked/--not-blocked", default=None, help="Only (or never) users blocked now.")
@click.option("--locked/--not-locked", default=None, help="Only (or never) users locked out now.")
@click.option("--after", help="Start after this username (the last one of the previous page).")
@_listing_options()
@click.pass_obj
def user_list(state: _State, search: str | None, user_state: str | None, group: str | None, method: str | None,
              blocked: bool | None, locked: bool | None, after: str | None, limit: int | None, fmt: str) -> None:
    """List users, filtered and paged (a table), or every match streamed as CSV or JSON."""
    from .store.sql import UserFilter

    rt = state.runtime()
    filters = UserFilter(search=search or None, state=user_state, group=group or None, blocked=blocked,
                         locked=locked, method=method)
    now = time.time()
    first_after = after

    def fetch(key: str | None, n: int) -> list[tuple[Any, int]]:
        return list(rt.store.page_users(filters, after=key if key is not None else first_after, limit=n, now=now))

    with _errors():
        if fmt != "table":
            stream(paged(fetch, lambda r: r[0].username, limit=limit), _USER_COLUMNS, fmt, _out(), err=err_console,
                   what="users")
            return
        page = limit or TABLE_LIMIT
        total = rt.store.count_users_matching(filters, now=now)
        options = {"search": search, "state": user_state, "group": group, "method": method,
                   "blocked" if blocked else "not-blocked": blocked is not None or None,
                   "locked" if locked else "not-locked": locked is not None or None, "limit": limit}
        table_page(paged(fetch, lambda r: r[0].username, limit=page + 1, batch=page + 1), _USER_COLUMNS, page,
                   console, title=f"{total:,} user(s)" + (" match" if filters != UserFilter() else ""),
                   next_hint=lambda r: _next_page("mfa-admin user list", options, "--after", r[0].username),
                   empty="No user matches." if filters != UserFilter() or after else "No users yet: add one with "
                   "`mfa-admin user add NAME`.")


@user.command("show")
@click.argument("name")
@click.pass_obj
def user_show(state: _State, name: str) -> None:
    """Show one user, their methods and recent audit events."""
    rt = state.runtime()
    with _errors():
        u = rt.accounts.get(name)
        methods = rt.store.list_methods(u.id)
        events = rt.store.list_audit(username=u.username, limit=10)
    now = time.time()
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("Username", u.username)
    info.add_row("Display name", u.display_name or "-")
    info.add_row("Email", u.email or "-")
    info.add_row("State", u.state)
    info.add_row("Groups", ", ".join(u.groups) or "-")
    info.add_row("Admin", "yes" if u.is_admin else "no")
    info.add_row("Local password", "set" if u.password_hash else "none (Windows sign-in only)")
    info.add_row("Failed attempts", str(u.consecutive_failures))
    info.add_row("Locked", _fmt_time(u.locked_until) if u.locked(now) else "no")
    info.add_row("Created", _fmt_time(u.created_at))
    console.print(info)
    mt = Table(title="Methods", header_style="bold")
    for col in ("Kind", "Label", "Added", "Last used"):
        mt.add_column(col)
    for m in methods:
        mt.add_row(m.kind, m.label, _fmt_time(m.created_at), _fmt_time(m.last_used_at))
    console.print(mt)
    at = Table(title="Recent events", header_style="bold")
    for col in ("Time", "Event", "Result", "Actor", "Client"):
        at.add_column(col)
    for e in events:
        at.add_row(_fmt_time(e.at), e.event, e.result, e.actor, e.client_ip or "-")
    console.print(at)


@user.command("set-state")
@click.argument("args", nargs=-1, metavar="[NAME] STATE")
@click.option("--file", "names_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Set the state of every user named in this file (one per line; '-' for standard input).")
@click.pass_obj
def user_set_state(state: _State, args: tuple[str, ...], names_file: str | None) -> None:
    """Set the MFA state of one user (NAME STATE) or many (--file FILE STATE): disabled, enabled or enforced."""

    from .services.accounts import AccountError

    if names_file is None and len(args) != 2:
        raise click.UsageError("give either NAME or --file FILE: `set-state NAME STATE` or `set-state --file FILE "
                               "STATE`")
    if names_file is not None and len(args) != 1:
        raise click.UsageError("give either NAME or --file FILE, not both: `set-state --file FILE STATE`")
    new_state = args[-1]
    if new_state not in USER_STATES:
        raise click.BadParameter(f"{new_state!r} is not one of {', '.join(USER_STATES)}", param_hint="STATE")
    rt = state.runtime()
    if names_file is None:
        with _errors():
            record = rt.accounts.set_state(args[0], new_state, actor=_actor())
        console.print(f"{record.username} is now [bold]{record.state}[/].")
        return
    try:
        if names_file == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(names_file, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {names_file}: {exc}") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    failures: list[tuple[str, str]] = []
    columns = (TextColumn("Setting state"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with _errors(), Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task("users", total=len(names))
        for each in names:
            try:
                rt.accounts.set_state(each, new_state, actor=_actor())
            except AccountError as exc:
                failures.append((each, str(exc)))
            progress.advance(task)
    console.print(f"{len(names) - len(failures)} of {len(names)} user(s) are now [bold]{new_state}[/].")
    if failures:
        table = Table(title="Not changed", header_style="bold")
        table.add_column("Name")
        table.add_column("Why")
        for each, why in failures:
            table.add_row(each, why)
        console.print(table)
        raise SystemExit(1)


@user.command("block")
@click.argument("name")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650),
              help="Unblock automatically after this many days.")
@click.pass_obj
def user_block(state: _State, name: str, reason: str, days: int) -> None:
    """Refuse a user everywhere (sign-in, second factor, app passwords) and end their sessions."""
    rt = state.runtime()
    with _errors():
        record = rt.accounts.block(name, actor=_actor(), reason=reason, days=days)
    console.print(f"{record.username} is blocked until {_fmt_time(record.blocked_until)}.")


@user.command("unblock")
@click.argument("name")
@click.pass_obj
def user_unblock(state: _State, name: str) -> None:
    """Lift a block (one set by `user block` or by a fraud report)."""
    rt = state.runtime()
    with _errors():
        before = rt.accounts.get(name)
        rt.accounts.unblock(name, actor=_actor())
    if before.blocked(time.time()) and before.blocked_reason:
        console.print(f"{before.username} is unblocked (the block was: {before.blocked_reason}).")
    else:
        console.print(f"{before.username} is unblocked.")


@user.command("bypass")
@click.argument("name")
@click.option("--seconds", required=True, type=click.IntRange(1, 86400), help="Expires unused after this long.")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.pass_obj
def user_bypass(state: _State, name: str, seconds: int, reason: str) -> None:
    """Let a user skip the second factor once (lost phone), at their next sign-in within SECONDS."""
    rt = state.runtime()
    with _errors():
        until = rt.accounts.bypass(name, actor=_actor(), seconds=seconds, reason=reason)
    console.print(f"{name} may sign in once without a second factor until {_fmt_time(until)}.")


@user.command("reset-mfa")
@click.argument("name")
@click.pass_obj
def user_reset_mfa(state: _State, name: str) -> None:
    """Require re-registration: delete the user's methods, set `enabled`, end their sessions."""
    rt = state.runtime()
    with _errors():
        removed = rt.accounts.reset_mfa(name, actor=_actor())
    console.print(f"Removed {removed} method(s); {name} will set up MFA at the next sign-in.")


@user.command("revoke-sessions")
@click.argument("name")
@click.pass_obj
def user_revoke_sessions(state: _State, name: str) -> None:
    """End every session of a user (reaches all servers within the revocation interval)."""
    rt = state.runtime()
    with _errors():
        rt.accounts.revoke_sessions(name, actor=_actor())
    interval = rt.config.session.revocation_interval
    console.print(f"Sessions of {name} revoked; every server refuses them within {interval:g} s.")


@user.command("unlock")
@click.argument("name")
@click.pass_obj
def user_unlock(state: _State, name: str) -> None:
    """Clear a lockout after too many failed attempts."""
    rt = state.runtime()
    with _errors():
        rt.accounts.unlock(name, actor=_actor())
    console.print(f"{name} is unlocked.")


@user.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.pass_obj
def user_set_password(state: _State, name: str, password_stdin: bool) -> None:
    """Set a user's local password (ends their sessions)."""
    password = _read_password(password_stdin, False)
    assert password is not None
    rt = state.runtime()
    with _errors():
        rt.accounts.set_password(name, password, actor=_actor())
    console.print(f"Password of {name} changed.")


@user.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def user_delete(state: _State, name: str, yes: bool) -> None:
    """Delete a user and their methods, and end their sessions."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("refusing to delete without confirmation: add --yes")
        click.confirm(f"Delete {name} and all their sign-in methods?", abort=True)
    rt = state.runtime()
    with _errors():
        rt.accounts.delete(name, actor=_actor())
    console.print(f"Deleted {name}.")


@admin.group("app-password")
def app_password() -> None:
    """App passwords for non-browser clients (mail, sync tools, scripts)."""


@app_password.command("create")
@click.argument("name")
@click.option("--label", required=True, help="Device name, e.g. \"Outlook on laptop\".")
@click.pass_obj
def app_password_create(state: _State, name: str, label: str) -> None:
    """Create an app password; prints the password alone on standard output."""
    rt = state.runtime()
    with _errors():
        user = rt.accounts.get(name)
        _record, password = rt.app_passwords.create(user, label, actor=_actor())
    click.echo(password)


_APP_PASSWORD_COLUMNS: tuple[Column[Any], ...] = (
    Column("Label", lambda a: a.label),
    Column("Created", lambda a: a.created_at, "time"),
    Column("Last used", lambda a: a.last_used_at, "time"),
    Column("Last client", lambda a: a.last_used_ip),
)


@app_password.command("list")
@click.argument("name")
@_listing_options()
@click.pass_obj
def app_password_list(state: _State, name: str, limit: int | None, fmt: str) -> None:
    """List a user's app passwords (never the passwords themselves)."""
    rt = state.runtime()
    with _errors():
        items = rt.app_passwords.list(rt.accounts.get(name))  # a user has at most a few dozen
    if fmt != "table":
        stream(items[:limit], _APP_PASSWORD_COLUMNS, fmt, _out(), err=err_console, what="app passwords")
        return
    page = limit or TABLE_LIMIT
    table_page(items, _APP_PASSWORD_COLUMNS, page, console, title=f"{len(items)} app password(s) of {name}",
               next_hint=lambda a: f"use --format csv to see all {len(items)}",
               empty=f"{name} has no app passwords.")


@app_password.command("revoke")
@click.argument("name")
@click.argument("label")
@click.pass_obj
def app_password_revoke(state: _State, name: str, label: str) -> None:
    """Revoke one app password by its label."""
    rt = state.runtime()
    with _errors():
        rt.app_passwords.revoke(rt.accounts.get(name), label, actor=_actor())
    console.print(f"Revoked {label!r} of {name}; every server refuses it within "
                  f"{rt.config.session.revocation_interval:g} s.")


@app_password.command("revoke-all")
@click.argument("name")
@click.pass_obj
def app_password_revoke_all(state: _State, name: str) -> None:
    """Revoke every app password of a user (lost or stolen device)."""
    rt = state.runtime()
    with _errors():
        count = rt.app_passwords.revoke(rt.accounts.get(name), None, actor=_actor())
    console.print(f"Revoked {count} app password(s) of {name}.")


#: a terminal table leaves out the user agent (long); the exports keep it
_AUDIT_TABLE = tuple(c for c in AUDIT_COLUMNS if c.header != "User agent")
_DURATION = re.compile(r"([0-9]{1,6})([hdw])")
_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(text: str, option: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration: write e.g. 12h, 180d or 26w", param_hint=option)
    return int(match.group(1)) * _UNITS[match.group(2)]


def _when(text: str | None, option: str) -> float | None:
    """A point in time: ISO 8601 (``2026-11-30``, ``2026-11-30T08:00``; local time unless it says otherwise) or a
    duration ago (``7d``)."""
    if text is None:
        return None
    if _DURATION.fullmatch(text.strip()):
        return time.time() - _duration(text, option)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a date (2026-11-30, 2026-11-30T08:00) nor a duration ago "
                                 "(7d)", param_hint=option) from None
    return parsed.timestamp()


def _audit_rows(rt: Any, *, username: str | None, event: str | None, result: str | None, since: float | None,
                until: float | None, before: int | None, limit: int | None, batch: int = 1000) -> Iterator[Any]:
    first = before

    def fetch(key: int | None, n: int) -> list[Any]:
        return list(rt.store.list_audit(username=username, event=event, result=result, since=since, until=until,
                                        before_id=key if key is not None else first, limit=n))
    return paged(fetch, lambda e: e.id, limit=limit, batch=batch)


@admin.group("audit", invoke_without_command=True)
@click.option("--user", "username", help="Only this user's events.")
@click.option("--event", help="Only this event (signin, basic, totp, admin, ...).")
@click.option("--result", help="Only this result (success, failure, refused, ...).")
@click.option("--since", help="From this time on: 2026-11-30, 2026-11-30T08:00, or a duration ago such as 7d.")
@click.option("--until", help="Before this time (same forms as --since).")
@click.option("--before", type=click.IntRange(1, None), help="Older than this event id (the last of a page).")
@_listing_options(formats=(*FORMATS, "jsonl"))
@click.pass_context
def audit_cmd(ctx: click.Context, username: str | None, event: str | None, result: str | None, since: str | None,
              until: str | None, before: int | None, limit: int | None, fmt: str) -> None:
    """Show audit events, newest first, filtered and paged; `audit export` and `audit prune` below."""
    if ctx.invoked_subcommand is not None:
        return
    state: _State = ctx.obj
    start, end = _when(since, "--since"), _when(until, "--until")
    rt = state.runtime()
    with _errors():
        if fmt != "table":
            stream(_audit_rows(rt, username=username, event=event, result=result, since=start, until=end,
                               before=before, limit=limit), AUDIT_COLUMNS, fmt, _out(), err=err_console,
                   what="events")
            return
        page = limit or TABLE_LIMIT
        options = {"user": username, "event": event, "result": result, "since": since, "until": until,
                   "limit": limit}
        table_page(_audit_rows(rt, username=username, event=event, result=result, since=start, until=end,
                               before=before, limit=page + 1, batch=page + 1), _AUDIT_TABLE, page, console,
                   title="Audit events, newest first",
                   next_hint=lambda e: _next_page("mfa-admin audit", options, "--before", e.id),
                   empty="No audit event matches.")


@audit_cmd.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "json"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file (created readable by you only) instead of standard output.")
@click.pass_context
def audit_export(ctx: click.Context, fmt: str, output: str | None) -> None:
    """Export the events the `audit` options select (all of them by default), newest first, streamed."""
    parent = ctx.parent
    assert parent is not None
    p = parent.params
    start, end = _when(p["since"], "--since"), _when(p["until"], "--until")
    rt = ctx.obj.runtime()
    rows = _audit_rows(rt, username=p["username"], event=p["event"], result=p["result"], since=start, until=end,
                       before=p["before"], limit=p["limit"])
    with _errors():
        if output is None:
            stream(rows, AUDIT_COLUMNS, fmt, _out(), err=err_console, what="events")
            return
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            count = stream(rows, AUDIT_COLUMNS, fmt, handle, err=err_console, what="events")
    console.print(f"Wrote {count:,} event(s) to {output}.", highlight=False)


@audit_cmd.command("prune")
@click.option("--older-than", "older_than", required=True, help="Delete events older than this, e.g. 180d.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def audit_prune(state: _State, older_than: str, yes: bool) -> None:
    """Delete old audit events in small batches (the table stays bounded; sign-ins never wait on it)."""
    age = _duration(older_than, "--older-than")
    if age < 86400:
        raise click.BadParameter("keep at least a day of events", param_hint="--older-than")
    cutoff = time.time() - age
    rt = state.runtime()
    with _errors():
        total = rt.store.count_audit_before(cutoff)
        if total == 0:
            console.print(f"No event is older than {older_than}.")
            return
        if not yes:
            if not sys.stdin.isatty():
                raise click.ClickException(f"{total:,} event(s) would be deleted; add --yes to confirm "
                                           "(standard input is not a terminal)")
            click.confirm(f"Delete {total:,} event(s) older than {local_time(cutoff)}?", abort=True)
        deleted = 0
        with Progress(TextColumn("Deleting"), BarColumn(), MofNCompleteColumn(), console=err_console,
                      disable=not err_console.is_terminal) as progress:
            task = progress.add_task("prune", total=total)
            while True:
                n = rt.store.prune_audit(before=cutoff)
                deleted += n
                progress.update(task, completed=min(deleted, total))
                if n < 5000:
                    break
        rt.audit.write("admin", "audit_pruned", now=time.time(), actor=_actor(), username=None, seconds=int(age),
                       count=deleted)
    console.print(f"Deleted {deleted:,} audit event(s) older than {local_time(cutoff)}.", highlight=False)


# -- fraud: reports from users ("this sign-in was not me") -------------------------------------------------------
@admin.group()
def fraud() -> None:
    """Fraud reports: sign-ins that users reported as not theirs (phone call 0#, denied push)."""


_FRAUD_COLUMNS: tuple[Column[Any], ...] = (
    Column("Id", lambda r: r.id, "count"),
    Column("Time", lambda r: r.at, "time"),
    Column("User", lambda r: r.username),
    Column("Method", lambda r: r.method_kind),
    Column("Client", lambda r: r.client_ip),
    Column("Blocked until", lambda r: r.blocked_until, "time", empty="not blocked"),
    Column("Notified", lambda r: r.notified, "list"),
)


@fraud.command("list")
@click.option("--user", "username", help="Only this user's reports.")
@click.option("--before", type=click.IntRange(1, None), help="Older than this report id (the last of a page).")
@_listing_options()
@click.pass_obj
def fraud_list(state: _State, username: str | None, before: int | None, limit: int | None, fmt: str) -> None:
    """Show the newest fraud reports. Lift a block with `mfa-admin user unblock NAME`."""
    rt = state.runtime()

    def fetch(key: int | None, n: int) -> list[Any]:
        return list(rt.store.list_fraud_reports(username=username, limit=n,
                                                before_id=key if key is not None else before))
    with _errors():
        if fmt != "table":
            stream(paged(fetch, lambda r: r.id, limit=limit), _FRAUD_COLUMNS, fmt, _out(), err=err_console,
                   what="reports")
            return
        page = limit or TABLE_LIMIT
        table_page(paged(fetch, lambda r: r.id, limit=page + 1, batch=page + 1), _FRAUD_COLUMNS, page, console,
                   title="Fraud reports, newest first",
                   next_hint=lambda r: _next_page("mfa-admin fraud list", {"user": username, "limit": limit},
                                                  "--before", r.id),
                   empty="No fraud reports.")


# -- tokens: OATH hardware tokens ---------------------------------------------------------------------------------
@admin.group()
def tokens() -> None:
    """OATH hardware tokens: import an inventory file, list, assign, unassign, delete."""


def _token_service(state: _State) -> Any:
    from .services.oath_tokens import OathTokens

    rt = state.runtime()
    service = getattr(rt, "oath_tokens", None)
    return service if service is not None else OathTokens(rt.store, rt.box, rt.audit, rt.clock)


@tokens.command("import")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_obj
def tokens_import(state: _State, path: str) -> None:
    """Import tokens from a CSV file ('-' for standard input).

    \b
    Columns (header row, any order, any case):
      upn,serial number,secret key,time interval,manufacturer,model
    secret key: Base32, at least 80 bits; time interval: 30 or 60 (TOTP).
    HOTP tokens: an extra column type = hotp, time interval left empty, and
    optionally counter (default 0). Optional column digits: 6 (default) or 8.
    An empty upn leaves the token unassigned.
    """

    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            data = Path(path).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from None
    service = _token_service(state)
    with _errors():
        parsed = service.parse(data)
        columns = (TextColumn("Importing tokens"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err_console, transient=False) as progress:
            task = progress.add_task("tokens", total=len(parsed.accepted))
            report = service.import_rows(parsed, actor=_actor(), on_row=lambda: progress.advance(task))
    if report.refused:
        table = Table(title="Refused lines", header_style="bold")
        for col in ("Line", "Serial", "Reason", "Details"):
            table.add_column(col)
        for refusal in report.refused:
            table.add_row(str(refusal.line), refusal.serial or "-", refusal.reason.value, refusal.message)
        console.print(table)
    console.print(f"Imported {len(report.imported)} of {report.lines} token(s); {len(report.refused)} refused.")
    if not report.imported:
        raise SystemExit(1)


_TOKEN_COLUMNS: tuple[Column[Any], ...] = (
    Column("Serial", lambda t: t.serial),
    Column("Kind", lambda t: f"TOTP {t.period}s" if t.kind == "totp" else "HOTP"),
    Column("User", lambda t: t.username),
    Column("Manufacturer", lambda t: t.manufacturer),
    Column("Model", lambda t: t.model),
    Column("Activated", lambda t: "yes" if t.activated else "no"),
)


@tokens.command("list")
@click.option("--user", "username", help="Only this user's tokens.")
@click.option("--after", help="Start after this serial (the last one of the previous page).")
@_listing_options()
@click.pass_obj
def tokens_list(state: _State, username: str | None, after: str | None, limit: int | None, fmt: str) -> None:
    """List the token inventory (never the secrets)."""
    service = _token_service(state)

    def fetch(key: str | None, n: int) -> list[Any]:
        return list(service.list(username, after=key if key is not None else after, limit=n))
    with _errors():
        if fmt != "table":
            stream(paged(fetch, lambda t: t.serial, limit=limit), _TOKEN_COLUMNS, fmt, _out(), err=err_console,
                   what="tokens")
            return
        page = limit or TABLE_LIMIT
        table_page(paged(fetch, lambda t: t.serial, limit=page + 1, batch=page + 1), _TOKEN_COLUMNS, page, console,
                   title="Token inventory" + (f" of {username}" if username else ""),
                   next_hint=lambda t: _next_page("mfa-admin tokens list", {"user": username, "limit": limit},
                                                  "--after", t.serial),
                   empty="No tokens: import an inventory with `mfa-admin tokens import FILE`.")


@tokens.command("assign")
@click.argument("serial")
@click.argument("name")
@click.pass_obj
def tokens_assign(state: _State, serial: str, name: str) -> None:
    """Assign an unassigned token to a user (who then activates it with a code)."""
    service = _token_service(state)
    with _errors():
        token = service.assign(serial, name, actor=_actor())
    console.print(f"Token {token.serial} is assigned to {token.username}.")


@tokens.command("unassign")
@click.argument("serial")
@click.pass_obj
def tokens_unassign(state: _State, serial: str) -> None:
    """Put a token back in the pool; if its user activated it, remove that method and end their sessions."""
    service = _token_service(state)
    with _errors():
        before = service.unassign(serial, actor=_actor())
    if before.username is None:
        console.print(f"Token {before.serial} was not assigned; nothing changed.")
    elif before.activated:
        console.print(f"Token {before.serial} is back in the pool; {before.username} can no longer sign in with it "
                      "and their sessions were ended.")
    else:
        console.print(f"Token {before.serial} is back in the pool (it was assigned to {before.username}).")


@tokens.command("delete")
@click.argument("serial")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def tokens_delete(state: _State, serial: str, yes: bool) -> None:
    """Remove a token from the inventory (and the method of the user who activated it)."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("refusing to delete without confirmation: add --yes")
        click.confirm(f"Delete token {serial}?", abort=True)
    service = _token_service(state)
    with _errors():
        before = service.delete(serial, actor=_actor())
    owner = ""
    if before.username:
        owner = f" (it was {'activated by' if before.activated else 'assigned to'} {before.username})"
    console.print(f"Deleted token {before.serial}{owner}.")


# -- usage: the two billing models (per enabled user, per authentication) -------------------------------------------
@admin.command("usage")
@click.option("--month", required=True, help="The calendar month (UTC), YYYY-MM.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.pass_obj
def usage_cmd(state: _State, month: str, fmt: str) -> None:
    """Enabled users and second-factor authentications by method in one month (services/usage.py says exactly
    what counts)."""
    import json

    from .services.usage import Usage, UsageError, month_bounds

    try:
        month_bounds(month)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from None
    rt = state.runtime()
    with _errors():
        report = Usage(rt.store).month(month)
    if fmt == "json":
        click.echo(json.dumps({"month": report.month, "start": iso(report.start), "end": iso(report.end),
                               "enabled_users": report.enabled_users, "authentications": report.authentications,
                               "total_authentications": report.total_authentications,
                               "passwordless": report.passwordless}, indent=2))
        return
    if fmt == "csv":
        rows: list[tuple[str, str, int]] = [("enabled_users", "", report.enabled_users)]
        rows += [("authentications", method, n) for method, n in report.authentications.items()]
        rows += [("authentications_total", "", report.total_authentications),
                 ("passwordless", "", report.passwordless)]
        click.echo("month,measure,method,count")
        for measure, method, n in rows:
            click.echo(f"{report.month},{measure},{method},{n}")
        return
    console.print(f"Usage in {report.month} (UTC)", style="bold", highlight=False)
    console.print(f"Enabled users (per-user billing): {report.enabled_users:,}", highlight=False)
    table = Table(title="Second-factor authentications (per-authentication billing)", header_style="bold")
    table.add_column("Method")
    table.add_column("Authentications", justify="right")
    for method, n in report.authentications.items():
        table.add_row(method, f"{n:,}")
    table.add_row("total", f"{report.total_authentications:,}", style="bold")
    console.print(table)
    if report.passwordless:
        console.print(f"Passwordless passkey sign-ins (not counted above): {report.passwordless:,}",
                      highlight=False)


# -- mfa-middleware -----------------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mfa_middleware: multi-factor authentication in front of WSGI apps."""


# -- the demo: everything it prints fits in 80 columns; it binds its port before it makes or prints anything,
# and removes its temporary folder (which holds secret keys) however it stops.
DEMO_WIDTH = 80


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Keep the demo's config and store here "
              "(default: a temporary folder, removed when the demo stops).")
def demo(host: str, port: int, data_dir: str | None) -> None:
    """Run a sample app behind the middleware on a fresh SQLite store."""
    import shutil
    import signal

    from werkzeug.serving import make_server

    from .demo import BASIC_PATH, USERNAME, DemoError, prepare_demo

    sock = _demo_socket(host, port)
    port = sock.getsockname()[1]
    folder: Path | None = None
    temporary = data_dir is None

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in _demo_signals()}
    previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)  # restored after the clean-up
    middleware = None
    try:
        folder = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="mfa-demo-"))
        try:
            middleware, password = prepare_demo(folder)
        except DemoError as exc:
            raise click.ClickException(str(exc)) from None
        server = make_server(host, port, middleware, threaded=True, request_handler=_make_demo_request_handler(),
                             fd=sock.fileno())
        sock.close()  # the server holds its own duplicate of the listening socket
        shown = host if host not in ("127.0.0.1", "::1", "0.0.0.0", "::") else "localhost"
        url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
        for line in _demo_banner(url, folder, password, USERNAME, BASIC_PATH, temporary):
            click.echo(line)
        server.serve_forever()  # returns on Ctrl-C (werkzeug catches KeyboardInterrupt)
    finally:
        # A second Ctrl-C or TERM must not cut the clean-up short: the folder holds secret keys.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            sock.close()
            if middleware is not None:
                middleware.runtime.close()
            if temporary and folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
                click.echo(f"Demo stopped; removed {_demo_path(folder)}.")
        finally:
            for sig, handler in previous.items():
                if handler is not None:
                    signal.signal(sig, handler)


def _demo_signals() -> list[int]:
    import signal

    return [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]


def _demo_socket(host: str, port: int) -> Any:
    """A listening socket on ``host:port``, or a ClickException naming the port and the option to change it."""
    import errno
    import socket

    def bind(p: int) -> socket.socket:
        family, _type, _proto, _name, address = socket.getaddrinfo(
            host, p, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name != "nt":  # as werkzeug does: a restart may reuse a port in TIME_WAIT
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    try:
        return bind(port)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on --host {host}: {exc.strerror}.") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            hint = "choose another with --port"
            for candidate in range(port + 1, min(port + 20, 65536)) if port else ():
                try:
                    bind(candidate).close()
                except OSError:
                    continue
                hint += f", e.g. --port {candidate}"
                break
            raise click.ClickException(f"port {port} on {host} is already in use by another program.\n"
                                       f"Stop that program, or {hint}.") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise click.ClickException(f"port {port} needs administrator rights.\n"
                                       "Choose one above 1023 with --port, e.g. --port 8000.") from None
        raise click.ClickException(f"cannot listen on {host} port {port}: {exc.strerror}.\n"
                                   "Change --host or --port.") from None


def _demo_path(path: Path) -> str:
    """``path`` as the person who started the demo can type it: relative when it is inside their folder."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def _demo_program(name: str) -> str:
    """How the person who started the demo runs ``name`` (a script installed beside this Python): the bare name
    when their PATH finds this very script, else its path (a person who never activated the venv)."""
    import shutil

    beside = Path(sys.executable).parent / name
    if not beside.exists():
        return name
    found = shutil.which(name)
    if found and Path(found).resolve() == beside.resolve():
        return name
    return _demo_path(beside)


def _demo_command(words: list[str], indent: str = "  ") -> list[str]:
    """A shell command as lines of at most DEMO_WIDTH columns, broken with ``\\`` between words (a single word
    longer than a line stays whole, so that the command still runs when copied)."""
    import shlex

    lines: list[str] = []
    current = indent
    for word in (shlex.quote(w) for w in words):
        if current.strip() and len(current) + 1 + len(word) + 2 > DEMO_WIDTH:
            lines.append(current + " \\")
            current = indent + "  "
        current += ("" if not current.strip() else " ") + word
    lines.append(current)
    return lines


def _demo_banner(url: str, folder: Path, password: str, username: str, basic_path: str,
                 temporary: bool) -> list[str]:
    """What the demo prints before it serves: every line at most DEMO_WIDTH columns."""
    cli = _demo_program("mfa-middleware")
    admin_cli = _demo_program("mfa-admin")
    where = "removed when the demo stops" if temporary else "kept"
    lines = [
        click.style("mfa_middleware demo", bold=True) + ": a sample intranet app behind the middleware",
        f"  Open      {url}",
        f"  Username  {username}",
        f"  Password  {password}",
        "",
        "At the first sign-in you set up an authenticator app (any TOTP app). No app",
        "at hand? Once the page shows the QR code, this prints the current code:",
        *_demo_command([cli, "demo-code", _demo_path(folder)]),
        "",
        "Mail and sync clients use app passwords (HTTP Basic). After setting up the",
        "app, create one under App passwords, then try it:",
        *_demo_command(["curl", "-u", f"{username}:APP PASSWORD", url.rstrip("/") + basic_path]),
        "",
        f"Config and store ({where}):",
        *_demo_command([_demo_path(folder)]),
        "Manage users, e.g.:",
        *_demo_command([admin_cli, "--config", _demo_path(folder / "mfa.toml"), "user", "list"]),
        "Press Ctrl-C to stop.",
    ]
    return lines


def _demo_request_line(method: str, target: str, status: str) -> str:
    """A request as one log line of at most DEMO_WIDTH columns, control characters escaped."""
    line = f"{time.strftime('%H:%M:%S')} {status} {method} {target}"
    line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
    return line if len(line) <= DEMO_WIDTH else line[:DEMO_WIDTH - 3] + "..."


def _make_demo_request_handler() -> Any:
    from werkzeug.serving import WSGIRequestHandler

    class DemoRequestHandler(WSGIRequestHandler):
        """werkzeug's handler with a request log that fits the demo's 80 columns."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            method, target = getattr(self, "command", None), getattr(self, "path", None)
            if method is None or target is None:  # a request line that could not be parsed
                method, target = "-", self.requestline
            click.echo(_demo_request_line(method, target, str(int(code)) if isinstance(code, int) else code))

    return DemoRequestHandler


@main.command("demo-code")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--token", is_flag=True, help="The demo hardware token's code instead of the authenticator app's.")
def demo_code_cmd(folder: str, token: bool) -> None:
    """Print the demo user's current authenticator code (demo folders only)."""
    from .demo import DemoError, demo_code

    try:
        result = demo_code(Path(folder), token=token)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.code)
    state = "" if result.confirmed else " (the code that confirms the app you are setting up)"
    click.echo(f"Accepted for at least {result.seconds_left} more seconds{state}.", err=True)


@main.command()
@click.option("--config", "config_path", envvar="MFA_CONFIG", required=True, type=click.Path(dir_okay=False),
              help="Configuration file (or set MFA_CONFIG).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9091, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Worker threads answering requests.")
def serve(config_path: str, host: str, port: int, workers: int) -> None:
    """Run the sign-in pages and the forward-auth endpoints for nginx, Traefik and Caddy (waitress)."""
    import waitress  # type: ignore[import-untyped]

    from .middleware import ForwardAuthApp
    from .runtime import Runtime
    from .servers import FORWARD_AUTH_WAITRESS_OPTIONS
    from .store import SchemaOutOfDate, StoreUnavailable

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    runtime = Runtime(config)
    try:
        runtime.store.check_schema()
    except (SchemaOutOfDate, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    from .logs import configure as configure_logs

    configure_logs(config.logging.format, config.logging.level)
    app = ForwardAuthApp(runtime)
    prefix = config.prefix
    err_console.print(f"mfa_middleware forward-auth on http://{host}:{port}{prefix}/  "
                      f"(nginx: {prefix}/auth/nginx, Traefik/Caddy: {prefix}/auth/forward; {workers} workers)")
    if not config.trusted_proxies:
        err_console.print("[yellow]warning:[/] no trusted_proxies in the config: every authorization request "
                          "will be refused. List your proxy's address, e.g. trusted_proxies = [\"127.0.0.1\"].")
    try:
        # waitress 3 deletes X-Forwarded-* before the app sees them unless told otherwise, and its own
        # trusted_proxy would rewrite REMOTE_ADDR, which the authorization endpoints check against
        # trusted_proxies: keep both as they arrive; the app's own trust check decides (mfa_middleware.servers).
        waitress.serve(app, host=host, port=port, threads=workers, ident="mfa_middleware",
                       **FORWARD_AUTH_WAITRESS_OPTIONS)
    finally:
        runtime.close()


# -- bans (regulation) ---------------------------------------------------------------------------------------------
_BAN_COLUMNS: tuple[Column[Any], ...] = (
    Column("Kind", lambda b: b.kind),
    Column("Subject", lambda b: b.subject),
    Column("Failures", lambda b: b.failures, "count"),
    Column("Until", lambda b: b.until, "time"),
)


@admin.group()
def bans() -> None:
    """Accounts and client addresses banned after repeated failed sign-ins."""


@bans.command("list")
@click.option("--after", help="Start after this ban (KIND:SUBJECT, the last one of the previous page).")
@_listing_options()
@click.pass_obj
def bans_list(state: _State, after: str | None, limit: int | None, fmt: str) -> None:
    """List the bans in force: accounts (by name), then client addresses."""
    key: tuple[str, str] | None = None
    if after is not None:
        kind, sep, subject = after.partition(":")
        if not sep or kind not in ("user", "address") or not subject:
            raise click.BadParameter("write user:NAME or address:IP (the last row of the previous page)",
                                     param_hint="--after")
        key = (kind, subject)
    rt = state.runtime()
    now = time.time()
    with _errors():
        if fmt != "table":
            stream(rt.regulation.bans(now, after=key, limit=limit), _BAN_COLUMNS, fmt, _out(), err=err_console,
                   what="bans")
            return
        page = limit or TABLE_LIMIT
        options = {"limit": limit}
        table_page(rt.regulation.bans(now, after=key, limit=page + 1, batch=page + 1), _BAN_COLUMNS, page, console,
                   title="Bans in force",
                   next_hint=lambda b: _next_page("mfa-admin bans list", options, "--after", f"{b.kind}:{b.subject}"),
                   empty="No account or address is banned.")


@bans.command("lift")
@click.option("--user", "username", help="Lift this account's ban (also the lock after 100 consecutive failures).")
@click.option("--address", help="Lift this client address's ban (an IPv6 address lifts its /64).")
@click.pass_obj
def bans_lift(state: _State, username: str | None, address: str | None) -> None:
    """Lift a ban: give exactly one of --user NAME or --address IP."""
    if (username is None) == (address is None):
        raise click.UsageError("give exactly one of --user NAME or --address IP")
    rt = state.runtime()
    now = time.time()
    with _errors():
        if username is not None:
            from .primary.usernames import canonical_username

            name = canonical_username(username) or username
            if not rt.regulation.lift_user(name, actor=_actor(), now=now):
                raise click.ClickException(f"no user named {username!r}")
            console.print(f"{name}: ban lifted, failure counters cleared.")
            return
        assert address is not None
        try:
            lifted = rt.regulation.lift_address(address, actor=_actor(), now=now)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--address") from None
        console.print(f"{address}: ban lifted." if lifted else f"{address} had no failures counted; nothing to lift.")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate a configuration file."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"{path}: OK ({len(config.rules)} rule(s), default policy {config.default_policy}).")


if __name__ == "__main__":  # pragma: no cover
    admin()
