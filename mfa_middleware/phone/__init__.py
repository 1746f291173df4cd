"""Phone numbers: parsing what people type into checked E.164 numbers, and masking them for display.

See :mod:`mfa_middleware.phone.numbers` for the rules. The gateways that send texts and place calls live in
:mod:`mfa_middleware.gateways.phone`.
"""

from __future__ import annotations

from .numbers import (
    MAX_CHARS,
    MAX_DIGITS,
    TEXTABLE_KINDS,
    NumberKind,
    PhoneNumber,
    PhoneNumberError,
    is_e164,
    mask_e164,
    parse_phone,
    phone_from_e164,
)

__all__ = ["MAX_CHARS", "MAX_DIGITS", "TEXTABLE_KINDS", "NumberKind", "PhoneNumber", "PhoneNumberError",
           "is_e164", "mask_e164", "parse_phone", "phone_from_e164"]
