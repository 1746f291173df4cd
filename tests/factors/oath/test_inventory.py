"""The hardware token inventory file (mfa_middleware.factors.oath.inventory) against a corpus: the product's own
format, 60-second tokens, HOTP rows, a header in another order, CRLF line ends, a UTF-8 byte order mark, and every
kind of bad line with its line number and reason. The import step (users, serials in the store) is in
test_import.py."""

from __future__ import annotations

import pytest

from mfa_middleware.factors.oath.inventory import (InventoryError, ParsedInventory, Refused, TokenRow,
                                                   parse_inventory)

HEADER = "upn,serial number,secret key,time interval,manufacturer,model"
S1 = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # 160 bits
S2 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
S80 = "GEZDGNBVGY3TQOJQ"  # exactly 80 bits
S72 = "GEZDGNBVGY3TQOA"  # 72 bits ... as Base32 of 9 bytes: 15 chars


def parse(*lines: str, eol: str = "\n") -> ParsedInventory:
    return parse_inventory(eol.join(lines) + eol)


def only(parsed: ParsedInventory) -> TokenRow:
    assert not parsed.refused, parsed.refused
    (row,) = parsed.accepted
    return row


# -- good rows ---------------------------------------------------------------------------------------------------
def test_the_products_own_format() -> None:
    parsed = parse(HEADER,
                   f"alice@contoso.com,1234567,{S1},30,Contoso,Hardware token",
                   f"bob@contoso.com,1234568,{S2},60,Contoso,Hardware token 60")

    assert not parsed.refused
    alice, bob = parsed.accepted
    assert (alice.line, alice.upn, alice.serial, alice.kind, alice.period, alice.digits, alice.counter) == \
        (2, "alice@contoso.com", "1234567", "totp", 30, 6, None)
    assert (alice.manufacturer, alice.model) == ("Contoso", "Hardware token")
    assert alice.secret == S1
    assert (bob.line, bob.period) == (3, 60)


def test_the_secret_is_kept_out_of_the_repr() -> None:
    row = only(parse(HEADER, f"alice,1,{S1},30,,"))

    assert S1 not in repr(row)
    assert S1 not in repr(parse(HEADER, f"alice,1,{S1},30,,"))


@pytest.mark.parametrize("raw", [
    pytest.param(S1.lower(), id="lower-case"),
    pytest.param(" ".join(S1[i:i + 4] for i in range(0, len(S1), 4)), id="grouped-with-spaces"),
    pytest.param(S80 + "======", id="padded"),
])
def test_secrets_are_stored_canonical(raw: str) -> None:
    row = only(parse(HEADER, f"alice,1,{raw},30,,"))

    assert row.secret in (S1, S80)


def test_an_80_bit_secret_is_enough() -> None:
    assert only(parse(HEADER, f"alice,1,{S80},30,,")).secret == S80


def test_empty_upn_leaves_the_token_unassigned_and_optional_text_is_none() -> None:
    row = only(parse(HEADER, f",1,{S1},30,,"))

    assert row.upn is None and row.manufacturer is None and row.model is None


def test_upn_is_stored_as_a_username() -> None:
    assert only(parse(HEADER, f" Alice@Contoso.COM ,1,{S1},30,,")).upn == "alice@contoso.com"


@pytest.mark.parametrize("header", [
    pytest.param("Serial Number,Secret Key,UPN,Model,Manufacturer,Time Interval", id="other-order-title-case"),
    pytest.param("SERIAL_NUMBER , secret-key,upn,model,manufacturer,time  interval", id="underscores-spaces"),
])
def test_a_header_in_another_order(header: str) -> None:
    row = only(parse(header, f"77,{S1},carol,Model X,Maker,60"))

    assert (row.serial, row.upn, row.model, row.manufacturer, row.period) == ("77", "carol", "Model X", "Maker", 60)


def test_only_serial_and_secret_columns() -> None:
    row = only(parse("serial number,secret key,type", f"h1,{S1},hotp"))

    assert (row.kind, row.counter, row.upn) == ("hotp", 0, None)


def test_crlf_line_ends_and_a_byte_order_mark() -> None:
    text = "\r\n".join([HEADER, f"alice,1,{S1},30,Maker,Model", f"bob,2,{S2},60,Maker,Model"]) + "\r\n"

    parsed = parse_inventory(b"\xef\xbb\xbf" + text.encode("utf-8"))

    assert not parsed.refused
    assert [(r.line, r.serial, r.model) for r in parsed.accepted] == [(2, "1", "Model"), (3, "2", "Model")]


def test_a_bom_in_text_and_no_final_newline() -> None:
    parsed = parse_inventory("\ufeff" + HEADER + "\n" + f"alice,1,{S1},30,,")

    assert only(parsed).serial == "1"


