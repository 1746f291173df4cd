"""Regulation: bans of accounts and client addresses after repeated failures, what a banned client is told, and the
administrator's view of the bans (``mfa-admin bans list`` / ``bans lift``).

Trust model and rules:

- The counters live in the store and change by one conditional statement each (``services/lockout.py``,
  ``Store.reserve_attempt``, ``Store.reserve_client_attempt``, ``Store.reserve_address_failure``), so they are
  exact across threads, processes and servers, on SQLite and PostgreSQL alike.
- Per account: ``[regulation.user] max_failures`` failures within ``find_time`` ban the account for ``ban_time``.
  Per client address (over every account, known or not): ``[regulation.address]`` likewise. The address is the one
  the trusted-proxy chain gives (``core/facts.py``), never a header from an untrusted peer; IPv4-mapped IPv6
  addresses count as the IPv4 address they carry, and an IPv6 address counts as its /64
  (``core.networks.regulation_key``).
- A completed sign-in from an address clears that address's failures for that user only.
- Whatever the settings, 100 consecutive failures on an account lock it until an administrator unlocks it
  (``mfa-admin bans lift --user NAME`` or ``mfa-admin user unlock NAME``).
- What a client is told: a banned ADDRESS gets 429 with ``Retry-After`` (JSON for API clients) on the sign-in form,
  whatever username it sent, so the page says nothing about accounts. A banned ACCOUNT is not told apart from a
  wrong password (the same 401 form and text for unknown users, wrong passwords and banned accounts), since telling
  it would show that the account exists. On the Basic path both give the one ``invalid`` challenge, except the
  address ban, which gives the same 429 as the form.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from werkzeug.wrappers import Request, Response

from ..core.facts import wants_json
from ..core.networks import canonical_address, regulation_key
from ..store.sql import LOCKED_FOR_GOOD, BanRecord

if TYPE_CHECKING:
    from ..store import Store
    from .audit import AuditLog

BANNED_TITLE = "Too many attempts"
BANNED_MESSAGE = ("There were too many failed sign-in attempts from your network. Sign-in from here is paused; "
                  "try again later, or ask your helpdesk.")


def retry_after(until: float | None, now: float) -> int:
    """Whole seconds until ``until`` (at least 1; a day at most for an open-ended ban)."""
    if until is None or until >= LOCKED_FOR_GOOD:
        return 86400
    return max(1, min(86400, math.ceil(until - now)))


def banned_body(as_json: bool, seconds: int, render: Callable[[str, str], str]) -> tuple[bytes, str]:
    """The body and content type of the 429 a banned client address gets."""
    if as_json:
        return (json.dumps({"error": "too_many_attempts", "message": BANNED_MESSAGE,
                            "retry_after": seconds}).encode(), "application/json")
    return render(BANNED_TITLE, BANNED_MESSAGE).encode(), "text/html; charset=utf-8"


def banned_response(request: Request, until: float | None, now: float,
                    render: Callable[[str, str], str]) -> Response:
    """429 with ``Retry-After`` for the sign-in pages (HTML, or JSON for API clients)."""
    seconds = retry_after(until, now)
    as_json = wants_json(request.headers.get("Accept", ""), request.headers.get("X-Requested-With", ""))
    body, kind = banned_body(as_json, seconds, render)
    return Response(body, status=429, content_type=kind,
                    headers={"Retry-After": str(seconds), "Cache-Control": "no-store"})


class Regulation:
    """The administrator's side: list the bans in force and lift them (each lift is an audit row)."""

    def __init__(self, store: Store, audit: AuditLog) -> None:
        self.store, self.audit = store, audit

    def bans(self, now: float, *, after: tuple[str, str] | None = None, limit: int | None = None,
             batch: int = 1000) -> Iterator[BanRecord]:
        """Every ban in force (accounts by name, then addresses), read page by page from ``after`` on."""
        key = after
        left = limit
        while left is None or left > 0:
            size = batch if left is None else min(batch, left)
            page = self.store.page_bans(now=now, after=key, limit=size)
            yield from page
            if left is not None:
                left -= len(page)
            if len(page) < size:
                return
            key = (page[-1].kind, page[-1].subject)

    def lift_user(self, username: str, *, actor: str, now: float) -> bool:
        """Lift an account's ban (also the 100-consecutive-failures lock) and clear its counters; False when
        there is no such user."""
        user = self.store.get_user(username)
        if user is None:
            return False
        self.store.reset_failures(user.id)
        self.audit.write("ban_lift", "success", now=now, actor=actor, username=user.username, reason="user",
                         state="banned" if user.locked(now) else "not_banned")
        return True

    def lift_address(self, address: str, *, actor: str, now: float) -> bool:
        """Lift a client address's ban and clear its counter; False when it had none. Raises ValueError for
        something that is not an IP address."""
        if canonical_address(address) is None:
            raise ValueError(f"{address!r} is not an IP address")
        ip = regulation_key(address)
        lifted = self.store.lift_address_ban(ip)
        self.audit.write("ban_lift", "success" if lifted else "none", now=now, actor=actor, username=None,
                         client_ip=ip, reason="address")
        return lifted
