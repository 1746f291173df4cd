"""Signed tokens: purpose salts, key rotation, tampering, malformed payloads, timeouts from the payload."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from collections.abc import Iterator
from dataclasses import replace

import pytest
from itsdangerous import BadData, URLSafeSerializer

from mfa_middleware.core.decision import Identity
from mfa_middleware.core.tokens import (_HMACSHA256, SALT_CSRF, SALT_PENDING, SALT_SESSION, PendingSignIn, Session,
                                        TokenCodec, _session_payload, pending_expired, session_expired)

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
    pytest.param({**SESSION.to_payload(), "p": 10**400}, id="time-too-large-for-a-float"),
    pytest.param({**SESSION.to_payload(), "a": 10**400}, id="mfa-time-too-large-for-a-float"),
])
def test_well_signed_but_wrongly_shaped_payloads_are_refused(payload: object) -> None:
    codec = TokenCodec((NEW,))
    token = URLSafeSerializer([NEW], salt=SALT_SESSION,
                              signer_kwargs={"digest_method": codec.session_serializer.signer_kwargs["digest_method"]}
                              ).dumps(payload)
    assert codec.load_session(str(token)) is None


def test_a_pending_token_with_a_time_too_large_for_a_float_is_refused() -> None:
    codec = TokenCodec((NEW,))
    token = codec.pending_serializer.dumps({**PENDING.to_payload(), "p": 10**400})
    assert codec.load_pending(str(token)) is None


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
    real = codec.unsign_session

    def counting(token: str) -> bytes | None:
        calls.append(token)
        return real(token)

    codec.unsign_session = counting  # type: ignore[method-assign]
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


# -- the session verifier against itsdangerous ---------------------------------------------------------------
# Session cookies are verified by TokenCodec itself (keys derived once). itsdangerous is the reference: every
# token below must be accepted by one exactly when it is accepted by the other, with the same payload.

REFUSED = object()


def reference_serializer(keys: tuple[str, ...], salt: str = SALT_SESSION) -> URLSafeSerializer:
    return URLSafeSerializer(list(keys), salt=salt, signer_kwargs={"digest_method": hashlib.sha256})


class Reference:
    """itsdangerous's own verdict on a session token, next to the codec's."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.serializer = reference_serializer(keys)
        self.signer = self.serializer.make_signer(SALT_SESSION)
        self.codec = TokenCodec(keys, verified_cache_size=0)

    def unsign(self, token: str) -> bytes | object:
        try:
            return self.signer.unsign(token)
        except (BadData, UnicodeError):
            return REFUSED

    def load(self, token: str) -> object:
        try:
            return self.serializer.loads(token)
        except (BadData, UnicodeError):
            return REFUSED

    def agrees(self, token: str) -> bool:
        """Assert that the codec accepts ``token`` exactly when itsdangerous does, with the same session; return
        whether it was accepted."""
        got = self.codec.unsign_session(token)
        assert (got if got is not None else REFUSED) == self.unsign(token), repr(token)
        if got is None:
            assert self.codec.load_session(token) is None, repr(token)
        else:
            assert self.codec.load_session(token) == Session.from_payload(self.load(token)), repr(token)
        return got is not None


def mutations(token: str) -> Iterator[str]:
    """Every one-character change, deletion and insertion, with characters that base64 decoding, the separator
    and UTF-8 treat specially, and every truncation."""
    specials = ("A", "B", "w", "_", "-", "+", "/", ".", "=", "!", " ", "\x00", "é", "\udc80")
    for i in range(len(token) + 1):
        yield token[:i]
        for char in specials:
            yield token[:i] + char + token[i:]
            if i < len(token):
                yield token[:i] + char + token[i + 1:]
        if i < len(token):
            yield token[:i] + token[i + 1:]


@pytest.mark.parametrize(("signing", "verifying"), [
    pytest.param((NEW,), (NEW,), id="one-key"),
    pytest.param((OLD,), (OLD, NEW), id="old-key-after-rotation"),
    pytest.param((OLD, NEW), (OLD, NEW), id="new-key-after-rotation"),
    pytest.param((OLD, NEW), (NEW,), id="new-key-alone"),
    pytest.param((OLD,), (NEW,), id="dropped-key"),
    pytest.param((NEW,), (OLD,), id="unknown-key"),
])
def test_the_session_verifier_accepts_exactly_what_itsdangerous_accepts(
        signing: tuple[str, ...], verifying: tuple[str, ...]) -> None:
    token = TokenCodec(signing).dump_session(SESSION)
    reference = Reference(verifying)
    accepted = [candidate for candidate in mutations(token) if reference.agrees(candidate)]

    assert (token in accepted) == (signing[-1] in verifying)
    # Only the token itself and spellings of the same signature that itsdangerous's lenient base64 also reads
    # (unused low bits of the last character, skipped characters) verify; never a changed payload.
    assert {candidate.rpartition(".")[0] for candidate in accepted} <= {token.rpartition(".")[0]}


