"""A corpus of typed phone numbers: what is accepted (and as which E.164), what is refused and with which message."""

from __future__ import annotations

import time

import pytest

from mfa_middleware.phone import NumberKind, PhoneNumberError, is_e164, mask_e164, parse_phone, phone_from_e164

ALL = ("*",)
UK_MOBILE = "+447400123456"


@pytest.mark.parametrize(("raw", "region", "e164"), [
    pytest.param("07400 123456", "GB", UK_MOBILE, id="uk-national-mobile"),
    pytest.param("07400123456", "gb", UK_MOBILE, id="region-lower-case"),
    pytest.param("+44 7400 123456", None, UK_MOBILE, id="international-spaces"),
    pytest.param("+44 (0)7400 123456", None, UK_MOBILE, id="trunk-zero-in-brackets"),
    pytest.param("+44 (0)20 7946 0958", None, "+442079460958", id="london-landline-punctuation"),
    pytest.param("+44.7400.123.456", None, UK_MOBILE, id="dots"),
    pytest.param("+44-7400-123-456", None, UK_MOBILE, id="dashes"),
    pytest.param("  +447400123456\t", None, UK_MOBILE, id="surrounding-whitespace"),
    pytest.param("+44\u00a07400\u2009123456", None, UK_MOBILE, id="no-break-and-thin-spaces"),
    pytest.param("00447400123456", "DE", UK_MOBILE, id="international-prefix-00"),
    pytest.param("(201) 555-0123", "US", "+12015550123", id="us-national"),
    pytest.param("06 12 34 56 78", "FR", "+33612345678", id="french-mobile"),
    pytest.param("01512 3456789", "DE", "+4915123456789", id="german-mobile"),
    pytest.param("\uff0b\uff14\uff14\uff17\uff14\uff10\uff10\uff11\uff12\uff13\uff14\uff15\uff16", None, UK_MOBILE,
                 id="fullwidth-digits-accepted"),
    pytest.param("+\u0664\u0664\u0667\u0664\u0660\u0660\u0661\u0662\u0663\u0664\u0665\u0666", None, UK_MOBILE,
                 id="arabic-indic-digits-accepted"),
    pytest.param("+\u096a\u096a\u096d\u096a\u0966\u0966\u0967\u0968\u0969\u096a\u096b\u096c", None, UK_MOBILE,
                 id="devanagari-digits-accepted"),
])
def test_accepted(raw: str, region: str | None, e164: str) -> None:
    number = parse_phone(raw, default_region=region, allowed_countries=ALL, need_mobile=False)
    assert number.e164 == e164 and number.e164.isascii()


@pytest.mark.parametrize(("raw", "kwargs", "message"), [
    pytest.param("", {}, "Enter a phone number", id="empty"),
    pytest.param("   \t ", {}, "Enter a phone number", id="whitespace-only"),
    pytest.param("+", {}, "Enter a phone number: digits", id="plus-only"),
    pytest.param("---", {}, "Enter a phone number: digits", id="punctuation-only"),
    pytest.param("1-800-FLOWERS", {"default_region": "US"}, "cannot contain letters", id="vanity-letters"),
    pytest.param("+44 7400 123456 ext 5", {}, "cannot contain letters", id="extension-words"),
    pytest.param("+44 7400 123456 x5", {}, "cannot contain letters", id="extension-x"),
    pytest.param("+44 74OO 123456", {}, "cannot contain letters", id="letter-o-for-zero"),
    pytest.param("+44 7400 12345б", {}, "cannot contain letters", id="cyrillic-letter"),
    pytest.param("+44 7400 123456#", {}, "digits, spaces, dashes", id="hash"),
    pytest.param("*21*+447400123456", {}, "digits, spaces, dashes", id="star-code"),
    pytest.param("+44\n7400123456", {}, "digits, spaces, dashes", id="newline"),
    pytest.param("+44 7400 123456;", {}, "digits, spaces, dashes", id="semicolon"),
    pytest.param("+4474001234⁵⁶", {}, "digits, spaces, dashes", id="superscript-digits"),
    pytest.param("1" * 30, {}, "too long", id="thirty-digits"),
    pytest.param("+" + "1" * 21, {}, "too long", id="twenty-one-digits"),
    pytest.param("+44 " + " " * 70 + "7400123456", {}, "too long", id="sixty-five-chars"),
    pytest.param("7400123456", {}, "Include the country code", id="no-country-no-region"),
    pytest.param("+999 123456789", {}, "country code does not exist", id="unknown-country-code"),
    pytest.param("+44 7400 12345", {}, "not a valid phone number", id="one-digit-short"),
    pytest.param("+44 7700 900123", {}, "not a valid phone number", id="unallocated-range"),
    pytest.param("112", {"default_region": "GB"}, "Emergency and short numbers", id="emergency-112"),
    pytest.param("911", {"default_region": "US"}, "Emergency and short numbers", id="emergency-911"),
    pytest.param("999", {"default_region": "GB"}, "Emergency and short numbers", id="emergency-999"),
    pytest.param("+44 999", {}, "Emergency and short numbers", id="emergency-with-country-code"),
    pytest.param("+1 911", {}, "Emergency and short numbers", id="emergency-911-international"),
    pytest.param("88888", {"default_region": "US"}, "Emergency and short numbers", id="sms-short-code"),
    pytest.param("+44 20 7946 0958", {"need_mobile": True}, "This looks like a landline: text messages need a "
                 "mobile number", id="landline-where-mobile-needed"),
    pytest.param("+44 909 876 5432", {}, "premium rate", id="premium-rate"),
    pytest.param("+49 30 123456", {"allowed_countries": ("GB", "fr")}, "Phone numbers from Germany (DE) cannot be "
                 "used on this site", id="country-outside-allow-list"),
    pytest.param("+1 416 555 0123", {"allowed_countries": ("US",)}, "Canada (CA)", id="canada-is-not-us"),
    pytest.param(UK_MOBILE, {"allowed_countries": ()}, "Phone numbers are not enabled on this site",
                 id="empty-allow-list"),
])
def test_refused(raw: str, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"default_region": None, "allowed_countries": ALL, "need_mobile": False, **kwargs}
    with pytest.raises(PhoneNumberError) as info:
        parse_phone(raw, **args)  # type: ignore[arg-type]
    assert message in str(info.value)
    digits = "".join(ch for ch in raw if ch.isascii() and ch.isdigit())
    if len(digits) > 6:
        assert digits not in str(info.value), "the message never repeats the number"


