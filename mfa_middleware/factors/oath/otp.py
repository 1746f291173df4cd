"""One-time passwords of OATH hardware tokens: HOTP (RFC 4226) and TOTP (RFC 6238), as pure functions.

Nothing here reads a clock or a store: the caller passes ``now`` (TOTP) or the token's stored counter (HOTP) and
gets back the step or counter that matched, which it must then consume atomically in the store
(:meth:`mfa_middleware.store.Store.consume_oath_counter`, :meth:`~mfa_middleware.store.Store.consume_oath_step`).
A code is accepted once only because of that conditional UPDATE, never because of anything in this module.

Rules:

- The secret is the token's Base32 key (the form the inventory stores, encrypted); HMAC-SHA1 as hardware tokens
  use; 6 or 8 digits.
- HOTP: the stored ``counter`` is the NEXT counter value the token is expected to show (0 for a new token). A code
  is looked for at ``counter`` and the following values, ``window`` values in all (RFC 4226 section 7.4, the
  look-ahead parameter *s*; default 10). The matched counter is returned; the store then moves ``counter`` past it.
- HOTP resynchronisation (RFC 4226 section 7.4, "ask for another OTP"): two codes the token showed one after the
  other are looked for as a consecutive pair at ``counter`` .. ``counter + window - 1`` (default 100 values). The
  counter of the SECOND code is returned; the store then moves ``counter`` past it, only if the first is unused.
- TOTP: 30- or 60-second steps, ``drift`` steps either side of ``now`` (default 1); the matched step is returned.
- Every candidate in a window is computed and compared in constant time, whether or not an earlier one matched,
  so the time taken says nothing about which candidate (if any) matched. Only the code's length and whether it is
  all digits (public facts) end a check early.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from typing import Final

from ..totp import normalize_code, totp_match

#: look-ahead of an ordinary HOTP check (RFC 4226 section 7.4 parameter *s*)
HOTP_WINDOW: Final = 10
#: how far ahead a resynchronisation looks for its two consecutive codes
RESYNC_WINDOW: Final = 100
#: TOTP steps accepted either side of the current one
TOTP_DRIFT: Final = 1
DIGITS: Final = (6, 8)
PERIODS: Final = (30, 60)
#: RFC 4226 section 4 R6: at least 128 bits, 160 recommended; the product we follow accepts 80-bit keys, the
#: least we take (NIST SP 800-63B: an OTP device's key has at least 112 bits of security; old tokens have 80)
MIN_SECRET_BYTES: Final = 10
MAX_SECRET_BYTES: Final = 128
_DIGITS_ONLY = re.compile(r"^[0-9]+$")


def decode_base32(secret_b32: str) -> bytes:
    """The key bytes of a Base32 secret: case, spaces, dashes and missing ``=`` padding are forgiven.

    Raises ``ValueError`` when it is not Base32."""
    cleaned = re.sub(r"[\s-]", "", secret_b32).upper().rstrip("=")
    if not cleaned:
        raise ValueError("the secret is empty")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(padded, casefold=False)
    except (binascii.Error, ValueError):
        raise ValueError("the secret is not Base32 (letters A-Z and digits 2-7)") from None


def normalize_base32(secret_b32: str) -> str:
    """The canonical stored form of a Base32 secret: upper case, no spaces, no padding."""
    return base64.b32encode(decode_base32(secret_b32)).decode("ascii").rstrip("=")


def _check_digits(digits: int) -> None:
    if digits not in DIGITS:
        raise ValueError(f"an OATH token shows 6 or 8 digits, not {digits}")


def hotp_code(key: bytes, counter: int, digits: int = 6) -> str:
    """HOTP(K, C) of RFC 4226 section 5.3: HMAC-SHA1, dynamic truncation, ``digits`` decimal digits."""
    _check_digits(digits)
    if counter < 0:
        raise ValueError("an HOTP counter is never negative")
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    binary = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10 ** digits).zfill(digits)


def _clean(code: str, digits: int) -> bytes | None:
    code = normalize_code(code)
    if len(code) != digits or not _DIGITS_ONLY.match(code):
        return None
    return code.encode("ascii")


def hotp_match(secret_b32: str, code: str, counter: int, *, digits: int = 6, window: int = HOTP_WINDOW) -> int | None:
    """The counter in ``counter`` .. ``counter + window - 1`` whose code is ``code`` (the lowest, if several), or
    ``None``. Every candidate is compared in constant time."""
    _check_digits(digits)
    if window < 1:
        raise ValueError("the HOTP look-ahead window is at least 1")
    wanted = _clean(code, digits)
    if wanted is None:
        return None
    key = decode_base32(secret_b32)
    found: int | None = None
    for candidate in range(counter, counter + window):
        if hmac.compare_digest(hotp_code(key, candidate, digits).encode("ascii"), wanted) and found is None:
            found = candidate
    return found


def hotp_resync(secret_b32: str, first: str, second: str, counter: int, *, digits: int = 6,
                window: int = RESYNC_WINDOW) -> int | None:
    """Resynchronise: the counter of ``second`` when ``first`` and ``second`` are the codes of two consecutive
    counters, the first of them in ``counter`` .. ``counter + window - 1``; else ``None``.

    Every candidate pair is computed and compared in constant time (both comparisons are always made)."""
    _check_digits(digits)
    if window < 1:
        raise ValueError("the resynchronisation window is at least 1")
    one, two = _clean(first, digits), _clean(second, digits)
    if one is None or two is None:
        return None
    key = decode_base32(secret_b32)
    codes = [hotp_code(key, c, digits).encode("ascii") for c in range(counter, counter + window + 1)]
    found: int | None = None
    for i in range(window):
        first_ok = hmac.compare_digest(codes[i], one)
        second_ok = hmac.compare_digest(codes[i + 1], two)
        if first_ok & second_ok and found is None:
            found = counter + i + 1
    return found


def totp_step(secret_b32: str, code: str, now: float, *, period: int = 30, digits: int = 6,
              drift: int = TOTP_DRIFT) -> int | None:
    """The time step (``now // period`` give or take ``drift``) whose code is ``code``, or ``None``.

    30- and 60-second tokens; each candidate step is compared in constant time
    (:func:`mfa_middleware.factors.totp.totp_match`)."""
    _check_digits(digits)
    if period not in PERIODS:
        raise ValueError(f"an OATH TOTP token has a 30 or 60 second period, not {period}")
    return totp_match(normalize_base32(secret_b32), code, now, digits=digits, period=period, drift=drift)
