"""``mfa-authenticator``: approve, deny or report sign-ins from a terminal (the console reference authenticator).

Exit status: 0 done, 1 the server refused or nothing matched (the message says why), 2 a usage error.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import click
import httpx
import pyotp

from ..factors.push import protocol
from .client import DeviceClient, PendingRequest, ServerRefused, channel_label, register, webhook_channel
from .keystore import KeyStore, KeyStoreError, TotpAccount, default_path


def _open(ctx: click.Context) -> KeyStore:
    try:
        store = KeyStore.load(ctx.obj["path"])
    except KeyStoreError as exc:
        raise click.ClickException(str(exc)) from None
    return store


def _all_pending(store: KeyStore, wait: int = 0) -> list[PendingRequest]:
    found: list[PendingRequest] = []
    for account in store.accounts:
        client = DeviceClient(account)
        try:
            found.extend(client.pending(wait=wait))
        except (ServerRefused, httpx.HTTPError, protocol.ProtocolError) as exc:
            click.echo(f"{account.site or account.base_url} ({account.username}): {exc}", err=True)
        finally:
            client.close()
    return found


def _describe(request: PendingRequest) -> str:
    when = datetime.fromtimestamp(request.created_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    numbers = " ".join(str(n) for n in request.numbers)
    return (f"{request.id}  {request.account.username}@{request.site or request.host}  host={request.host}  "
            f"ip={request.client_ip}  at={when}  numbers: {numbers}\n    browser: {request.user_agent}")


def _answer(ctx: click.Context, request_id: str, answer: protocol.Answer, number: int | None) -> None:
    store = _open(ctx)
    request = next((r for r in _all_pending(store) if r.id == request_id), None)
    if request is None:
        raise click.ClickException(f"no pending sign-in request {request_id} (answered, expired or unknown)")
    if answer == "approve" and number not in request.numbers:
        raise click.ClickException(f"{number} is not one of the numbers offered: "
                                   + ", ".join(str(n) for n in request.numbers))
    client = DeviceClient(request.account)
    try:
        result = client.answer(request_id, answer, number)
    except (ServerRefused, httpx.HTTPError) as exc:
        raise click.ClickException(f"the server refused the answer: {exc}") from None
    finally:
        client.close()
    click.echo(result.get("message") or f"{result.get('status', 'done')}")


@click.group()
@click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="MFA_AUTHENTICATOR_STORE", default=None,
              help="The key file (default ~/.config/mfa-authenticator/accounts.json).")
@click.pass_context
def main(ctx: click.Context, store_path: Path | None) -> None:
    """A console authenticator for mfa_middleware's push sign-in (docs/push-protocol.md)."""
    ctx.ensure_object(dict)
    ctx.obj["path"] = store_path or default_path()


@main.command()
@click.argument("url")
@click.option("--name", default=None, help="How the site lists this device (default: this computer's name).")
@click.option("--algorithm", type=click.Choice(["ed25519", "es256"]), default="ed25519", show_default=True)
@click.option("--webhook", default=None, metavar="URL",
              help="A push channel: the site POSTs a wake-up there at each sign-in (ntfy topic, UnifiedPush).")
@click.pass_context
def enroll(ctx: click.Context, url: str, name: str | None, algorithm: protocol.Algorithm,
           webhook: str | None) -> None:
    """Add an account from a registration address (or an otpauth:// TOTP address for `codes`)."""
    store = _open(ctx)
    if url.startswith("otpauth://"):
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.netloc != "totp" or "secret" not in query:
            raise click.ClickException("only otpauth://totp/ addresses with a secret are supported")
        store.totp.append(TotpAccount(label=unquote(parts.path.lstrip("/")), secret=query["secret"],
                                      digits=int(query.get("digits", 6)), period=int(query.get("period", 30)),
                                      digest=query.get("algorithm", "SHA1").lower()))
        store.save()
        click.echo(f"added TOTP account {store.totp[-1].label}")
        return
    try:
        account = register(url, name or f"mfa-authenticator on {socket.gethostname()}", algorithm,
                           channel=webhook_channel(webhook))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except (ServerRefused, httpx.HTTPError) as exc:
        raise click.ClickException(f"registration failed: {exc}") from None
    store.accounts.append(account)
    store.save()
    click.echo(f"added {account.username}@{account.site or account.base_url} (account {account.account_id})")


@main.command()
@click.pass_context
def accounts(ctx: click.Context) -> None:
    """List the accounts."""
    store = _open(ctx)
    for a in store.accounts:
        channel = f"  channel: {a.channel}" if a.channel else ""
        click.echo(f"{a.account_id}  {a.username}@{a.site}  {a.base_url}  {a.algorithm}{channel}")
    for t in store.totp:
        click.echo(f"totp  {t.label}")