def test_allow_list_is_case_insensitive_and_star_allows_all() -> None:
    assert parse_phone(UK_MOBILE, allowed_countries=("gb",)).region == "GB"
    assert parse_phone("+33612345678", allowed_countries=ALL).region == "FR"


@pytest.mark.parametrize(("raw", "kind"), [
    pytest.param(UK_MOBILE, NumberKind.MOBILE, id="mobile"),
    pytest.param("+12015550123", NumberKind.FIXED_LINE_OR_MOBILE, id="us-shared-range"),
])
def test_text_capable_kinds(raw: str, kind: NumberKind) -> None:
    number = parse_phone(raw, allowed_countries=ALL, need_mobile=True)
    assert number.number_type is kind and number.can_receive_texts


def test_landline_is_fine_for_calls() -> None:
    number = parse_phone("+44 20 7946 0958", allowed_countries=ALL, need_mobile=False)
    assert number.number_type is NumberKind.FIXED_LINE and not number.can_receive_texts


def test_huge_input_is_refused_quickly() -> None:
    for raw in ("1" * 10_000, "+44 " + "7" * 10_000, "a" * 10_000, " " * 10_000):
        started = time.monotonic()
        with pytest.raises(PhoneNumberError, match="too long"):
            parse_phone(raw, allowed_countries=ALL)
        assert time.monotonic() - started < 1, "refused before parsing (well under a second)"


@pytest.mark.parametrize(("e164", "masked"), [
    pytest.param(UK_MOBILE, "+44 •••• ••3456", id="uk-mobile"),
    pytest.param("+442079460958", "+44 •• •••• 0958", id="london"),
    pytest.param("+12015550123", "+1 •••-•••-0123", id="us"),
    pytest.param("+4915123456789", "+49 •••• •••6789", id="germany"),
    pytest.param("+6837290", "+683 ••••", id="four-digit-national-shows-none"),
    pytest.param("+4470", "+44 ••", id="too-short-all-hidden"),
    pytest.param("garbage-value", "•••••••••••ue", id="not-e164"),
])
def test_masking(e164: str, masked: str) -> None:
    assert mask_e164(e164) == masked


def test_the_number_repr_is_masked() -> None:
    number = parse_phone(UK_MOBILE, allowed_countries=ALL)
    assert UK_MOBILE not in repr(number) and number.masked in repr(number)
    assert number.international == "+44 7400 123456"
    assert number.country_code == 44


@pytest.mark.parametrize(("value", "ok"), [
    pytest.param(UK_MOBILE, True, id="canonical"),
    pytest.param("+44 7400 123456", False, id="spaces"),
    pytest.param("+4407400123456", False, id="trunk-zero"),
    pytest.param("447400123456", False, id="no-plus"),
    pytest.param("+\uff14\uff14\uff17\uff14\uff10\uff10\uff11\uff12\uff13\uff14\uff15\uff16", False, id="fullwidth"),
])
def test_e164_round_trip(value: str, ok: bool) -> None:
    assert is_e164(value) is ok
    if ok:
        assert phone_from_e164(value).e164 == value
    else:
        with pytest.raises(PhoneNumberError):
            phone_from_e164(value)
