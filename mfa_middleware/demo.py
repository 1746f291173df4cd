"""`mfa-middleware demo`: a sample intranet app behind the middleware, on a throwaway SQLite store.

What the demo folder holds and who may use it:

- ``mfa.toml`` (the starter configuration with fresh keys, plus a Basic route for app passwords), ``mfa.db``
  (the store) and :data:`MARKER`, a file that says the folder was made by the demo. The folder holds secret keys:
  the demo command removes a temporary folder when it stops, however it stops.
- :func:`prepare_demo` refuses a folder that has an ``mfa.toml`` without the marker, so pointing ``--data-dir`` at
  a real installation never adds a ``demo`` user to its store or resets a real user's password.
- :func:`demo_code` (``mfa-middleware demo-code``) prints the current authenticator code of the ``demo`` user, so
  a person without an authenticator app can try the demo. It works only on a folder with the marker and only for
  the ``demo`` user. This is a guard against misuse, not a trust boundary: whoever can read a folder's
  ``mfa.toml`` holds its encryption key and can compute the codes anyway.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config
    from .middleware import MFAMiddleware

MARKER = "mfa-demo.txt"
USERNAME = "demo"
TOKEN_SERIAL = "DEMO-0001"
"""The demo's hardware token (TOTP, 30 s), assigned to the demo user: activate it with its serial number."""
BASIC_PATH = "/dav/"
"""The demo's route for mail, WebDAV and sync clients: HTTP Basic, where an app password satisfies two_factor."""

_MARKER_TEXT = ("This folder was made by `mfa-middleware demo`. It holds throwaway keys and a throwaway store;\n"
                "`mfa-middleware demo-code` reads the demo user's authenticator code only where this file is.\n")

_BASIC_SECTION = '''\
# Every verification method, so each can be tried from the browser. Emails and texts go to console gateways:
# the server log, and the outbox page at /_mfa/dev/outbox (dev_outbox, at the top of this file: the demo only).
# The hardware token DEMO-0001 is in the inventory for the demo user; `mfa-middleware demo-code --token`
# shows the code its display would show.
[methods]
enabled = ["totp", "oath", "sms", "mobile_voice", "voice", "email", "backup_codes"]

[email]
gateway = "console"
from_address = "no-reply@contoso.example"

# Texts and calls go to the console gateway too (the log and the outbox page, where a keypad answers calls);
# any country's numbers.
[phone]
gateway = "console"
allowed_countries = ["*"]

# App passwords for mail, WebDAV and sync clients (HTTP Basic on rules with basic = true).
[basic]
realm = "Contoso demo"

'''

_BASIC_RULE = f'''\
# The demo's files for mail, WebDAV and sync clients: HTTP Basic with an app password. Try it with
#   curl -u 'demo:APP PASSWORD' http://localhost:8000{BASIC_PATH}
[[rules]]
path = "{BASIC_PATH}*"
policy = "two_factor"
basic = true

'''


class DemoError(Exception):
    """A demo folder that cannot be used; the message says why and what to do."""


def demo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    identity = environ.get("mfa.identity")
    if path == BASIC_PATH.rstrip("/") or path.startswith(BASIC_PATH):
        return _files(identity, start_response)
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
<a href="/_mfa/">Security info</a><a href="/_mfa/app-passwords">App passwords</a>
<a href="/_mfa/logout">Sign out</a></nav>
<p>Mail and sync clients use <code>{BASIC_PATH}</code> with an app password (HTTP Basic).</p></body></html>"""
    data = body.encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def _files(identity: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The Basic route's stand-in for a WebDAV share: plain text, for curl."""
    if identity is None:  # not reachable through the demo's rules; an unwrapped app says so
        text = "Contoso files: nobody is signed in.\n"
    else:
        text = f"Contoso files: signed in as {identity.username} with {' + '.join(identity.methods)}.\n"
    data = text.encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def write_demo_config(path: Path) -> None:
    """The starter configuration (fresh keys, mode 600) with the demo's Basic route before the other rules."""
    from .cli import write_starter_config

    write_starter_config(path, database="sqlite:///mfa.db", issuer="mfa_middleware demo")
    text = path.read_text(encoding="utf-8")
    first_rule = text.index("\n[[rules]]\n") + 1
    text = text[:first_rule] + _BASIC_RULE + text[first_rule:]
    rules_comment = text.index("\n# Rules:") + 1
    text = text[:rules_comment] + _BASIC_SECTION + text[rules_comment:]
    # A top-level key must come before the first table.
    first_table = text.index("\n[") + 1
    text = (text[:first_table] + "# The demo's outbox page (/_mfa/dev/outbox) lists the emails the console gateway "
            "kept.\ndev_outbox = true\n\n" + text[first_table:])
    path.write_text(text, encoding="utf-8")


