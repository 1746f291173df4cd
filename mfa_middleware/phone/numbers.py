"""Phone numbers as the product accepts, stores and shows them.

A number a person typed at enrollment goes through :func:`parse_phone` once; what comes out is a frozen
:class:`PhoneNumber` whose :attr:`~PhoneNumber.e164` (``+447400123456``) is the only form that is stored
(encrypted) and handed to a gateway. Everywhere except at entry the number is shown masked
(:attr:`PhoneNumber.masked`, :func:`mask_e164`): ``+44 •••• ••3456``.

Rules, in the order they are checked (each refusal raises :class:`PhoneNumberError` whose text may be shown to
the person who typed the number):

1. At most 64 characters and at most 20 digits, checked before any parsing, so a 10 kB paste costs nothing.
2. Only digits, spaces and the punctuation people write numbers with (``+ - . ( ) / [ ] ~`` and their
   full-width forms, dashes, no-break spaces). Letters are refused outright, even though the parsing library
   would turn ``1-800-FLOWERS`` into digits: a number read back to a user must be the one they typed. ``*``,
   ``#``, ``;`` and ``ext`` are refused too; an office extension has a field of its own.
3. Digits of any script (full-width ``４``, Arabic-Indic ``٤``, Devanagari ``४`` ...) are accepted and read as
   their ASCII values, as the parsing library does for some scripts; the stored E.164 is always ASCII. A phone
   keyboard set to Arabic types Arabic-Indic digits, and refusing them would only confuse.
4. Without a leading ``+`` (or the region's international prefix, ``00`` in most of Europe) a number is read
   in ``default_region``; with no default region it must start with ``+``.
5. Emergency numbers (``112``, ``911``, ``999`` ...) and every other short number (service codes, short codes)
   are refused, before validity, with their own message.
6. The number must be valid for its country (``phonenumbers.is_valid_number``: right length, allocated range).
7. The country must be in ``allowed_countries``: ``()`` allows none ("Phone numbers are not enabled on this
   site"), ``("*",)`` allows every country, otherwise ISO 3166 region codes (case-insensitive). The region is
   the number's own (``+1 416`` is CA, not US), so an allow-list of ``("US",)`` does not let Canada in.
8. Premium-rate, shared-cost, voicemail-access, pager and unknown-type numbers are refused for any use (toll
   fraud pays out on premium-rate calls); with ``need_mobile`` (text messages) only ``MOBILE`` and
   ``FIXED_LINE_OR_MOBILE`` (countries such as the US where the ranges are shared) are accepted.

Nothing here logs, and the error messages never repeat the number.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import Enum

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType, shortnumberinfo

MAX_CHARS = 64
MAX_DIGITS = 20
MASK = "\u2022"  # bullet

# The separators people type between digit groups: ASCII, full-width, dashes and the spaces of all kinds.
_PUNCTUATION = frozenset("+-.()/[]~\uff0b\uff0d\uff0e\uff08\uff09\uff0f\uff3b\uff3d\uff5e"
                         "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\u2053\u223c")


class NumberKind(str, Enum):
    """What kind of line a number is, as the numbering plan of its country says."""

    MOBILE = "mobile"
    FIXED_LINE = "fixed_line"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"  # the plan does not tell them apart (US, CA, ...)
    TOLL_FREE = "toll_free"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal_number"
    UAN = "uan"  # universal access number (a company's single number)


_KINDS: dict[int, NumberKind] = {
    PhoneNumberType.MOBILE: NumberKind.MOBILE,
    PhoneNumberType.FIXED_LINE: NumberKind.FIXED_LINE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: NumberKind.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE: NumberKind.TOLL_FREE,
    PhoneNumberType.VOIP: NumberKind.VOIP,
    PhoneNumberType.PERSONAL_NUMBER: NumberKind.PERSONAL_NUMBER,
    PhoneNumberType.UAN: NumberKind.UAN,
}
TEXTABLE_KINDS = frozenset({NumberKind.MOBILE, NumberKind.FIXED_LINE_OR_MOBILE})


class PhoneNumberError(ValueError):
    """A typed number was refused; ``str(error)`` is a sentence meant for the person who typed it."""


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """One parsed, checked number. Build it with :func:`parse_phone` (user input) or :func:`phone_from_e164`."""

    e164: str  # "+447400123456": ASCII, the only stored form
    region: str  # ISO 3166 region code of the number itself ("GB", "CA"); "001" for non-geographic numbers
    country_code: int  # 44
    number_type: NumberKind

    @property
    def masked(self) -> str:
        """The number as shown after entry: ``+44 •••• ••3456``."""
        return mask_e164(self.e164)

    @property
    def international(self) -> str:
        """The full number in international format (``+44 7400 123456``), for the enrollment screen only."""
        return phonenumbers.format_number(phonenumbers.parse(self.e164, None), PhoneNumberFormat.INTERNATIONAL)

    @property
    def can_receive_texts(self) -> bool:
        return self.number_type in TEXTABLE_KINDS

    def __repr__(self) -> str:  # keep full numbers out of tracebacks and debug logs
        return f"PhoneNumber({self.masked!r}, region={self.region!r}, number_type={self.number_type.value})"


def parse_phone(raw: str, *, default_region: str | None = None, allowed_countries: tuple[str, ...] = (),
                need_mobile: bool = False) -> PhoneNumber:
    """Parse what a person typed into a :class:`PhoneNumber`, or raise :class:`PhoneNumberError`.

    ``default_region`` (ISO code, case-insensitive) reads numbers typed without a country code;
    ``allowed_countries`` is the configured allow-list (see the module docstring); ``need_mobile`` is true for
    a number that must receive text messages. The rules are listed in the module docstring.
    """
    if not allowed_countries:
        raise PhoneNumberError("Phone numbers are not enabled on this site.")
    if not isinstance(raw, str):
        raise PhoneNumberError("Enter a phone number.")
    if len(raw) > MAX_CHARS:
        raise PhoneNumberError(f"That is too long for a phone number (at most {MAX_DIGITS} digits).")
    text = _ascii_digits(raw.strip())
    if not text:
        raise PhoneNumberError("Enter a phone number.")
    digits = sum(ch.isdigit() for ch in text)
    if digits > MAX_DIGITS:
        raise PhoneNumberError(f"That is too long for a phone number (at most {MAX_DIGITS} digits).")
    if digits == 0:
        raise PhoneNumberError("Enter a phone number: digits, with spaces or dashes if you like.")
    region = default_region.upper() if default_region else None
    try:
        number = phonenumbers.parse(text, region, keep_raw_input=False)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE and text.startswith("+"):
            raise PhoneNumberError("That country code does not exist: check the number.") from None
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise PhoneNumberError("Include the country code, starting with + (for example +44 for the UK)."
                                   ) from None
        raise PhoneNumberError("That does not look like a phone number.") from None
    if number.extension:
        raise PhoneNumberError("Enter the number without an extension.")
    number_region = phonenumbers.region_code_for_number(number)
    if _is_short_number(number, number_region or region):
        raise PhoneNumberError("Emergency and short numbers cannot be used: enter a full phone number.")
    if not phonenumbers.is_valid_number(number):
        raise PhoneNumberError("That is not a valid phone number: check the digits and the country code.")
    if number_region is None:  # valid numbers always have one; be safe
        raise PhoneNumberError("That is not a valid phone number: check the digits and the country code.")
    allowed = {c.upper() for c in allowed_countries}
    if "*" not in allowed and number_region not in allowed:
        raise PhoneNumberError(f"Phone numbers from {_country_name(number, number_region)} cannot be used on "
                               "this site.")
    kind = _KINDS.get(phonenumbers.number_type(number))
    if kind is None:
        raise PhoneNumberError("This kind of number (premium rate, shared cost, pager or voicemail) cannot be "
                               "used: enter a mobile or landline number.")
    if need_mobile and kind not in TEXTABLE_KINDS:
        raise PhoneNumberError("This looks like a landline: text messages need a mobile number.")
    return PhoneNumber(e164=phonenumbers.format_number(number, PhoneNumberFormat.E164), region=number_region,
                       country_code=int(number.country_code or 0), number_type=kind)


def phone_from_e164(e164: str) -> PhoneNumber:
    """Rebuild a :class:`PhoneNumber` from a stored E.164 string (no allow-list or type policy is applied).

    Raises :class:`PhoneNumberError` if ``e164`` is not a canonical, valid E.164 number.
    """
    if not _is_e164_shape(e164):
        raise PhoneNumberError("not an E.164 number")
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        raise PhoneNumberError("not an E.164 number") from None
    region = phonenumbers.region_code_for_number(number)
    if not phonenumbers.is_valid_number(number) or region is None or \
            phonenumbers.format_number(number, PhoneNumberFormat.E164) != e164:
        raise PhoneNumberError("not a valid E.164 number")
    kind = _KINDS.get(phonenumbers.number_type(number), NumberKind.FIXED_LINE)
    return PhoneNumber(e164=e164, region=region, country_code=int(number.country_code or 0), number_type=kind)


def is_e164(value: str) -> bool:
    """True for a canonical, valid E.164 number (``+`` then at most 15 ASCII digits, valid for its country)."""
    try:
        phone_from_e164(value)
    except PhoneNumberError:
        return False
    return True


def mask_e164(e164: str) -> str:
    """``+447400123456`` -> ``+44 •••• ••3456``: the country code, then the national number in its usual
    groups with every digit masked but the last four.

    At least four digits stay hidden, so a short national number shows fewer than four (``+683 ••••`` for a
    four-digit number). Input that is not E.164 is masked whole except a leading ``+`` and the last two
    characters, so even a corrupted value never shows in full.
    """
    if not _is_e164_shape(e164):
        return MASK * max(0, len(e164) - 2) + e164[-2:] if len(e164) > 4 else MASK * len(e164)
    try:
        number = phonenumbers.parse(e164, None)
        formatted = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        formatted = e164
        prefix_len = 1
    else:
        prefix = f"+{number.country_code}"
        if not formatted.startswith(prefix):
            formatted, prefix_len = e164, 1
        else:
            prefix_len = len(prefix)
    national_digits = sum(ch.isdigit() for ch in formatted[prefix_len:])
    visible = max(0, min(4, national_digits - 4))
    to_mask = national_digits - visible
    out = list(formatted)
    for i in range(prefix_len, len(out)):
        if to_mask == 0:
            break
        if out[i].isdigit():
            out[i] = MASK
            to_mask -= 1
    return "".join(out)


def _is_e164_shape(value: str) -> bool:
    return (isinstance(value, str) and 4 <= len(value) <= 16 and value[0] == "+" and value[1:].isascii()
            and value[1:].isdigit() and value[1] != "0")


def _ascii_digits(text: str) -> str:
    """Map decimal digits of every script to ASCII; refuse characters that are not digits or separators."""
    out = []
    for ch in text:
        if ch.isascii() and ch.isdigit():
            out.append(ch)
        elif ch.isdecimal():
            out.append(str(unicodedata.decimal(ch)))
        elif ch.isspace() and ch not in "\r\n\v\f" or ch in _PUNCTUATION:
            out.append(" " if ch.isspace() else ch)
        elif ch.isascii() and ch.isalpha() or ch.isalpha():
            raise PhoneNumberError("A phone number cannot contain letters: enter digits only.")
        else:
            raise PhoneNumberError("Enter a phone number using digits, spaces, dashes or brackets only.")
    return "".join(out).strip()


def _is_short_number(number: phonenumbers.PhoneNumber, region: str | None) -> bool:
    national = str(number.national_number)
    if len(national) <= 6 and region:
        if shortnumberinfo.is_emergency_number(national, region):
            return True
        if shortnumberinfo.is_possible_short_number_for_region(number, region) and \
                shortnumberinfo.is_valid_short_number_for_region(number, region):
            return True
    return shortnumberinfo.is_valid_short_number(number) and not phonenumbers.is_valid_number(number)


def _country_name(number: phonenumbers.PhoneNumber, region: str) -> str:
    from phonenumbers import geocoder  # imported on this rare path only: loading it takes a third of a second

    name = geocoder.country_name_for_number(number, "en")
    return f"{name} ({region})" if name else region
