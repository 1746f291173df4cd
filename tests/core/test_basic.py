"""The strict RFC 7617 parser of ``Authorization: Basic`` headers (pure: no store, no clock, no hashing)."""

from __future__ import annotations

import time
from base64 import b64encode

import pytest

from mfa_middleware.core import basic as basic_module
from mfa_middleware.core.basic import MAX_HEADER, BasicCredentials, parse_basic


def b64(raw: bytes) -> str:
    return b64encode(raw).decode("ascii")


def header(raw: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {b64(raw)}"


# base64 of b"ab?>:x" is "YWI/Pjp4" (with "/", which base64url writes "_"); of b"a>>:x" "YT4+Ong=" (with "+",
# which base64url writes "-"): see test_base64url_rows_really_differ_from_base64.
CORPUS = [
    # -- no credential at all ----------------------------------------------------------------------------------
    pytest.param(None, None, id="no-header"),
    pytest.param("", None, id="empty"),
    pytest.param("Basic", None, id="scheme-alone"),
    pytest.param("Basic ", None, id="scheme-and-space"),
    pytest.param("Basic    ", None, id="scheme-and-spaces"),
    # -- the scheme is case-insensitive; one or more spaces before the token -------------------------------------
    pytest.param(header(b"alice:pw"), ("alice", "pw"), id="Basic"),
    pytest.param(header(b"alice:pw", "basic"), ("alice", "pw"), id="basic-lower"),
    pytest.param(header(b"alice:pw", "BASIC"), ("alice", "pw"), id="BASIC-upper"),
    pytest.param(header(b"alice:pw", "BaSiC"), ("alice", "pw"), id="BaSiC-mixed"),
    pytest.param("Basic   " + b64(b"alice:pw"), ("alice", "pw"), id="several-spaces"),
    pytest.param("Basic\t" + b64(b"alice:pw"), None, id="tab-separator"),
    pytest.param("Basicx " + b64(b"alice:pw"), None, id="scheme-prefix-only"),
    pytest.param(" Basic " + b64(b"alice:pw"), None, id="leading-space"),
    # -- strict base64 -------------------------------------------------------------------------------------------
    pytest.param("Basic !!!!", None, id="bad-base64-punctuation"),
    pytest.param("Basic YWxpY2U6cHc=garbage", None, id="data-after-padding"),
    pytest.param("Basic " + b64(b"alice:pw") + "=", None, id="extra-padding"),
    pytest.param("Basic ====", None, id="padding-only"),
    pytest.param("Basic " + b64(b"ab?>:x").replace("/", "_"), None, id="base64url-underscore"),
    pytest.param("Basic " + b64(b"a>>:x").replace("+", "-"), None, id="base64url-dash"),
    pytest.param("Basic " + b64(b"alice:pw").rstrip("="), None, id="missing-padding"),
    pytest.param("Basic " + b64(b"alice:pw")[:4] + " " + b64(b"alice:pw")[4:], None, id="space-inside-token"),
    pytest.param("Basic " + b64(b"alice:pw")[:4] + "\t" + b64(b"alice:pw")[4:], None, id="tab-inside-token"),
    pytest.param("Basic " + b64(b"alice:pw") + " ", None, id="trailing-space"),
    pytest.param("Basic " + b64(b"alice:pw") + "\r\n", None, id="trailing-crlf"),
    # -- user-id and password ------------------------------------------------------------------------------------
    pytest.param(header(b"alice"), None, id="no-colon"),
    pytest.param(header(b"alice:pa:ss:word"), ("alice", "pa:ss:word"), id="several-colons"),
    pytest.param(header(b"alice::"), ("alice", ":"), id="password-is-a-colon"),
    pytest.param(header(b":pw"), None, id="empty-user"),
    pytest.param(header(b"alice:"), None, id="empty-password"),
    pytest.param(header(b":"), None, id="colon-alone"),
    pytest.param(header(b""), None, id="empty-token"),
    pytest.param(header(b"al\x00ice:pw"), None, id="nul-in-user"),
    pytest.param(header(b"alice:p\x00w"), None, id="nul-in-password"),
    pytest.param(header(b"alice\r\n:pw"), None, id="crlf-in-user"),
    pytest.param(header(b"alice:pw\n"), None, id="lf-in-password"),
    pytest.param(header(b"alice:p\tw"), None, id="tab-in-password"),
    pytest.param(header(b"alice:pw\x1b[0m"), None, id="escape-in-password"),
    pytest.param(header(b"alice\x7f:pw"), None, id="del-in-user"),
    pytest.param(header(b"alice:pass word"), ("alice", "pass word"), id="space-in-password"),
    # -- character set: UTF-8 only -------------------------------------------------------------------------------
    pytest.param(header(b"alice:\xa3"), None, id="latin1-pound"),
    pytest.param(header("alice:£".encode()), ("alice", "£"), id="utf8-pound"),
    pytest.param(header("zoë:pässwörd".encode()), ("zoë", "pässwörd"), id="utf8-user-and-password"),
    pytest.param(header(b"alice:\xff\xfe"), None, id="invalid-utf8"),
    # -- other schemes -------------------------------------------------------------------------------------------
    pytest.param("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln", None, id="bearer"),
    pytest.param("Bearer " + b64(b"alice:pw"), None, id="bearer-with-basic-token"),
    pytest.param('Digest username="alice", realm="Contoso", nonce="abc", uri="/dav/", response="0123"', None,
                 id="digest"),
    pytest.param("Negotiate YIIBhgYGKwYBBQUCoIIBejCCAXagMDAu", None, id="negotiate"),
    pytest.param(b64(b"alice:pw"), None, id="token-without-scheme"),
]


@pytest.mark.parametrize(("authorization", "expected"), CORPUS)
def test_parse_basic(authorization: str | None, expected: tuple[str, str] | None) -> None:
    parsed = parse_basic(authorization)
    if expected is None:
        assert parsed is None
    else:
        assert parsed == BasicCredentials(*expected)


def test_base64url_rows_really_differ_from_base64() -> None:
    # The two base64url rows above are only meaningful if the standard encoding has "/" and "+" in it.
    assert "/" in b64(b"ab?>:x") and "+" in b64(b"a>>:x")
    assert parse_basic("Basic " + b64(b"ab?>:x")) == BasicCredentials("ab?>", "x")
    assert parse_basic("Basic " + b64(b"a>>:x")) == BasicCredentials("a>>", "x")


def test_one_megabyte_header_refused_by_length_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_args: object, **_kwargs: object) -> bytes:
        raise AssertionError("an oversized header must be refused before any decoding")

    monkeypatch.setattr(basic_module, "b64decode", no_decoding)
    huge = "Basic " + b64(b"alice:" + b"x" * (1024 * 1024))
    assert len(huge) > 1024 * 1024
    started = time.perf_counter()
    assert parse_basic(huge) is None
    assert parse_basic("Basic " + "A" * (1024 * 1024)) is None
    assert parse_basic("basic " + "!" * (1024 * 1024)) is None
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize(("spaces", "accepted"), [
    pytest.param(3, True, id="exactly-MAX_HEADER"),
    pytest.param(4, False, id="MAX_HEADER-plus-one"),
])
def test_length_limit_boundary(spaces: int, accepted: bool) -> None:
    token = b64(b"alice:" + b"p" * (762 - len(b"alice:")))  # 762 bytes: 1016 characters of base64
    authorization = "Basic" + " " * spaces + token
    assert len(authorization) == MAX_HEADER + spaces - 3
    parsed = parse_basic(authorization)
    if accepted:
        assert parsed is not None and parsed.username == "alice" and len(parsed.password) == 756
    else:
        assert parsed is None


def test_repr_hides_the_password() -> None:
    creds = BasicCredentials("alice", "s3cret-app-password")
    assert "s3cret" not in repr(creds)
    assert "s3cret" not in str(creds)
    assert "s3cret" not in f"{creds!r} {[creds]} {creds}"
    assert "alice" in repr(creds)
