"""TOTP verification: RFC 6238 appendix B vectors through our verifier, drift, and one-time use."""

from __future__ import annotations

import base64

import pyotp
import pytest

from mfa_middleware.factors.totp import normalize_code, totp_match

SHA1_SEED = base64.b32encode(b"12345678901234567890").decode()
SHA256_SEED = base64.b32encode(b"12345678901234567890123456789012").decode()
SHA512_SEED = base64.b32encode(b"1234567890123456789012345678901234567890123456789012345678901234").decode()

# (time, 8-digit code) per digest, RFC 6238 appendix B.
VECTORS = [
    pytest.param(59, "94287082", "sha1", SHA1_SEED, id="sha1-59"),
    pytest.param(1111111109, "07081804", "sha1", SHA1_SEED, id="sha1-1111111109"),
    pytest.param(1111111111, "14050471", "sha1", SHA1_SEED, id="sha1-1111111111"),
    pytest.param(1234567890, "89005924", "sha1", SHA1_SEED, id="sha1-1234567890"),
    pytest.param(2000000000, "69279037", "sha1", SHA1_SEED, id="sha1-2000000000"),
    pytest.param(20000000000, "65353130", "sha1", SHA1_SEED, id="sha1-20000000000"),
    pytest.param(59, "46119246", "sha256", SHA256_SEED, id="sha256-59"),
    pytest.param(2000000000, "90698825", "sha256", SHA256_SEED, id="sha256-2000000000"),
    pytest.param(20000000000, "77737706", "sha256", SHA256_SEED, id="sha256-20000000000"),
    pytest.param(59, "90693936", "sha512", SHA512_SEED, id="sha512-59"),
    pytest.param(20000000000, "47863826", "sha512", SHA512_SEED, id="sha512-20000000000"),
]


@pytest.mark.parametrize(("when", "code", "digest", "seed"), VECTORS)
def test_rfc6238_eight_digits(when: int, code: str, digest: str, seed: str) -> None:
    assert totp_match(seed, code, when, digits=8, drift=0, digest=digest) == when // 30


@pytest.mark.parametrize(("when", "code", "digest", "seed"), VECTORS)
def test_rfc6238_six_digits(when: int, code: str, digest: str, seed: str) -> None:
    assert totp_match(seed, code[-6:], when, digits=6, drift=0, digest=digest) == when // 30


@pytest.mark.parametrize(("when", "code", "digest", "seed"), VECTORS)
def test_rfc6238_wrong_code_refused(when: int, code: str, digest: str, seed: str) -> None:
    wrong = str((int(code) + 1) % 10**8).zfill(8)
    assert totp_match(seed, wrong, when, digits=8, drift=0, digest=digest) is None


def test_drift_one_step_either_side_and_no_further() -> None:
    now = 1_800_000_015.0
    totp = pyotp.TOTP(SHA1_SEED)
    step = int(now // 30)
    for offset in (-1, 0, 1):
        assert totp_match(SHA1_SEED, totp.at(now + 30 * offset), now) == step + offset
    for offset in (-2, 2):
        assert totp_match(SHA1_SEED, totp.at(now + 30 * offset), now) is None
    assert totp_match(SHA1_SEED, totp.at(now + 30), now, drift=0) is None


@pytest.mark.parametrize("code", [
    pytest.param("", id="empty"),
    pytest.param("12345", id="too-short"),
    pytest.param("1234567", id="too-long"),
    pytest.param("12345a", id="letter"),
    pytest.param("１２３４５６", id="fullwidth-digits"),
    pytest.param("123456\x00", id="nul"),
    pytest.param("9" * 10_000, id="huge"),
])
def test_malformed_codes_never_match(code: str) -> None:
    assert totp_match(SHA1_SEED, code, 1_800_000_000.0) is None


def test_spaces_and_dashes_are_ignored() -> None:
    now = 1_800_000_000.0
    code = pyotp.TOTP(SHA1_SEED).at(now)
    assert totp_match(SHA1_SEED, f"{code[:3]} {code[3:]}", now) is not None
    assert totp_match(SHA1_SEED, f"{code[:3]}-{code[3:]}", now) is not None
    assert normalize_code(" 12 34 56 ") == "123456"
