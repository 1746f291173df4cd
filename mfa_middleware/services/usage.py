"""The usage report: the two billing models of the product we follow, per calendar month (UTC).

**Per enabled user.** A user counts as *enabled in a month* when, at some instant of that month (from the first
second of its first day, UTC, up to but not including the first second of the next month's first day), the user
existed and their MFA state was ``enabled`` or ``enforced`` (that is, not ``disabled``). A user enabled for one
minute of the month counts once; a user disabled the whole month, or created after it ended, does not count.

How it is computed, from the store and the audit log only:

- For every user in the store: the state at the start of the month is the ``previous_state`` of the user's first
  ``user_state`` audit row at or after the start, or the current state when there is none; the states during the
  month are that state plus the ``state`` of every ``user_state`` row inside the month. A user created after the
  month ended (``created_at``) is left out; one created during it starts in the state it had after creation (the
  same rule, since the rows before creation do not exist).
- For every user deleted at or after the start of the month (a ``user_delete`` row) who is not in the store any
  more: the same rule, where "the current state" is the state of their last ``user_state`` (or else ``user_add``)
  row before the deletion. A deleted user of whom no state is recorded is not counted. A ``user_add`` row after
  the month ended means the user did not exist yet.
- Moves between ``enabled`` and ``enforced`` (completing registration, "require re-registration") never change the
  count, so they need no audit row here. If audit rows of the period were pruned, the current state stands in for
  the transitions that are gone.

**Per authentication.** Second-factor authentications are the audit rows ``second_factor`` / ``success`` inside the
month, counted by the method that answered (``detail.method``: ``totp``, ``sms``, ``voice``, ``push``...). Not
counted: bypasses (``second_factor`` / ``bypassed``), remembered devices (no second factor was asked),
enrollment confirmations, failed or pending answers, app passwords on the Basic path, and passwordless passkey
sign-ins (their own ``passwordless`` rows, shown apart as ``passwordless``).

The report reads the store in pages (users by username, audit rows by id), so memory stays bounded by the number
of users whose state changed in or after the month.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..store import Store
from ..store.sql import AuditRecord, UserFilter

BILLABLE_STATES = frozenset({"enabled", "enforced"})
_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_BATCH = 1000


class UsageError(ValueError):
    """A usage request that cannot be answered; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class MonthUsage:
    """One month's figures (``start`` inclusive, ``end`` exclusive, Unix times, UTC month boundaries)."""

    month: str
    start: float
    end: float
    enabled_users: int
    #: second-factor authentications by method, most used first
    authentications: dict[str, int] = field(default_factory=dict)
    #: passwordless passkey sign-ins (one step that is both factors), apart from the second factors
    passwordless: int = 0

    @property
    def total_authentications(self) -> int:
        return sum(self.authentications.values())


def month_bounds(month: str) -> tuple[float, float]:
    """The first second of ``YYYY-MM`` and of the month after, as Unix times (UTC)."""
    match = _MONTH.fullmatch(month.strip())
    if match is None:
        raise UsageError(f"{month!r} is not a month: write YYYY-MM, e.g. 2026-11")
    year, number = int(match.group(1)), int(match.group(2))
    if year < 1970:
        raise UsageError(f"{month!r} is before 1970")
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def month_of(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m")


class Usage:
    """Computes :class:`MonthUsage` from a store (see the module docstring for what counts)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _audit(self, *, event: str, result: str | None = None, since: float | None = None,
               until: float | None = None, username: str | None = None) -> Iterator[AuditRecord]:
        before: int | None = None
        while True:
            page = self.store.list_audit(event=event, result=result, since=since, until=until, username=username,
                                         before_id=before, limit=_BATCH)
            yield from page
            if len(page) < _BATCH:
                return
            before = page[-1].id

    def month(self, month: str) -> MonthUsage:
        start, end = month_bounds(month)
        # State changes at or after the start, oldest first per user.
        changes: dict[str, list[AuditRecord]] = {}
        for row in self._audit(event="user_state", since=start):
            if row.username:
                changes.setdefault(row.username, []).append(row)
        for rows in changes.values():
            rows.sort(key=lambda r: (r.at, r.id))

        def billable(current: str | None, rows: list[AuditRecord]) -> bool:
            first = rows[0].detail.get("previous_state") if rows else None
            at_start = first if isinstance(first, str) else current
            states = {at_start} | {str(r.detail.get("state")) for r in rows if r.at < end}
            return bool(states & BILLABLE_STATES)

        counted = 0
        seen: set[str] = set()
        after: str | None = None
        while True:
            page = self.store.page_users(UserFilter(), after=after, limit=_BATCH, now=end)
            for user, _ in page:
                seen.add(user.username)
                if user.created_at >= end:
                    continue
                if billable(user.state, changes.get(user.username, [])):
                    counted += 1
            if len(page) < _BATCH:
                break
            after = page[-1][0].username
        gone = {r.username for r in self._audit(event="user_delete", since=start) if r.username} - seen
        for name in sorted(gone):
            history = [r for r in self._audit(event="user_state", username=name, until=start)][:1]
            added = [r for r in self._audit(event="user_add", username=name)]
            if added and min(r.at for r in added) >= end:
                continue
            last = history[0] if history else (added[0] if added else None)
            state = last.detail.get("state") if last is not None else None
            rows = changes.get(name, [])
            if state is None and not rows:
                continue
            if billable(state if isinstance(state, str) else None, rows):
                counted += 1
        methods: Counter[str] = Counter()
        for row in self._audit(event="second_factor", result="success", since=start, until=end):
            methods[str(row.detail.get("method") or "unknown")] += 1
        passwordless = sum(1 for _ in self._audit(event="passwordless", result="success", since=start, until=end))
        ordered = dict(sorted(methods.items(), key=lambda kv: (-kv[1], kv[0])))
        return MonthUsage(month=month_of(start), start=start, end=end, enabled_users=counted,
                          authentications=ordered, passwordless=passwordless)


__all__ = ["BILLABLE_STATES", "MonthUsage", "Usage", "UsageError", "month_bounds", "month_of"]