def test_quoted_fields_and_blank_lines_keep_line_numbers() -> None:
    parsed = parse(HEADER, "", f'alice,"SN, 42",{S1},30,"Contoso, Inc.","Token ""Pro"""', "",
                   f"bob,43,{S2},30,,")

    assert [(r.line, r.serial) for r in parsed.accepted] == [(3, "SN, 42"), (5, "43")]
    assert parsed.accepted[0].manufacturer == "Contoso, Inc."
    assert parsed.accepted[0].model == 'Token "Pro"'


def test_utf8_text_in_names() -> None:
    row = only(parse_inventory(f"{HEADER}\nalice,1,{S1},30,Société Générale,Clé\n".encode()))

    assert (row.manufacturer, row.model) == ("Société Générale", "Clé")


# -- HOTP rows ---------------------------------------------------------------------------------------------------
def test_hotp_rows() -> None:
    parsed = parse(HEADER + ",type,counter,digits",
                   f"alice,H1,{S1},,Maker,Event token,hotp,,",
                   f"bob,H2,{S2},,Maker,Event token,HOTP,41,8",
                   f"carol,T1,{S1},60,Maker,Time token,,,8",
                   f"dave,T2,{S2},30,Maker,Time token,totp,,")

    assert not parsed.refused
    assert [(r.serial, r.kind, r.counter, r.period, r.digits) for r in parsed.accepted] == [
        ("H1", "hotp", 0, None, 6), ("H2", "hotp", 41, None, 8), ("T1", "totp", None, 60, 8),
        ("T2", "totp", None, 30, 6)]


# -- refused lines -----------------------------------------------------------------------------------------------
EXT = HEADER + ",type,counter,digits"


@pytest.mark.parametrize(("line", "reason", "fragment"), [
    pytest.param(f"alice,1,{S1[:-1]}1,30,,,,,", Refused.BAD_BASE32, "not Base32", id="bad-base32-digit"),
    pytest.param("alice,1,not base32!,30,,,,,", Refused.BAD_BASE32, "not Base32", id="bad-base32-punctuation"),
    pytest.param(f"alice,1,{S1}A,30,,,,,", Refused.BAD_BASE32, "not Base32", id="bad-base32-length"),
    pytest.param("alice,1,0123456789abcdef0123,30,,,,,", Refused.BAD_BASE32, "not Base32", id="hex-secret"),
    pytest.param(f"alice,1,{S72},30,,,,,", Refused.SECRET_TOO_SHORT, "72 bits", id="72-bit-secret"),
    pytest.param("alice,1,GEZDGNBV,30,,,,,", Refused.SECRET_TOO_SHORT, "40 bits", id="40-bit-secret"),
    pytest.param(f"alice,1,{'A' * 208},30,,,,,", Refused.SECRET_TOO_LONG, "1040 bits", id="huge-secret"),
    pytest.param(f"alice,1,{S1},45,,,,,", Refused.BAD_INTERVAL, "30 or 60", id="interval-45"),
    pytest.param(f"alice,1,{S1},30s,,,,,", Refused.BAD_INTERVAL, "30 or 60", id="interval-with-unit"),
    pytest.param(f"alice,1,{S1},-30,,,,,", Refused.BAD_INTERVAL, "30 or 60", id="interval-negative"),
    pytest.param(f"alice,1,{S1},,,,,,", Refused.MISSING_FIELD, "type to hotp", id="interval-missing"),
    pytest.param(f"alice,1,{S1},30,,,hotp,,", Refused.BAD_INTERVAL, "leave it empty", id="hotp-with-interval"),
    pytest.param(f"alice,,{S1},30,,,,,", Refused.MISSING_FIELD, "no serial", id="serial-missing"),
    pytest.param("alice,1,,30,,,,,", Refused.MISSING_FIELD, "no secret", id="secret-missing"),
    pytest.param(f"alice,{'9' * 65},{S1},30,,,,,", Refused.BAD_FIELD, "serial number", id="serial-too-long"),
    pytest.param(f"alice,S\u00e9rie,{S1},30,,,,,", Refused.BAD_FIELD, "serial number", id="serial-not-ascii"),
    pytest.param(f"alice,1,{S1},30,,,sms,,", Refused.BAD_FIELD, "totp or hotp", id="unknown-type"),
    pytest.param(f"alice,1,{S1},,,,hotp,-1,", Refused.BAD_FIELD, "whole number", id="negative-counter"),
    pytest.param(f"alice,1,{S1},,,,hotp,1e3,", Refused.BAD_FIELD, "whole number", id="counter-not-integer"),
    pytest.param(f"alice,1,{S1},,,,hotp,{'9' * 30},", Refused.BAD_FIELD, "whole number", id="counter-huge"),
    pytest.param(f"alice,1,{S1},30,,,totp,5,", Refused.BAD_FIELD, "HOTP tokens only", id="counter-on-totp"),
    pytest.param(f"alice,1,{S1},30,,,,,7", Refused.BAD_FIELD, "6 or 8", id="seven-digits"),
    pytest.param(f"bad user!,1,{S1},30,,,,,", Refused.BAD_FIELD, "not a valid user name", id="bad-upn"),
    pytest.param(f"alice,1,{S1},30,{'M' * 101},,,,", Refused.BAD_FIELD, "manufacturer", id="manufacturer-long"),
    pytest.param(f"alice,1,{S1},30,,Model\x07,,,", Refused.BAD_FIELD, "model", id="model-control-char"),
    pytest.param(f"alice,1,{S1},30", Refused.BAD_FIELD, "4 fields", id="too-few-fields"),
    pytest.param(f"alice,1,{S1},30,,,,,,extra", Refused.BAD_FIELD, "10 fields", id="too-many-fields"),
])
def test_refused_lines_say_why(line: str, reason: Refused, fragment: str) -> None:
    parsed = parse(EXT, f"zed,OK1,{S1},30,,,,,", line, f"zed,OK2,{S2},60,,,,,")

    assert [r.serial for r in parsed.accepted] == ["OK1", "OK2"]
    (refusal,) = parsed.refused
    assert refusal.line == 3
    assert refusal.reason is reason
    assert fragment in refusal.message
    assert S1 not in refusal.message and S1.lower() not in refusal.message


