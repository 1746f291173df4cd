"""Signed tokens: purpose salts, key rotation, tampering, malformed payloads, timeouts from the payload."""

from __future__ import annotations

from dataclasses import replace

import pytest
from itsdangerous import URLSafeSerializer

from mfa_middleware.core.tokens import (SALT_CSRF, SALT_PENDING, SALT_SESSION, PendingSignIn, Session, TokenCodec,
                                        pending_expired, session_expired)

OLD, NEW = "old-key-" + "o" * 32, "new-key-" + "n" * 32
NOW = 1_800_000_000.0
SESSION = Session(sid="sid1", username="alice", groups=("admins",), level=2, methods=("forms", "totp"),
                  primary_at=NOW, mfa_at=NOW, issued_at=NOW, last_seen=NOW, exempt=False)
PENDING = PendingSignIn(sid="p1", username="alice", primary_method="forms", primary_at=NOW,
                        next="/x")


def test_round_trip() -> None:
    codec = TokenCodec((NEW,))
    assert codec.load_session(codec.dump_session(SESSION)) == SESSION
    assert codec.load_pending(codec.dump_pending(PENDING)) == PENDING


def test_salts_are_distinct_per_purpose() -> None:
    assert len({SALT_SESSION, SALT_PENDING, SALT_CSRF}) == 3
    codec = TokenCodec((NEW,))
    # A pending token is not a session, and neither is a CSRF token, even with the same key.
    assert codec.load_session(codec.dump_pending(PENDING)) is None
    assert codec.load_pending(codec.dump_session(SESSION)) is None
    assert codec.load_session(codec.make_csrf("sid1")) is None
    same_payload = codec.pending_serializer.dumps(SESSION.to_payload())
    assert codec.load_session(str(same_payload)) is None


def test_rotation_signs_with_last_key_and_verifies_all() -> None:
    old = TokenCodec((OLD,))
    rotated = TokenCodec((OLD, NEW))
    new_only = TokenCodec((NEW,))
    old_token = old.dump_session(SESSION)
    assert rotated.load_session(old_token) == SESSION  # old cookies survive the rotation
    fresh = rotated.dump_session(SESSION)
    assert new_only.load_session(fresh) == SESSION  # ... and new ones are signed with the last key
    assert old.load_session(fresh) is None
    assert new_only.load_session(old_token) is None  # once the old key is dropped, its cookies are dead


def test_tampered_and_malformed_tokens() -> None:
    codec = TokenCodec((NEW,))
    token = codec.dump_session(SESSION)
    payload, _, sig = token.rpartition(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + sig
    for bad in (flipped, token[:-2], token + "x", "", ".", "a.b.c", "x" * 5000, "\x00\x01", "é.é",
                token.replace(".", "..", 1)):
        assert codec.load_session(bad) is None


@pytest.mark.parametrize("payload", [
    pytest.param(None, id="null"),
    pytest.param([], id="list"),
    pytest.param({}, id="empty"),
    pytest.param({**SESSION.to_payload(), "l": 3}, id="bad-level"),
    pytest.param({**SESSION.to_payload(), "l": True}, id="bool-level"),
    pytest.param({**SESSION.to_payload(), "u": ""}, id="empty-user"),
    pytest.param({**SESSION.to_payload(), "i": "now"}, id="string-time"),
    pytest.param({**SESSION.to_payload(), "g": "admins"}, id="groups-string"),
    pytest.param({**SESSION.to_payload(), "t": -1}, id="negative-time"),
])
def test_well_signed_but_wrongly_shaped_payloads_are_refused(payload: object) -> None:
    codec = TokenCodec((NEW,))
    token = URLSafeSerializer([NEW], salt=SALT_SESSION,
                              signer_kwargs={"digest_method": codec.session_serializer.signer_kwargs["digest_method"]}
                              ).dumps(payload)
    assert codec.load_session(str(token)) is None


def test_session_timeouts_come_from_the_payload() -> None:
    absolute, idle = 12 * 3600, 30 * 60
    assert not session_expired(SESSION, NOW + idle, absolute, idle)
    assert session_expired(SESSION, NOW + idle + 1, absolute, idle)
    active = replace(SESSION, last_seen=NOW + absolute)
    assert not session_expired(active, NOW + absolute, absolute, idle)
    assert session_expired(active, NOW + absolute + 1, absolute, idle)
    assert session_expired(replace(SESSION, issued_at=NOW + 3600), NOW, absolute, idle)  # from the future


def test_pending_never_holds_a_password_and_expires() -> None:
    fields = set(PENDING.to_payload())
    assert not {"password", "pw", "pass"} & fields
    assert not pending_expired(PENDING, NOW + 599, 600)
    assert pending_expired(PENDING, NOW + 601, 600)


def test_csrf_bound_to_its_cookie() -> None:
    codec = TokenCodec((NEW,))
    token = codec.make_csrf("sid1")
    assert codec.check_csrf(token, "sid1")
    assert not codec.check_csrf(token, "sid2")
    assert not codec.check_csrf(token, None)
    assert not codec.check_csrf(None, "sid1")
    assert not codec.check_csrf(TokenCodec((OLD,)).make_csrf("sid1"), "sid1")


def test_verified_session_tokens_are_remembered_but_only_valid_ones() -> None:
    codec = TokenCodec((NEW,), verified_cache_size=2)
    calls = []
    real = codec._session_signer.unsign

    def counting(token: str) -> bytes:
        calls.append(token)
        return real(token)

    codec._session_signer.unsign = counting  # type: ignore[method-assign]
    token = codec.dump_session(SESSION)
    assert codec.load_session(token) == SESSION and codec.load_session(token) == SESSION
    assert len(calls) == 1  # the second time costs no HMAC
    bad = token[:-2] + "xx"
    assert codec.load_session(bad) is None and codec.load_session(bad) is None
    assert len(calls) == 3  # a bad token is checked every time, never remembered
    others = [codec.dump_session(replace(SESSION, sid=f"s{i}")) for i in range(3)]
    for other in others:
        codec.load_session(other)
    assert len(codec._verified) == 2  # bounded