@pytest.mark.parametrize("token", [
    pytest.param(TokenCodec((NEW,)).dump_pending(PENDING), id="pending-salt"),
    pytest.param(TokenCodec((NEW,)).make_csrf("sid1"), id="csrf-salt"),
    pytest.param(str(reference_serializer((NEW,), "other").dumps(SESSION.to_payload())), id="other-salt"),
    pytest.param(str(reference_serializer((NEW,)).dumps(SESSION.to_payload())) + "A", id="long-signature"),
    pytest.param("", id="empty"),
    pytest.param(".", id="separator"),
    pytest.param("." * 3, id="separators"),
    pytest.param("e30.", id="no-signature"),
    pytest.param("e30", id="no-separator"),
    pytest.param("\udc80.\udc80", id="surrogates"),
])
def test_the_session_verifier_refuses_what_itsdangerous_refuses(token: str) -> None:
    assert not Reference((OLD, NEW)).agrees(token)


def signed_payload(payload: bytes) -> str:
    """A session token around an arbitrary payload, as only a holder of the key could make it."""
    return reference_serializer((NEW,)).make_signer(SALT_SESSION).sign(payload).decode()


def compact(data: bytes, *, compress: bool) -> bytes:
    if compress:
        return b"." + base64.urlsafe_b64encode(zlib.compress(data)).rstrip(b"=")
    return base64.urlsafe_b64encode(data).rstrip(b"=")


SESSION_JSON = json.dumps(SESSION.to_payload(), separators=(",", ":")).encode()


@pytest.mark.parametrize("payload", [
    pytest.param(compact(SESSION_JSON, compress=True), id="compressed"),
    pytest.param(compact(SESSION_JSON, compress=False), id="plain"),
    pytest.param(base64.urlsafe_b64encode(SESSION_JSON), id="padded"),
    pytest.param(compact(b"[1,2]", compress=False), id="list"),
    pytest.param(compact(b"null", compress=False), id="null"),
    pytest.param(compact(b"{}", compress=True), id="empty-object"),
    pytest.param(compact(b"\xff\xfe", compress=False), id="not-utf-8"),
    pytest.param(compact(b"{", compress=False), id="cut-json"),
    pytest.param(compact(SESSION_JSON + b"x", compress=False), id="trailing-garbage"),
    pytest.param(b"." + compact(b"not zlib", compress=False), id="not-zlib"),
    pytest.param(compact(b"[" * 100_000 + b"]" * 100_000, compress=True), id="deeply-nested"),
    pytest.param(b"", id="empty"),
    pytest.param(b".", id="dot"),
    pytest.param(b"e30!", id="outside-alphabet"),
    pytest.param(b"e", id="one-character"),
])
def test_well_signed_payloads_decode_as_itsdangerous_decodes_them(payload: bytes) -> None:
    token = signed_payload(payload)
    reference = Reference((NEW,))
    expected = reference.load(token)

    assert _session_payload(payload) == (None if expected is REFUSED else expected)
    reference.agrees(token)


@pytest.mark.parametrize("payload", [
    pytest.param(compact(b" " + SESSION_JSON, compress=False), id="leading-space"),
    pytest.param(compact(SESSION_JSON + b"\n", compress=False), id="trailing-newline"),
    pytest.param(compact("\ufeff".encode() + SESSION_JSON, compress=False), id="byte-order-mark"),
])
def test_whitespace_around_the_json_is_refused_though_itsdangerous_reads_it(payload: bytes) -> None:
    # The one difference, on purpose: the codec never writes it, and only a key holder could sign it.
    assert _session_payload(payload) is None
    assert TokenCodec((NEW,)).load_session(signed_payload(payload)) is None


@pytest.mark.parametrize("key", [
    pytest.param(b"", id="empty"),
    pytest.param(b"k" * 32, id="short"),
    pytest.param(b"k" * 64, id="one-block"),
    pytest.param(b"k" * 65, id="longer-than-a-block"),
])
def test_the_keyed_hmac_is_hmac_sha256(key: bytes) -> None:
    for message in (b"", b"m", b"m" * 1000):
        assert _HMACSHA256(key).digest(message) == hmac.new(key, message, hashlib.sha256).digest()


def test_the_identity_is_built_once_per_verified_token_and_is_not_part_of_the_session_value() -> None:
    codec = TokenCodec((NEW,))
    token = codec.dump_session(SESSION)
    session = codec.load_session(token)
    assert session is not None and session.identity is None
    identity = Identity.from_session(session)

    assert codec.load_session(token) is session  # the verified-cookie cache hands out the same Session ...
    assert Identity.from_session(session) is identity  # ... and with it the same Identity
    assert identity == Identity(username="alice", groups=("admins",), level=2, methods=("forms", "totp"),
                                primary_at=NOW, mfa_at=NOW, session_id="sid1", exempt=False, admin=False)
    # Derived data: the Session's value, hash, text and payload are what they were.
    assert session == SESSION and hash(session) == hash(SESSION) and repr(session) == repr(SESSION)
    assert session.to_payload() == SESSION.to_payload()
    assert replace(session, last_seen=NOW + 60).identity is None  # a refreshed session builds its own
