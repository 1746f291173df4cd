"""DESIGN.md section 5 invariants that no other test file pins directly."""

from __future__ import annotations

import hmac
import ipaddress
import logging

import pyotp
import pytest

from mfa_middleware.core.facts import client_address, parse_networks
from mfa_middleware.core.tokens import TokenCodec
from mfa_middleware.factors import totp as totp_module
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware

PASSWORD = "correct horse battery"


def test_totp_and_csrf_compare_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: object, b: object) -> bool:
        calls.append((a, b))
        return real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(totp_module.hmac, "compare_digest", spy)
    secret = pyotp.random_base32()
    now = 1_800_000_000.0
    assert totp_module.totp_match(secret, pyotp.TOTP(secret).at(now), now) is not None
    assert len(calls) == 3  # every candidate step compared, even after a match
    calls.clear()
    import mfa_middleware.core.tokens as tokens

    monkeypatch.setattr(tokens.secrets, "compare_digest", spy)
    codec = TokenCodec(("k" * 40,))
    assert codec.check_csrf(codec.make_csrf("abc"), "abc")
    assert calls, "CSRF bindings must be compared with compare_digest"


def test_passwords_are_argon2id_hashes(sqlite_url: str) -> None:
    mw = make_middleware(sqlite_url)
    user = mw.runtime.accounts.add("alice", actor="t", password=PASSWORD)
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    mw.runtime.close()


TRUSTED = parse_networks(("10.0.0.0/8", "127.0.0.1"))


@pytest.mark.parametrize(("peer", "header", "trusted", "expected"), [
    pytest.param("203.0.113.5", "1.2.3.4", TRUSTED, "203.0.113.5", id="untrusted-peer-header-ignored"),
    pytest.param("10.0.0.2", "198.51.100.7", TRUSTED, "198.51.100.7", id="trusted-proxy"),
    pytest.param("10.0.0.2", "1.2.3.4, 198.51.100.7, 10.0.0.3", TRUSTED, "198.51.100.7",
                 id="rightmost-untrusted-hop"),
    pytest.param("10.0.0.2", "not-an-ip", TRUSTED, "10.0.0.2", id="garbage-falls-back-to-peer"),
    pytest.param("10.0.0.2", "198.51.100.7", (), "10.0.0.2", id="nothing-trusted-by-default"),
    pytest.param("127.0.0.1", None, TRUSTED, "127.0.0.1", id="no-header"),
])
def test_forwarded_for_only_through_trusted_proxies(peer: str, header: str | None,
                                                   trusted: tuple[ipaddress.IPv4Network, ...], expected: str) -> None:
    assert client_address(peer, header, trusted) == expected


def test_x_forwarded_proto_only_from_trusted_proxies(sqlite_url: str) -> None:
    mw = make_middleware(sqlite_url, trusted_proxies=["10.0.0.0/8"])
    spoofed = Browser(mw)
    spoofed.remote_addr = "203.0.113.5"
    page = spoofed.get("/_mfa/login", headers={"X-Forwarded-Proto": "https"})
    assert not any(h.startswith("__Host-") for h in page.headers.getlist("Set-Cookie"))
    proxied = Browser(mw)
    proxied.remote_addr = "10.1.2.3"
    page = proxied.get("/_mfa/login", headers={"X-Forwarded-Proto": "https"})
    assert any(h.startswith("__Host-") and "Secure" in h for h in page.headers.getlist("Set-Cookie"))
    mw.runtime.close()


def test_nothing_secret_is_logged(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    mw = make_middleware(sqlite_url, clock)
    mw.runtime.accounts.add("alice", actor="t", password=PASSWORD)
    browser = Browser(mw)
    browser.login("alice", "a wrong password")
    secret = browser.sign_in_and_enroll("alice", PASSWORD, clock)
    clock.advance(30)
    code = pyotp.TOTP(secret).at(clock.now)
    again = Browser(mw)
    again.login("alice", PASSWORD)
    page = again.get("/_mfa/verify")
    again.post("/_mfa/verify", {"code": code, "csrf_token": csrf_of(page.text)})
    text = caplog.text
    assert "primary" in text  # the audit log did log the steps
    for needle in (PASSWORD, "a wrong password", secret, code, str(again.cookie("mfa_session"))):
        assert needle not in text
    mw.runtime.close()
