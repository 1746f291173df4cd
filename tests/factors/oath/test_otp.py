"""OATH one-time codes (mfa_middleware.factors.oath.otp): RFC 4226 and RFC 6238 vectors, the HOTP look-ahead
window, resynchronisation by two consecutive codes, 30- and 60-second TOTP with one step of drift, 6 and 8 digits,
and every candidate compared in constant time."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from typing import Any

import pyotp
import pytest

from mfa_middleware.factors.oath.otp import (decode_base32, hotp_code, hotp_match, hotp_resync, normalize_base32,
                                             totp_step)

RFC_KEY = b"12345678901234567890"
RFC_SECRET = base64.b32encode(RFC_KEY).decode()  # GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ
#: RFC 4226 Appendix D: HOTP values of the secret "12345678901234567890" for counts 0-9
RFC4226 = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_000.0  # aligned to 30 and 60 second steps


# -- HOTP: RFC 4226 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [pytest.param(c, id=f"count-{c}") for c in range(10)])
def test_rfc4226_appendix_d_vectors(count: int) -> None:
    assert hotp_code(RFC_KEY, count) == RFC4226[count]


@pytest.mark.parametrize("count", [pytest.param(c, id=f"count-{c}") for c in range(10)])
def test_rfc4226_vectors_through_the_verifier_from_a_fresh_token(count: int) -> None:
    # A fresh token (counter 0) pressed count+1 times: within the default look-ahead of 10, the match says where.
    assert hotp_match(RFC_SECRET, RFC4226[count], 0) == count


def test_rfc4226_vectors_in_sequence_each_moves_the_counter() -> None:
    counter = 0
    for count, code in enumerate(RFC4226):
        matched = hotp_match(RFC_SECRET, code, counter, window=1)
        assert matched == count
        counter = matched + 1
        # the code just used is behind the counter now: never again
        assert hotp_match(RFC_SECRET, code, counter) is None


@pytest.mark.parametrize(("counter", "code", "window", "expected"), [
    pytest.param(0, RFC4226[9], 10, 9, id="last-of-the-window"),
    pytest.param(0, RFC4226[9], 9, None, id="one-past-the-window"),
    pytest.param(5, RFC4226[4], 10, None, id="behind-the-counter"),
    pytest.param(5, RFC4226[5], 1, 5, id="exactly-expected-window-1"),
    pytest.param(3, RFC4226[7], 10, 7, id="ahead-within"),
])
def test_hotp_look_ahead_window(counter: int, code: str, window: int, expected: int | None) -> None:
    assert hotp_match(RFC_SECRET, code, counter, window=window) == expected


def test_hotp_default_window_is_ten() -> None:
    codes = [hotp_code(decode_base32(SECRET), c) for c in range(20)]

    assert hotp_match(SECRET, codes[9], 0) == 9
    assert hotp_match(SECRET, codes[10], 0) is None


@pytest.mark.parametrize("typed", [
    pytest.param("755 224", id="space"),
    pytest.param("755-224", id="dash"),
    pytest.param(" 755224 ", id="padded"),
])
def test_hotp_accepts_what_people_type(typed: str) -> None:
    assert hotp_match(RFC_SECRET, typed, 0) == 0


@pytest.mark.parametrize("typed", [
    pytest.param("", id="empty"),
    pytest.param("75522", id="short"),
    pytest.param("7552244", id="long"),
    pytest.param("75522a", id="letter"),
    pytest.param("７５５２２４", id="fullwidth-digits"),
    pytest.param("000000", id="wrong"),
])
def test_hotp_refuses_malformed_or_wrong_codes(typed: str) -> None:
    assert hotp_match(RFC_SECRET, typed, 0) is None


def test_hotp_eight_digits() -> None:
    # RFC 4226's truncated values (Appendix D) modulo 10^8
    assert hotp_code(RFC_KEY, 0, 8) == "84755224"
    assert hotp_match(RFC_SECRET, "84755224", 0, digits=8) == 0
    assert hotp_match(RFC_SECRET, "755224", 0, digits=8) is None
    assert hotp_match(RFC_SECRET, "84755224", 0, digits=6) is None


@pytest.mark.parametrize("digits", [pytest.param(d, id=f"{d}-digits") for d in (4, 7, 10)])
def test_other_digit_counts_are_errors(digits: int) -> None:
    with pytest.raises(ValueError, match="6 or 8 digits"):
        hotp_match(RFC_SECRET, "1" * digits, 0, digits=digits)


@pytest.mark.parametrize("count", [pytest.param(c, id=f"count-{c}") for c in (0, 1, 9, 1000, 2**32 + 5)])
def test_hotp_agrees_with_pyotp(count: int) -> None:
    for digits in (6, 8):
        assert hotp_code(decode_base32(SECRET), count, digits) == pyotp.HOTP(SECRET, digits=digits).at(count)


# -- HOTP resynchronisation ---------------------------------------------------------------------------------------
def _codes(n: int, digits: int = 6) -> list[str]:
    key = decode_base32(SECRET)
    return [hotp_code(key, c, digits) for c in range(n)]


def test_resync_by_two_consecutive_codes_far_ahead() -> None:
    codes = _codes(120)

    assert hotp_match(SECRET, codes[57], 0) is None  # out of the ordinary window
    assert hotp_resync(SECRET, codes[57], codes[58], 0) == 58  # the counter of the second code


@pytest.mark.parametrize(("first", "second", "counter", "expected"), [
    pytest.param(0, 1, 0, 1, id="at-the-counter"),
    pytest.param(99, 100, 0, 100, id="first-at-the-window-edge"),
    pytest.param(100, 101, 0, None, id="first-past-the-window"),
    pytest.param(40, 42, 0, None, id="not-consecutive"),
    pytest.param(41, 40, 0, None, id="reversed"),
    pytest.param(40, 40, 0, None, id="same-code-twice"),
    pytest.param(9, 10, 10, None, id="first-already-used"),
    pytest.param(10, 11, 10, 11, id="both-unused"),
])
def test_resync_window(first: int, second: int, counter: int, expected: int | None) -> None:
    codes = _codes(130)

    assert hotp_resync(SECRET, codes[first], codes[second], counter) == expected


def test_resync_window_is_configurable_and_digits_apply() -> None:
    codes = _codes(300, digits=8)

    assert hotp_resync(SECRET, codes[250], codes[251], 0, digits=8) is None
    assert hotp_resync(SECRET, codes[250], codes[251], 0, digits=8, window=251) == 251


def test_resync_refuses_malformed_codes() -> None:
    codes = _codes(3)

    assert hotp_resync(SECRET, codes[0], "", 0) is None
    assert hotp_resync(SECRET, "abc", codes[1], 0) is None


# -- TOTP ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("period", [pytest.param(30, id="30s"), pytest.param(60, id="60s")])
@pytest.mark.parametrize(("offset", "expected_delta"), [
    pytest.param(0, 0, id="now"),
    pytest.param(-1, -1, id="one-step-behind"),
    pytest.param(1, 1, id="one-step-ahead"),
    pytest.param(-2, None, id="two-steps-behind"),
    pytest.param(2, None, id="two-steps-ahead"),
])
def test_totp_drift(period: int, offset: int, expected_delta: int | None) -> None:
    step = int(NOW // period)
    code = pyotp.TOTP(SECRET, interval=period).generate_otp(step + offset)

    found = totp_step(SECRET, code, NOW, period=period)

    assert found == (None if expected_delta is None else step + expected_delta)


def test_a_60_second_code_is_not_a_30_second_code() -> None:
    code60 = pyotp.TOTP(SECRET, interval=60).generate_otp(int(NOW // 60))

    assert totp_step(SECRET, code60, NOW, period=60) == int(NOW // 60)
    assert totp_step(SECRET, code60, NOW, period=30) is None


def test_totp_rfc6238_sha1_vector() -> None:
    # RFC 6238 Appendix B, SHA-1, T = 59 s: 94287082 (8 digits, 30 s steps)
    assert totp_step(RFC_SECRET, "94287082", 59, digits=8) == 1
    assert totp_step(RFC_SECRET, "94287082", 59 + 30 * 5, digits=8) is None


@pytest.mark.parametrize("period", [pytest.param(p, id=f"{p}s") for p in (0, 15, 45, 120)])
def test_totp_other_periods_are_errors(period: int) -> None:
    with pytest.raises(ValueError, match="30 or 60"):
        totp_step(SECRET, "123456", NOW, period=period)


def test_totp_secret_in_lower_case_with_spaces() -> None:
    code = pyotp.TOTP(SECRET).at(NOW)

    assert totp_step("jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp", code, NOW) == int(NOW // 30)


# -- Base32 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "canonical"), [
    pytest.param("JBSWY3DPEHPK3PXP", "JBSWY3DPEHPK3PXP", id="plain"),
    pytest.param("jbswy3dpehpk3pxp", "JBSWY3DPEHPK3PXP", id="lower"),
    pytest.param("JBSW Y3DP-EHPK 3PXP", "JBSWY3DPEHPK3PXP", id="grouped"),
    pytest.param("GEZDGNBVGY======", "GEZDGNBVGY", id="padded"),
    pytest.param("GEZDGNBVGY", "GEZDGNBVGY", id="unpadded"),
])
def test_normalize_base32(raw: str, canonical: str) -> None:
    assert normalize_base32(raw) == canonical


@pytest.mark.parametrize("raw", [
    pytest.param("", id="empty"),
    pytest.param("JBSWY3DPEHPK3PX1", id="digit-1"),
    pytest.param("JBSWY3DPEHPK3PX0", id="digit-0"),
    pytest.param("A", id="impossible-length"),
    pytest.param("JBSW!3DP", id="punctuation"),
])
def test_bad_base32_is_a_clear_error(raw: str) -> None:
    with pytest.raises(ValueError, match="Base32|empty"):
        decode_base32(raw)


# -- constant time ---------------------------------------------------------------------------------------------
class CountingCompare:
    """Wraps hmac.compare_digest to count the comparisons a check makes."""

    def __init__(self) -> None:
        self.calls = 0
        self._compare = hmac.compare_digest

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls += 1
        return self._compare(a, b)


@pytest.mark.parametrize(("check", "expected_calls"), [
    pytest.param(lambda: hotp_match(RFC_SECRET, RFC4226[0], 0), 10, id="hotp-match-at-first-candidate"),
    pytest.param(lambda: hotp_match(RFC_SECRET, "000000", 0), 10, id="hotp-no-match"),
    pytest.param(lambda: hotp_resync(RFC_SECRET, RFC4226[0], RFC4226[1], 0), 200, id="resync-match-first-pair"),
    pytest.param(lambda: hotp_resync(RFC_SECRET, "000000", "000000", 0), 200, id="resync-no-match"),
    pytest.param(lambda: totp_step(SECRET, pyotp.TOTP(SECRET).generate_otp(int(NOW // 30) - 1), NOW), 3,
                 id="totp-match-at-first-candidate"),
    pytest.param(lambda: totp_step(SECRET, "000000", NOW, period=60), 3, id="totp-no-match"),
])
def test_every_candidate_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch,
                                                      check: Callable[[], object], expected_calls: int) -> None:
    counter = CountingCompare()
    monkeypatch.setattr(hmac, "compare_digest", counter)  # the module otp.py and totp.py compare with

    check()

    assert counter.calls == expected_calls