@main.command()
@click.argument("account")
@click.option("--webhook", default=None, metavar="URL", help="POST wake-ups to this URL (ntfy topic, UnifiedPush).")
@click.option("--none", "remove", is_flag=True, help="Remove the push channel (long-poll only).")
@click.pass_context
def channel(ctx: click.Context, account: str, webhook: str | None, remove: bool) -> None:
    """Set or remove the push channel of ACCOUNT (its account id, or user@site as `accounts` lists it).

    The channel only wakes a device up: `watch` (or the ntfy app) notices, and the request is fetched and
    verified over the signed protocol as always."""
    if (webhook is None) == (not remove):
        raise click.UsageError("give exactly one of --webhook URL or --none")
    store = _open(ctx)
    found = [a for a in store.accounts if account in (a.account_id, f"{a.username}@{a.site}")]
    if len(found) != 1:
        raise click.ClickException(f"no account {account!r}" if not found else
                                   f"{account!r} names several accounts: use the account id")
    try:
        wanted = None if remove else webhook_channel(webhook)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    client = DeviceClient(found[0])
    try:
        client.set_channel(wanted)
    except (ServerRefused, httpx.HTTPError) as exc:
        raise click.ClickException(f"the server refused the channel: {exc}") from None
    finally:
        client.close()
    found[0].channel = channel_label(wanted)
    store.save()
    click.echo(f"channel of {found[0].username}@{found[0].site}: {found[0].channel or 'none (long-poll only)'}")


@main.command()
@click.option("--wait", type=click.IntRange(0, 25), default=0, help="Long-poll up to this many seconds.")
@click.pass_context
def pending(ctx: click.Context, wait: int) -> None:
    """Show the sign-in requests waiting for an answer."""
    for request in _all_pending(_open(ctx), wait):
        click.echo(_describe(request))


@main.command()
@click.argument("request_id")
@click.option("--number", type=int, required=True, help="The number the sign-in page shows.")
@click.pass_context
def approve(ctx: click.Context, request_id: str, number: int) -> None:
    """Approve a sign-in with the number its page shows."""
    _answer(ctx, request_id, "approve", number)


@main.command()
@click.argument("request_id")
@click.pass_context
def deny(ctx: click.Context, request_id: str) -> None:
    """Deny a sign-in."""
    _answer(ctx, request_id, "deny", None)


@main.command()
@click.argument("request_id")
@click.pass_context
def report(ctx: click.Context, request_id: str) -> None:
    """Deny a sign-in and report it as fraud (it was not you)."""
    _answer(ctx, request_id, "fraud", None)


@main.command()
@click.option("--once", is_flag=True, help="Stop after the first request answered.")
@click.pass_context
def watch(ctx: click.Context, once: bool) -> None:
    """Wait for sign-in requests and ask what to answer."""
    store = _open(ctx)
    if not store.accounts:
        raise click.ClickException("no accounts: run `mfa-authenticator enroll URL` first")
    seen: set[str] = set()
    while True:
        listed = _all_pending(store, wait=25)
        if listed and all(r.id in seen for r in listed):
            time.sleep(1)  # only requests already skipped are pending: the long-poll returns at once until they go
        for request in listed:
            if request.id in seen:
                continue
            seen.add(request.id)
            click.echo(_describe(request))
            choice = click.prompt("Pick the number the sign-in page shows, d to deny, f to report fraud, s to skip",
                                  type=click.Choice([*(str(n) for n in request.numbers), "d", "f", "s"]))
            if choice == "s":
                continue
            answer: protocol.Answer = {"d": "deny", "f": "fraud"}.get(choice, "approve")  # type: ignore[assignment]
            client = DeviceClient(request.account)
            try:
                result = client.answer(request.id, answer, int(choice) if answer == "approve" else None)
                click.echo(result.get("message") or result.get("status", "done"))
            except (ServerRefused, httpx.HTTPError) as exc:
                click.echo(f"refused: {exc}", err=True)
            finally:
                client.close()
            if once:
                return


@main.command()
@click.pass_context
def codes(ctx: click.Context) -> None:
    """Show the current TOTP codes of the TOTP accounts."""
    import hashlib

    now = time.time()
    for t in _open(ctx).totp:
        digest = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}.get(t.digest,
                                                                                                hashlib.sha1)
        code = pyotp.TOTP(t.secret, digits=t.digits, interval=t.period, digest=digest).at(now)
        click.echo(f"{code}  {t.label}  ({t.period - int(now) % t.period} s left)")