def is_demo_folder(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def prepare_demo(folder: Path) -> tuple[MFAMiddleware, str]:
    """Config, migrated SQLite store and a `demo` user (fresh password, no methods) in ``folder``.

    Raises :class:`DemoError` for a folder with a configuration the demo did not make.
    """
    from .middleware import MFAMiddleware
    from .config import load_config
    from .services.accounts import AccountError

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new folder: private, it will hold secret keys
    config_path = folder / "mfa.toml"
    if config_path.exists() and not is_demo_folder(folder):
        raise DemoError(f"{folder} holds an mfa.toml that `mfa-middleware demo` did not make.\n"
                        "The demo adds a user and resets its password, so it runs only in a folder\n"
                        "of its own: choose an empty or new folder with --data-dir.")
    if not config_path.exists():
        (folder / MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        write_demo_config(config_path)
    middleware = MFAMiddleware(demo_app, load_config(config_path))
    rt = middleware.runtime
    rt.store.upgrade()
    password = secrets.token_urlsafe(9)
    try:
        # In the "admins" group (the /admin/* rule lets it in) but not an administrator (--admin), so that
        # it may create app passwords ([basic] admins_may_create is false).
        rt.accounts.add(USERNAME, actor="demo", password=password, groups=("admins",), display_name="Demo User")
    except AccountError:
        rt.accounts.set_password(USERNAME, password, actor="demo")
        rt.accounts.reset_mfa(USERNAME, actor="demo")
    if rt.store.get_oath_token(TOKEN_SERIAL) is None:
        import base64

        secret = base64.b32encode(secrets.token_bytes(20)).decode("ascii")
        rt.oath_tokens.import_file(f"upn,serial number,secret key,time interval,manufacturer,model\n"
                                   f"{USERNAME},{TOKEN_SERIAL},{secret},30,Contoso,Demo token\n", actor="demo")
    return middleware, password


@dataclass(frozen=True)
class DemoCode:
    code: str
    seconds_left: int  # the code is accepted for at least this long (one step of drift may add more)
    confirmed: bool  # False: the app is being set up (the code confirms it)


def demo_code(folder: Path, now: float | None = None, *, token: bool = False) -> DemoCode:
    """The code the ``demo`` user's authenticator app would show now (the newest one, set up or being set up), or
    with ``token`` the code the demo hardware token (:data:`TOKEN_SERIAL`) would show.

    A code that was already used is skipped: the next step's code is given, which the verifier accepts now
    (it allows one step of drift). Raises :class:`DemoError` outside a demo folder or without an app.
    """
    import pyotp

    from .config import ConfigError, load_config
    from .secretbox import SecretBox
    from .store import Store

    if not is_demo_folder(folder):
        raise DemoError(f"{folder} is not a folder made by `mfa-middleware demo`.\n"
                        "This helper shows codes only for the demo's throwaway user, never for a real\n"
                        "installation.")
    try:
        config = load_config(folder / "mfa.toml")
    except ConfigError as exc:
        raise DemoError(str(exc)) from None
    now = time.time() if now is None else now
    if token:
        return _token_code(config, now)
    store = Store(config.database)
    try:
        user = store.get_user(USERNAME)
        methods = [m for m in store.list_methods(user.id, confirmed_only=False) if m.kind == "totp"] if user else []
    finally:
        store.close()
    method = methods[-1] if methods else None
    if method is None or method.secret is None:
        raise DemoError("the demo user has no authenticator app yet.\n"
                        "Sign in at the demo's address and choose \"Set it up now\"; run this again\n"
                        "when the page shows the QR code.")
    secret = SecretBox(config.encryption_keys).decrypt(method.secret)
    period = config.totp.period
    step = int(now // period)
    if method.last_step is not None and method.last_step >= step:
        step = method.last_step + 1
    totp = pyotp.TOTP(secret, digits=config.totp.digits, interval=period)
    left = int((step + 1) * period - now)
    return DemoCode(totp.generate_otp(step), max(left, 0), method.confirmed)


def _token_code(config: Config, now: float) -> DemoCode:
    from .factors.oath.otp import decode_base32, hotp_code
    from .secretbox import SecretBox
    from .store import Store

    store = Store(config.database)
    try:
        record = store.get_oath_token(TOKEN_SERIAL)
    finally:
        store.close()
    if record is None or record.period is None:
        raise DemoError(f"the demo token {TOKEN_SERIAL} is not in this folder's inventory; start the demo once "
                        "(`mfa-middleware demo`) to add it.")
    key = decode_base32(SecretBox(config.encryption_keys).decrypt(record.secret))
    step = int(now // record.period)
    if record.last_step is not None and record.last_step >= step:
        step = record.last_step + 1
    return DemoCode(hotp_code(key, step, record.digits), max(int((step + 1) * record.period - now), 0),
                    record.method_id is not None)
