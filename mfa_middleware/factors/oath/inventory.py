"""The hardware token inventory file: parse a CSV of OATH tokens and say, line by line, what was refused and why.

The format is the one the product we follow uses for hardware tokens::

    upn,serial number,secret key,time interval,manufacturer,model
    alice@contoso.com,1234567,2234567abcdef2234567abcdef,60,Contoso,Hardware token

Rules:

- The file is UTF-8, with or without a byte order mark; lines end in LF or CRLF; fields follow RFC 4180 quoting.
- The first non-blank line is a header naming the columns, in any order, matched without regard to case, spaces
  around them, or ``_``/``-`` written for a space (``Serial_Number`` is ``serial number``). ``serial number`` and
  ``secret key`` are required; ``upn``, ``time interval``, ``manufacturer`` and ``model`` are optional; a column
  the importer does not know, or one named twice, refuses the whole file (a typo would otherwise lose data).
- Extensions for HOTP (the product's own format has TOTP tokens only), in optional columns:

  - ``type``: ``totp`` or ``hotp``; empty or absent means ``totp``.
  - ``counter``: an HOTP token's next counter value (default 0: a new token); refused on a TOTP row.
  - ``digits``: 6 (default) or 8.

  A TOTP row needs ``time interval`` 30 or 60; an HOTP row must leave it empty. So a file in the product's own
  format imports unchanged, and an HOTP token says so explicitly instead of being guessed from a blank cell.
- ``secret key`` is Base32 (case, spaces and ``=`` padding forgiven), at least 80 bits (16 characters) and at most
  1024 bits; it is stored encrypted (see :class:`mfa_middleware.secretbox.SecretBox`) and never appears in a report.
- ``upn`` names the user the token is assigned to (the stored form of a username: ``Alice@Contoso.com`` is
  ``alice@contoso.com``); empty: the token goes to the pool, unassigned. Whether the user exists is checked by the
  import step against the store (:meth:`mfa_middleware.services.oath_tokens.OathTokens.import_rows`), not here.
- A serial number is at most 64 printable characters, compared exactly; a serial seen earlier in the file refuses
  the later line (the first stays). Blank lines are skipped.

:func:`parse_inventory` is pure: text in, accepted rows and refusals out. Nothing is stored by it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from ...primary.usernames import canonical_username
from ...store.sql import OathKind
from .otp import DIGITS, MAX_SECRET_BYTES, MIN_SECRET_BYTES, PERIODS, decode_base32, normalize_base32

#: canonical column names, in the product's order, then our extensions
COLUMNS: Final = ("upn", "serial number", "secret key", "time interval", "manufacturer", "model", "type", "counter",
                  "digits")
REQUIRED: Final = ("serial number", "secret key")
MAX_SERIAL: Final = 64
MAX_TEXT: Final = 100
MAX_COUNTER: Final = 2 ** 62
_PRINTABLE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")


class InventoryError(ValueError):
    """The whole file is refused (not UTF-8, no header, an unknown or repeated column); the message says why."""


class Refused(str, Enum):
    """Why one line was not imported."""

    MISSING_FIELD = "missing field"
    BAD_FIELD = "bad field"
    BAD_BASE32 = "bad Base32"
    SECRET_TOO_SHORT = "secret too short"
    SECRET_TOO_LONG = "secret too long"
    BAD_INTERVAL = "bad time interval"
    DUPLICATE_IN_FILE = "duplicate serial in file"
    ALREADY_IN_STORE = "serial already imported"
    UNKNOWN_USER = "unknown user"


@dataclass(frozen=True, slots=True)
class Refusal:
    line: int  # 1-based line number in the file
    serial: str | None  # as far as it could be read
    reason: Refused
    message: str  # what was wrong, for a person; never the secret


@dataclass(frozen=True, slots=True)
class TokenRow:
    """One accepted line: everything the store needs, the secret in its canonical Base32 form."""

    line: int
    serial: str
    kind: OathKind
    secret: str = field(repr=False)
    digits: int = 6
    period: int | None = None  # TOTP only
    counter: int | None = None  # HOTP only
    upn: str | None = None  # canonical username, or None: unassigned
    manufacturer: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedInventory:
    accepted: tuple[TokenRow, ...]
    refused: tuple[Refusal, ...]

    @property
    def lines(self) -> int:
        """Data lines read (accepted plus refused)."""
        return len(self.accepted) + len(self.refused)


def _column_key(raw: str) -> str:
    return re.sub(r"[\s_-]+", " ", raw.strip()).lower()


def _header(row: list[str], line: int) -> dict[str, int]:
    positions: dict[str, int] = {}
    for index, raw in enumerate(row):
        key = _column_key(raw)
        if not key:
            raise InventoryError(f"line {line}: column {index + 1} of the header has no name")
        if key not in COLUMNS:
            raise InventoryError(f"line {line}: unknown column {raw.strip()!r}; the columns are "
                                 f"{', '.join(COLUMNS)}")
        if key in positions:
            raise InventoryError(f"line {line}: column {key!r} is named twice")
        positions[key] = index
    missing = [c for c in REQUIRED if c not in positions]
    if missing:
        raise InventoryError(f"line {line}: the header has no {' and no '.join(repr(m) for m in missing)} column "
                             f"(the first line must name the columns, e.g. {','.join(COLUMNS[:6])})")
    return positions


class _Bad(Exception):
    def __init__(self, reason: Refused, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _text(value: str, name: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_TEXT or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _Bad(Refused.BAD_FIELD, f"{name} is longer than {MAX_TEXT} characters or holds control characters")
    return value


def _row(cells: dict[str, str], line: int) -> TokenRow:
    serial = cells.get("serial number", "").strip()
    if not serial:
        raise _Bad(Refused.MISSING_FIELD, "no serial number")
    if len(serial) > MAX_SERIAL or not _PRINTABLE.match(serial):
        raise _Bad(Refused.BAD_FIELD, f"the serial number must be 1-{MAX_SERIAL} printable ASCII characters")
    kind_raw = cells.get("type", "").strip().lower() or "totp"
    if kind_raw not in ("totp", "hotp"):
        raise _Bad(Refused.BAD_FIELD, f"type must be totp or hotp, not {cells['type'].strip()!r}")
    kind: OathKind = "hotp" if kind_raw == "hotp" else "totp"
    raw_secret = cells.get("secret key", "")
    if not raw_secret.strip():
        raise _Bad(Refused.MISSING_FIELD, "no secret key")
    try:
        key = decode_base32(raw_secret)
    except ValueError:
        raise _Bad(Refused.BAD_BASE32, "the secret key is not Base32 (letters A-Z and digits 2-7)") from None
    if len(key) < MIN_SECRET_BYTES:
        raise _Bad(Refused.SECRET_TOO_SHORT, f"the secret key has {len(key) * 8} bits; at least "
                                             f"{MIN_SECRET_BYTES * 8} are needed")
    if len(key) > MAX_SECRET_BYTES:
        raise _Bad(Refused.SECRET_TOO_LONG, f"the secret key has {len(key) * 8} bits; at most "
                                            f"{MAX_SECRET_BYTES * 8} are taken")
    interval = cells.get("time interval", "").strip()
    period: int | None = None
    if kind == "totp":
        if not interval:
            raise _Bad(Refused.MISSING_FIELD, "no time interval (30 or 60; for an HOTP token set type to hotp)")
        if interval not in {str(p) for p in PERIODS}:
            raise _Bad(Refused.BAD_INTERVAL, f"the time interval must be 30 or 60 seconds, not {interval!r}")
        period = int(interval)
    elif interval:
        raise _Bad(Refused.BAD_INTERVAL, "an HOTP token has no time interval: leave it empty")
    counter_raw = cells.get("counter", "").strip()
    counter: int | None = None
    if kind == "hotp":
        if counter_raw and (not counter_raw.isascii() or not counter_raw.isdigit() or int(counter_raw) > MAX_COUNTER):
            raise _Bad(Refused.BAD_FIELD, f"the counter must be a whole number from 0, not {counter_raw!r}")
        counter = int(counter_raw) if counter_raw else 0
    elif counter_raw:
        raise _Bad(Refused.BAD_FIELD, "a counter is for HOTP tokens only (set type to hotp)")
    digits_raw = cells.get("digits", "").strip() or "6"
    if digits_raw not in {str(d) for d in DIGITS}:
        raise _Bad(Refused.BAD_FIELD, f"digits must be 6 or 8, not {digits_raw!r}")
    upn_raw = cells.get("upn", "").strip()
    upn: str | None = None
    if upn_raw:
        upn = canonical_username(upn_raw)
        if upn is None:
            raise _Bad(Refused.BAD_FIELD, f"{upn_raw[:MAX_TEXT]!r} is not a valid user name")
    return TokenRow(line=line, serial=serial, kind=kind, secret=normalize_base32(raw_secret), digits=int(digits_raw),
                    period=period, counter=counter, upn=upn, manufacturer=_text(cells.get("manufacturer", ""),
                                                                                  "manufacturer"),
                    model=_text(cells.get("model", ""), "model"))


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number where the record starts, fields) for each non-blank CSV record."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InventoryError(f"line {reader.line_num}: not valid CSV ({exc})") from None
        if any(f.strip() for f in fields):
            yield line, fields
        line = reader.line_num + 1


def parse_inventory(data: bytes | str) -> ParsedInventory:
    """Parse an inventory file. Raises :class:`InventoryError` when the whole file is refused; otherwise every
    data line is either accepted or refused with its line number and reason."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InventoryError(f"the file is not UTF-8 (byte {exc.start + 1})") from None
    else:
        text = data.removeprefix("\ufeff")
    if "\x00" in text:
        raise InventoryError("the file holds NUL characters: it is not a CSV text file")
    records = _records(text)
    first = next(records, None)
    if first is None:
        raise InventoryError("the file is empty: the first line must name the columns, e.g. "
                             f"{','.join(COLUMNS[:6])}")
    positions = _header(first[1], first[0])
    accepted: list[TokenRow] = []
    refused: list[Refusal] = []
    first_line_of: dict[str, int] = {}
    for line, fields in records:
        serial_at = positions["serial number"]
        serial = fields[serial_at].strip() if serial_at < len(fields) else ""
        shown = serial[:MAX_SERIAL] or None
        if len(fields) != len(positions):
            refused.append(Refusal(line, shown, Refused.BAD_FIELD, f"{len(fields)} fields; the header names "
                                                                   f"{len(positions)}"))
            continue
        cells = {name: fields[index] for name, index in positions.items()}
        try:
            row = _row(cells, line)
        except _Bad as bad:
            refused.append(Refusal(line, shown, bad.reason, bad.message))
            continue
        if row.serial in first_line_of:
            refused.append(Refusal(line, row.serial, Refused.DUPLICATE_IN_FILE,
                                   f"serial {row.serial} is on line {first_line_of[row.serial]} already"))
            continue
        first_line_of[row.serial] = line
        accepted.append(row)
    return ParsedInventory(tuple(accepted), tuple(refused))
