"""Listings for the command line: one page as a table, or every matching row streamed as CSV, JSON or JSON lines.

Rules:

- **Bounded memory.** Rows come from a generator that reads the store one page at a time (keyset pagination, so
  every page costs the same however deep it is); nothing is collected except the rows of one table page.
- **Tables are one page.** A table shows ``--limit`` rows (default :data:`TABLE_LIMIT`) and says how to ask for the
  next page (``--after``/``--before`` with the last key shown). CSV and JSON stream every matching row unless
  ``--limit`` is given.
- **Machine formats are plain.** Times are ISO 8601 in UTC (``2026-12-02T22:27:55Z``), missing values are empty
  (CSV) or ``null`` (JSON), lists are comma-separated (CSV) or arrays (JSON).
- **CSV is safe to open in a spreadsheet.** A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
  return is prefixed with ``'`` (OWASP "CSV injection"): user agents and names come from users and clients.
- **Progress** of a long stream goes to standard error, and only when it is a terminal.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TextIO, TypeVar

from rich.console import Console
from rich.table import Table

T = TypeVar("T")
K = TypeVar("K")

#: rows a table shows when ``--limit`` is not given
TABLE_LIMIT = 50
#: rows read from the store per page when streaming
BATCH = 1000
FORMATS = ("table", "csv", "json")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Column(Generic[T]):
    """One column: its header, the machine value of a row, and how a table shows it (``kind``: text, time, bool,
    list or count)."""

    header: str
    value: Callable[[T], Any]
    kind: str = "text"
    empty: str = "-"  # what a table shows for no value

    @property
    def key(self) -> str:
        return self.header.lower().replace(" ", "_")


#: an audit event's columns, for every export and listing of the audit log (the command line and the admin portal)
AUDIT_COLUMNS: tuple[Column[Any], ...] = (
    Column("Id", lambda e: e.id, "count"),
    Column("Time", lambda e: e.at, "time"),
    Column("User", lambda e: e.username),
    Column("Event", lambda e: e.event),
    Column("Result", lambda e: e.result),
    Column("Actor", lambda e: e.actor),
    Column("Client", lambda e: e.client_ip),
    Column("User agent", lambda e: e.user_agent),
    Column("Detail", lambda e: ", ".join(f"{k}={v}" for k, v in e.detail.items()) or None),
    Column("Request", lambda e: e.request_id),
)


def paged(fetch: Callable[[K | None, int], Sequence[T]], key: Callable[[T], K], *, limit: int | None = None,
          batch: int = BATCH) -> Iterator[T]:
    """Every row ``fetch(after, n)`` gives, page by page: ``after`` is the key of the last row of the previous page
    (None for the first). Stops after ``limit`` rows when it is given."""
    after: K | None = None
    left = limit
    while left is None or left > 0:
        size = batch if left is None else min(batch, left)
        page = fetch(after, size)
        yield from page
        if left is not None:
            left -= len(page)
        if len(page) < size:
            return
        after = key(page[-1])


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    if t > 1e17:  # "until unlocked"
        return "9999-12-31T23:59:59Z"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_time(t: float | None) -> str:
    if not t:
        return "-"
    if t > 1e17:
        return "until unlocked"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _machine(value: Any, kind: str) -> Any:
    if kind == "time":
        return iso(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _shown(value: Any, kind: str, empty: str = "-") -> str:
    if value is None or value == "" or value == ():
        return empty
    if kind == "time":
        return local_time(value)
    if kind == "bool":
        return "yes" if value else ""
    if kind == "list":
        return ", ".join(value)
    return str(value)


class _Progress:
    """A row counter on standard error while a stream runs (only on a terminal)."""

    def __init__(self, err: Console, what: str) -> None:
        self.err, self.what, self.count = err, what, 0
        self.status = err.status(f"0 {what}") if err.is_terminal else None

    def __enter__(self) -> _Progress:
        if self.status is not None:
            self.status.__enter__()
        return self

    def step(self) -> None:
        self.count += 1
        if self.status is not None and self.count % 1000 == 0:
            self.status.update(f"{self.count:,} {self.what}")

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)
            self.err.print(f"{self.count:,} {self.what}", highlight=False)


def stream(rows: Iterable[T], columns: Sequence[Column[T]], fmt: str, out: TextIO, *, err: Console,
           what: str = "rows") -> int:
    """Write every row as CSV (with a header), a JSON array (one object per line) or JSON lines; returns the
    count."""
    with _Progress(err, what) as progress:
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow([c.key for c in columns])
            for row in rows:
                writer.writerow([_cell(_machine(c.value(row), c.kind)) for c in columns])
                progress.step()
        elif fmt in ("json", "jsonl"):
            array = fmt == "json"
            if array:
                out.write("[")
            for row in rows:
                obj = {c.key: _machine(c.value(row), c.kind) for c in columns}
                if array:
                    out.write("\n" if progress.count == 0 else ",\n")
                out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
                if not array:
                    out.write("\n")
                progress.step()
            if array:
                out.write("\n]\n" if progress.count else "]\n")
        else:
            raise ValueError(f"unknown format {fmt!r}")
        out.flush()
        return progress.count


def table_page(rows: Iterable[T], columns: Sequence[Column[T]], limit: int, console: Console, *, title: str,
               next_hint: Callable[[T], str] | None = None, empty: str = "Nothing matches.") -> int:
    """Print at most ``limit`` rows as a table, then how to see the next page when there is one."""
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column.header, overflow="fold")
    shown: list[T] = []
    more = False
    for row in rows:
        if len(shown) == limit:
            more = True
            break
        shown.append(row)
        table.add_row(*(_shown(c.value(row), c.kind, c.empty) for c in columns))
    if not shown:
        console.print(empty)
        return 0
    console.print(table)
    if more and next_hint is not None:
        console.print(f"More: {next_hint(shown[-1])}", highlight=False, soft_wrap=True)
    return len(shown)


__all__ = ["AUDIT_COLUMNS", "BATCH", "Column", "FORMATS", "TABLE_LIMIT", "iso", "local_time", "paged", "stream",
           "table_page"]
