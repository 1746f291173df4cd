"""Passkeys (the ``webauthn`` method): configuration checks, the posted-response parser, and the store's
single-use ceremonies and monotonic sign count on SQLite and PostgreSQL. The full ceremonies run in Chromium in
tests/e2e/test_passkeys_browser.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mfa_middleware.config import ConfigError
from mfa_middleware.factors.webauthn import MAX_RESPONSE_CHARS, BadResponse, parse_response
from mfa_middleware.store import Store
from tests.support.mfa import START, make_config


def webauthn_config(**values: object) -> object:
    return make_config("sqlite://", methods={"enabled": ["webauthn"], "webauthn": values})


@pytest.mark.parametrize(("values", "message"), [
    pytest.param({}, "origins: required", id="no-origins"),
    pytest.param({"origins": ["http://intranet.example.com"]}, "not an https origin", id="plain-http"),
    pytest.param({"origins": ["https://intranet.example.com/app"]}, "not an https origin", id="path"),
    pytest.param({"origins": ["https://127.0.0.1"]}, "IP address", id="ip"),
    pytest.param({"origins": ["https://intranet.example.com"], "rp_id": "other.example.com"}, "does not fit",
                 id="rp-id-not-a-suffix"),
    pytest.param({"origins": ["https://a.example.com", "https://b.example.org"]}, "does not fit",
                 id="second-origin-elsewhere"),
    pytest.param({"origins": ["https://a.example.com"], "rp_id": "com"}, "not a registrable domain",
                 id="top-level-domain"),
    pytest.param({"origins": ["https://a.example.com"], "user_verification": "discouraged"}, "must be one of",
                 id="bad-uv"),
    pytest.param({"origins": ["https://a.example.com"], "aaguids": ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]},
                 "needs attestation", id="allow-list-without-attestation"),
    pytest.param({"origins": ["https://a.example.com"], "attestation": "direct", "aaguids": ["yubikey"]},
                 "not an AAGUID", id="bad-aaguid"),
    pytest.param({"origins": ["https://a.example.com"], "colour": "blue"}, "unknown key", id="unknown-key"),
])
def test_configuration_errors(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        webauthn_config(**values)


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda d: d / "missing.pem", "does not exist", id="missing"),
    pytest.param(lambda d: (d / "junk.pem").write_text("not a certificate") and d / "junk.pem",
                 "not a PEM certificate file", id="unparsable"),
    pytest.param(lambda d: (d / "empty").mkdir() or d / "empty", "holds no .pem or .crt file", id="empty-folder"),
])
def test_attestation_roots_errors(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    """The roots are read at start-up: a path that gives no certificate is an error naming the key."""
    with pytest.raises(ConfigError, match=r"methods\.webauthn\.attestation_roots: .*" + message):
        webauthn_config(origins=["https://a.example.com"], attestation="direct",
                        attestation_roots=str(make(tmp_path)))


def test_attestation_roots_need_direct_attestation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="need attestation"):
        webauthn_config(origins=["https://a.example.com"], attestation_roots=str(tmp_path))


def test_passwordless_needs_the_method() -> None:
    with pytest.raises(ConfigError, match="passwordless sign-in needs"):
        make_config("sqlite://", methods={"enabled": ["totp"], "webauthn": {"passwordless": True}})


def test_configuration_defaults() -> None:
    config = webauthn_config(origins=["https://sso.example.com", "https://www.sso.example.com"],
                             rp_id="sso.example.com")
    w = config.methods.webauthn  # type: ignore[attr-defined]
    assert (w.rp_id, w.user_verification, w.attestation) == ("sso.example.com", "preferred", "none")
    assert (w.passwordless, w.attestation_roots) == (False, ())
    assert webauthn_config(origins=["http://localhost:8080"]).methods.webauthn.rp_id == "localhost"  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw", [
    pytest.param("", id="empty"),
    pytest.param("{", id="not-json"),
    pytest.param("[1, 2]", id="not-an-object"),
    pytest.param("[" * 5000 + "]" * 5000, id="deep-nesting"),
    pytest.param(json.dumps({"id": "x" * MAX_RESPONSE_CHARS}), id="huge"),
    pytest.param(json.dumps({"id": "AA", "rawId": "AA", "type": "public-key", "response": {}}), id="no-fields"),
    pytest.param(json.dumps({"id": 1, "rawId": None, "response": "x"}), id="wrong-types"),
])
@pytest.mark.parametrize("purpose", ["register", "authenticate"])
def test_malformed_responses_are_refused_with_a_reason(raw: str, purpose: str) -> None:
    with pytest.raises(BadResponse):
        parse_response(raw, purpose)


def test_ceremony_is_answered_once_and_used_once(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.upgrade()
        user = store.create_user("dana", now=START)
        method_id = store.add_method(user.id, "webauthn", "Laptop", None, now=START)
        cid = store.add_webauthn_challenge(user.id, method_id, "attempt-1", "authenticate", "Y2hhbGxlbmdl",
                                           "tok", now=START, expires_at=START + 300)
        assert store.use_webauthn_challenge(cid, now=START) is False  # nothing answered yet
        assert store.answer_webauthn_challenge(cid, "{}", now=START + 1) is True
        assert store.answer_webauthn_challenge(cid, "{}", now=START + 1) is False  # a second answer changes nothing
        assert store.use_webauthn_challenge(cid, now=START + 2) is True
        assert store.use_webauthn_challenge(cid, now=START + 2) is False  # replay
        late = store.add_webauthn_challenge(user.id, method_id, "attempt-2", "authenticate", "Y2g", "tok2",
                                            now=START, expires_at=START + 300)
        assert store.answer_webauthn_challenge(late, "{}", now=START + 300) is False  # expired

        row = store.add_webauthn_credential(user.id, method_id, "Y3JlZA", b"key", sign_count=3, transports=["usb"],
                                            aaguid="", name="Laptop", now=START)
        assert row is not None
        assert store.add_webauthn_credential(user.id, method_id, "Y3JlZA", b"key", sign_count=0, transports=[],
                                             aaguid="", name="Again", now=START) is None  # id taken
        assert store.advance_webauthn_sign_count(row, 3, 4, now=START) is True
        assert store.advance_webauthn_sign_count(row, 3, 5, now=START) is False  # a stale read loses
        cred = store.webauthn_credential_of_method(method_id)
        assert cred is not None and (cred.sign_count, cred.transports) == (4, ("usb",))
        assert store.delete_method(user.id, method_id)
        assert store.webauthn_credentials_of_user(user.id) == []
    finally:
        store.close()