def test_duplicate_serials_in_the_file_refuse_the_later_lines() -> None:
    parsed = parse(HEADER, f"alice,A1,{S1},30,,", f"bob,B1,{S2},30,,", f"carol,A1,{S2},60,,",
                   f"dave,A1,{S1},30,,")

    assert [(r.line, r.serial, r.upn) for r in parsed.accepted] == [(2, "A1", "alice"), (3, "B1", "bob")]
    assert [(r.line, r.serial, r.reason) for r in parsed.refused] == [
        (4, "A1", Refused.DUPLICATE_IN_FILE), (5, "A1", Refused.DUPLICATE_IN_FILE)]
    assert "line 2" in parsed.refused[0].message


def test_a_refused_line_does_not_reserve_its_serial() -> None:
    parsed = parse(HEADER, "alice,A1,bad!,30,,", f"bob,A1,{S2},30,,")

    assert [(r.line, r.upn) for r in parsed.accepted] == [(3, "bob")]
    assert [(r.line, r.reason) for r in parsed.refused] == [(2, Refused.BAD_BASE32)]


def test_a_mixed_corpus_accounts_for_every_line() -> None:
    lines = [HEADER + ",type,counter"]
    lines += [f"user{i},S{i},{S1},{30 if i % 2 else 60},Maker,Model,," for i in range(50)]
    lines += [f"user{i},H{i},{S2},,Maker,Model,hotp,{i}" for i in range(10)]
    lines += [f"x,S3,{S1},30,Maker,Model,,", "x,BAD,XYZ1,30,Maker,Model,,", f"x,SHORT,{S72},30,,,,"]

    parsed = parse(*lines, eol="\r\n")

    assert parsed.lines == 63
    assert len(parsed.accepted) == 60
    assert sorted(r.reason.value for r in parsed.refused) == ["bad Base32", "duplicate serial in file",
                                                            "secret too short"]
    assert sum(1 for r in parsed.accepted if r.period == 60) == 25


# -- refused files -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "fragment"), [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"\n\n", "empty", id="blank-lines"),
    pytest.param(f"alice,1,{S1},30,,\n".encode(), "unknown column 'alice'", id="no-header"),
    pytest.param(b"upn,serial number,secret,time interval\n", "unknown column 'secret'", id="unknown-column"),
    pytest.param(b"upn,serial number,secret key,UPN\n", "named twice", id="repeated-column"),
    pytest.param(b"upn,secret key,time interval\n", "no 'serial number'", id="no-serial-column"),
    pytest.param(b"upn,serial number,,secret key\n", "no name", id="empty-column-name"),
    pytest.param(HEADER.encode("utf-16"), "not UTF-8", id="utf-16"),
    pytest.param(b"upn,serial number,secret key\nalice,\xff,x\n", "not UTF-8", id="latin-1-byte"),
    pytest.param(b"upn,serial number,secret key\x00\n", "NUL", id="nul"),
    pytest.param(b'upn,serial number,secret key\nalice,"1,x\n', "not valid CSV", id="unclosed-quote"),
])
def test_refused_files(data: bytes, fragment: str) -> None:
    with pytest.raises(InventoryError, match=fragment):
        parse_inventory(data)


def test_header_only_is_an_empty_inventory() -> None:
    parsed = parse(HEADER)

    assert parsed.accepted == () and parsed.refused == () and parsed.lines == 0
