"""Passkeys (the ``webauthn`` method) against an attacker who writes the authenticator's answers himself.

No browser: the authenticator is an EC P-256 key pair from ``cryptography``, and the tests build what a browser
would post (``clientDataJSON``, ``authenticatorData``, the "none" attestation object with a COSE key, the
ECDSA-SHA256 assertion signature over ``authenticatorData || SHA-256(clientDataJSON)``). The method is driven as
the pages drive it: the sign-in service's ``enroll_begin``/``enroll_finish``/``verify``, the method's ``begin``,
the registration response posted to the public ``register/<token>`` route with werkzeug's test client, and the
assertion stored by :meth:`WebAuthnFactor.store_response` (what the ``assertion`` route does once the pending
cookie and CSRF token are checked).

Every refused case is the valid answer with one thing changed, and the valid answer is accepted in the same
table (``valid``), so each refusal is caused by that one change.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.test import Client as WsgiClient

from mfa_middleware import MFAMiddleware
from mfa_middleware.factors.webauthn import CEREMONY_TTL, WebAuthnFactor
from mfa_middleware.services.lockout import Client
from mfa_middleware.store import MethodRecord, UserRecord
from tests.support.mfa import START, Clock, make_middleware

ORIGIN = "https://sso.example.com"
RP_ID = "sso.example.com"
CLIENT = Client("192.0.2.10", "test-agent", ORIGIN)
UP, UV, AT = 0x01, 0x04, 0x40
AAGUID_OK = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
AAGUID_OTHER = "ee882879-721c-4913-9775-3dfcce97072a"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- the authenticator ---------------------------------------------------------------------------------------------
@dataclass
class Authenticator:
    """A P-256 credential: what a security key keeps, and the answers it (or a forger holding it) would give."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    aaguid: str = AAGUID_OK
    sign_count: int = 0

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def register(self, challenge: str, *, origin: str = ORIGIN, rp_id: str = RP_ID, flags: int = UP | UV,
                 ceremony: str = "webauthn.create", fmt: str = "none", chain: Leaf | None = None) -> str:
        """A registration response (the JSON the page's script posts) with a "none" attestation; with
        ``fmt="packed"`` a packed one signed by ``chain`` (a leaf a CA issued) or, without one, by an attestation
        certificate this authenticator made itself; with ``fmt="packed-self"`` a packed self attestation (signed by
        the credential key, no certificate)."""
        client_data = client_data_json(ceremony, challenge, origin)
        attested = (bytes.fromhex(self.aaguid.replace("-", "")) + len(self.credential_id).to_bytes(2, "big")
                    + self.credential_id + self.cose_key())
        auth_data = authenticator_data(rp_id, flags | AT, self.sign_count) + attested
        statement: dict[str, Any] = {}
        signed = auth_data + hashlib.sha256(client_data).digest()
        if fmt == "packed" and chain is not None:
            statement = {"alg": -7, "sig": chain.key.sign(signed, ec.ECDSA(hashes.SHA256())), "x5c": [chain.der]}
        elif fmt == "packed":
            cert_key = ec.generate_private_key(ec.SECP256R1())
            signature = cert_key.sign(signed, ec.ECDSA(hashes.SHA256()))
            statement = {"alg": -7, "sig": signature, "x5c": [self.attestation_certificate(cert_key)]}
        elif fmt == "packed-self":
            fmt, statement = "packed", {"alg": -7, "sig": self.key.sign(signed, ec.ECDSA(hashes.SHA256()))}
        attestation = cbor2.dumps({"fmt": fmt, "attStmt": statement, "authData": auth_data})
        cid = b64url(self.credential_id)
        return json.dumps({"id": cid, "rawId": cid, "type": "public-key", "clientExtensionResults": {},
                           "response": {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation),
                                        "transports": ["usb"]}})

    def attestation_certificate(self, cert_key: ec.EllipticCurvePrivateKey) -> bytes:
        """A self-signed attestation certificate naming this authenticator's AAGUID (what a vendor's would say)."""
        name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Made Up Keys"),
                          x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "Made Up Key")])
        aaguid_ext = b"\x04\x10" + bytes.fromhex(self.aaguid.replace("-", ""))  # OCTET STRING of the 16 bytes
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(cert_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
                .not_valid_after(datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"),
                                                          aaguid_ext), critical=False)
                .sign(cert_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.DER)


# -- attestation certificates: a vendor's root and the leaf it issues to one authenticator model ----------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Made Up Keys"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Root:
    """A vendor's attestation root CA."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, cn: str = "Made Up Keys Root CA") -> Root:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
                .not_valid_after(datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, aaguid: str | None) -> Leaf:
        """An attestation certificate for one model: the FIDO AAGUID extension names ``aaguid`` (none if None)."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(_name("Made Up Key Model 1"))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
                   .not_valid_after(datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if aaguid is not None:
            builder = builder.add_extension(x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), b"\x04\x10" + bytes.fromhex(aaguid.replace("-", ""))),
                critical=False)
        return Leaf(key, builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class Leaf:
    """An attestation key and its certificate (DER), as a vendor puts them into every key of one model."""

    key: ec.EllipticCurvePrivateKey
    der: bytes


def client_data_json(ceremony: str, challenge: str, origin: str) -> bytes:
    return json.dumps({"type": ceremony, "challenge": challenge, "origin": origin, "crossOrigin": False},
                      separators=(",", ":")).encode()


def authenticator_data(rp_id: str, flags: int, sign_count: int) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + sign_count.to_bytes(4, "big")


@dataclass(frozen=True)
class Assertion:
    """How to build one assertion; every field is the valid value unless a case changes it."""

    origin: str = ORIGIN
    rp_id: str = RP_ID
    flags: int = UP | UV
    ceremony: str = "webauthn.get"
    #: the sign count relative to the authenticator's current one (+1: a normal use)
    count_step: int = 1
    #: sign with another key than the credential's
    foreign_key: bool = False
    #: change the clientDataJSON after signing
    tamper_client_data: bool = False
    #: flip one bit of the signature
    tamper_signature: bool = False
    #: the user handle a discoverable credential returns (None: none, as a security key used as a second factor)
    user_handle: bytes | None = None

    def build(self, auth: Authenticator, challenge: str, credential_id: bytes | None = None) -> str:
        count = auth.sign_count + self.count_step
        client_data = client_data_json(self.ceremony, challenge, self.origin)
        auth_data = authenticator_data(self.rp_id, self.flags, count)
        key = ec.generate_private_key(ec.SECP256R1()) if self.foreign_key else auth.key
        signature = key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        if self.tamper_client_data:
            client_data = client_data.replace(b'"crossOrigin":false', b'"crossOrigin":false ')
        if self.tamper_signature:
            signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
        auth.sign_count = max(auth.sign_count, count)
        cid = b64url(credential_id if credential_id is not None else auth.credential_id)
        response = {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                    "signature": b64url(signature)}
        if self.user_handle is not None:
            response["userHandle"] = b64url(self.user_handle)
        return json.dumps({"id": cid, "rawId": cid, "type": "public-key", "clientExtensionResults": {},
                           "response": response})


# -- the site --------------------------------------------------------------------------------------------------
@dataclass
class Site:
    mw: MFAMiddleware
    clock: Clock

    @property
    def factor(self) -> WebAuthnFactor:
        factor = self.mw.runtime.factors.get("webauthn")
        assert isinstance(factor, WebAuthnFactor)
        return factor

    def user(self, username: str) -> UserRecord:
        found = self.mw.runtime.store.get_user(username)
        if found is None:
            self.mw.runtime.accounts.add(username, actor="test", password="correct horse battery staple")
            found = self.mw.runtime.store.get_user(username)
        assert found is not None
        return found

    def method(self, user: UserRecord, label: str) -> MethodRecord:
        found = [m for m in self.mw.runtime.store.list_methods(user.id) if m.label == label]
        assert len(found) == 1, found
        return found[0]

    def audit(self, username: str) -> list[tuple[str, str]]:
        return [(r.event, r.result) for r in self.mw.runtime.store.list_audit(username=username)]

    # enrollment: begin, post the response to the public route, finish
    def enroll_begin(self, user: UserRecord, name: str) -> tuple[int, str, str]:
        first = not self.mw.runtime.signin.methods(user)
        view = self.mw.runtime.signin.enroll_begin(user, "webauthn", CLIENT, self.clock.now, {"name": name},
                                                   attempt_id=f"enroll-{user.id}", first_method_only=first)
        options = json.loads(view.fields["options"])
        assert options["rp"]["id"] == RP_ID
        return view.method_id, options["challenge"], view.fields["register"]

    def post_registration(self, route: str, raw: str) -> int:
        return WsgiClient(self.mw).post(route, base_url=ORIGIN, data={"credential": raw}).status_code

    def enroll_finish(self, user: UserRecord, method_id: int) -> str:
        first = not self.mw.runtime.signin.methods(user)
        return self.mw.runtime.signin.enroll_finish(user, method_id, {}, CLIENT, self.clock.now,
                                                    attempt_id=f"enroll-{user.id}", first_method_only=first).outcome

    def register(self, user: UserRecord, name: str, auth: Authenticator) -> MethodRecord:
        method_id, challenge, route = self.enroll_begin(user, name)
        assert self.post_registration(route, auth.register(challenge)) == 200
        assert self.enroll_finish(user, method_id) == "accepted"
        return self.method(user, name)

    # sign-in: a ceremony for the attempt, the stored assertion, the check under the attempt count
    def challenge(self, user: UserRecord, method: MethodRecord, attempt_id: str) -> str:
        ctx = self.mw.runtime.signin.context(CLIENT, self.clock.now, attempt_id)
        self.factor.begin(user, method, ctx)
        ch = self.mw.runtime.store.webauthn_challenge_of_attempt(method.id, attempt_id)
        assert ch is not None and ch.status == "pending"
        return ch.challenge

    def answer(self, method: MethodRecord, attempt_id: str, raw: str) -> int:
        ch = self.mw.runtime.store.webauthn_challenge_of_attempt(method.id, attempt_id)
        return self.factor.store_response(ch, "authenticate", raw, self.clock.now).status_code

    def verify(self, user: UserRecord, method: MethodRecord, attempt_id: str) -> str:
        return self.mw.runtime.signin.verify(user, {}, CLIENT, self.clock.now, method_id=method.id,
                                             attempt_id=attempt_id).outcome

    def sign_count(self, method: MethodRecord) -> int:
        cred = self.mw.runtime.store.webauthn_credential_of_method(method.id)
        assert cred is not None
        return cred.sign_count


@pytest.fixture
def make_site(sqlite_url: str) -> Iterator[Callable[..., Site]]:
    built: list[MFAMiddleware] = []

    def build(url: str = sqlite_url, **webauthn: Any) -> Site:
        clock = Clock()
        mw = make_middleware(url, clock, methods={"enabled": ["webauthn"],
                                                  "webauthn": {"origins": [ORIGIN], **webauthn}})
        built.append(mw)
        return Site(mw, clock)

    yield build
    for mw in built:
        mw.runtime.close()


# -- sign-in -------------------------------------------------------------------------------------------------------
def test_registration_then_assertions_advance_the_sign_count(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    assert method.confirmed and site.sign_count(method) == 0
    for n, attempt in enumerate(("attempt-1", "attempt-2"), start=1):
        challenge = site.challenge(dana, method, attempt)
        assert site.answer(method, attempt, Assertion().build(auth, challenge)) == 200
        assert site.verify(dana, method, attempt) == "accepted"
        assert site.sign_count(method) == n
    assert ("webauthn", "registered") in site.audit("dana")


@pytest.mark.parametrize(("case", "reason"), [
    pytest.param(Assertion(), None, id="valid"),
    pytest.param(Assertion(origin="https://evil.example"), "origin", id="wrong-origin"),
    pytest.param(Assertion(origin="https://sso.example.com:8443"), "origin", id="wrong-port"),
    pytest.param(Assertion(rp_id="evil.example"), "RP ID hash", id="wrong-rp-id-hash"),
    pytest.param(Assertion(flags=UV), "not present", id="user-presence-missing"),
    pytest.param(Assertion(ceremony="webauthn.create"), "type", id="registration-type"),
    pytest.param(Assertion(foreign_key=True), "signature", id="another-key"),
    pytest.param(Assertion(tamper_client_data=True), "signature", id="tampered-client-data"),
    pytest.param(Assertion(tamper_signature=True), "signature", id="flipped-signature-bit"),
])
def test_assertion_with_one_thing_wrong_is_refused(make_site: Callable[..., Site], case: Assertion,
                                                   reason: str | None) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    challenge = site.challenge(dana, method, "attempt-1")
    assert site.answer(method, "attempt-1", case.build(auth, challenge)) == 200
    outcome = site.verify(dana, method, "attempt-1")
    if reason is None:
        assert outcome == "accepted" and site.sign_count(method) == 1
        return
    assert outcome == "rejected"
    assert site.sign_count(method) == 0
    rows = site.mw.runtime.store.list_audit(username="dana")
    refused = [r for r in rows if (r.event, r.result) == ("webauthn", "refused")]
    assert refused and reason.lower() in json.dumps(refused[0].detail).lower(), refused
    assert ("second_factor", "rejected") in site.audit("dana")  # counted against the lockout


@pytest.mark.parametrize(("flags", "outcome"), [
    pytest.param(UP | UV, "accepted", id="verified"),
    pytest.param(UP, "rejected", id="presence-only"),
])
def test_user_verification_required(make_site: Callable[..., Site], flags: int, outcome: str) -> None:
    site = make_site(user_verification="required")
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    challenge = site.challenge(dana, method, "attempt-1")
    assert site.answer(method, "attempt-1", Assertion(flags=flags).build(auth, challenge)) == 200
    assert site.verify(dana, method, "attempt-1") == outcome


def test_user_verification_preferred_accepts_presence_only(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    challenge = site.challenge(dana, method, "attempt-1")
    assert site.answer(method, "attempt-1", Assertion(flags=UP).build(auth, challenge)) == 200
    assert site.verify(dana, method, "attempt-1") == "accepted"


def test_challenge_of_another_attempt_is_refused(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    other = site.challenge(dana, method, "attempt-other")
    site.challenge(dana, method, "attempt-1")
    assert site.answer(method, "attempt-1", Assertion().build(auth, other)) == 200
    assert site.verify(dana, method, "attempt-1") == "rejected"
    # The other attempt's own answer is still good: the refusal was the challenge, not the authenticator.
    assert site.answer(method, "attempt-other", Assertion().build(auth, other)) == 200
    assert site.verify(dana, method, "attempt-other") == "accepted"


def test_replayed_assertion_is_refused(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    challenge = site.challenge(dana, method, "attempt-1")
    raw = Assertion().build(auth, challenge)
    assert site.answer(method, "attempt-1", raw) == 200
    assert site.verify(dana, method, "attempt-1") == "accepted"
    # The same attempt: its ceremony is used, the answer cannot be stored or checked again.
    assert site.answer(method, "attempt-1", raw) == 409
    assert site.verify(dana, method, "attempt-1") == "replayed"
    # A new attempt (begin replaces the used ceremony): the old answer carries the old challenge.
    site.challenge(dana, method, "attempt-2")
    assert site.answer(method, "attempt-2", raw) == 200
    assert site.verify(dana, method, "attempt-2") == "rejected"
    assert site.sign_count(method) == 1


def test_another_users_credential_is_refused(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, erin = site.user("dana"), site.user("erin")
    dana_key, erin_key = Authenticator(), Authenticator()
    dana_method = site.register(dana, "Laptop", dana_key)
    site.register(erin, "Laptop", erin_key)
    challenge = site.challenge(dana, dana_method, "attempt-1")
    # Erin's own authenticator answers Dana's ceremony (a valid signature by a registered credential).
    assert site.answer(dana_method, "attempt-1", Assertion().build(erin_key, challenge)) == 200
    assert site.verify(dana, dana_method, "attempt-1") == "rejected"
    refused = [r for r in site.mw.runtime.store.list_audit(username="dana") if r.result == "refused"]
    assert refused and "not the credential" in json.dumps(refused[0].detail)


def test_removed_credential_is_refused(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, laptop_key, yubikey = site.user("dana"), Authenticator(), Authenticator()
    laptop = site.register(dana, "Laptop", laptop_key)
    removed = site.register(dana, "YubiKey 5", yubikey)
    challenge = site.challenge(dana, removed, "attempt-1")
    assert site.answer(removed, "attempt-1", Assertion().build(yubikey, challenge)) == 200
    assert site.mw.runtime.store.delete_method(dana.id, removed.id, keep_one=True)
    # The attempt that used it is dead; so is the key with the remaining passkey's ceremony.
    assert site.verify(dana, removed, "attempt-1") == "rejected"
    challenge = site.challenge(dana, laptop, "attempt-2")
    assert site.answer(laptop, "attempt-2", Assertion().build(yubikey, challenge, yubikey.credential_id)) == 200
    assert site.verify(dana, laptop, "attempt-2") == "rejected"
    challenge = site.challenge(dana, laptop, "attempt-3")
    assert site.answer(laptop, "attempt-3", Assertion().build(laptop_key, challenge)) == 200
    assert site.verify(dana, laptop, "attempt-3") == "accepted"


@pytest.mark.parametrize("step", [pytest.param(0, id="same-count"), pytest.param(-2, id="lower-count")])
def test_counter_regression_is_refused_and_audited(make_site: Callable[..., Site], step: int) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    for attempt in ("attempt-1", "attempt-2", "attempt-3"):
        challenge = site.challenge(dana, method, attempt)
        assert site.answer(method, attempt, Assertion().build(auth, challenge)) == 200
        assert site.verify(dana, method, attempt) == "accepted"
    assert site.sign_count(method) == 3
    clone = replace(auth)  # the same key and id: a cloned authenticator
    challenge = site.challenge(dana, method, "attempt-clone")
    assert site.answer(method, "attempt-clone", Assertion(count_step=step).build(clone, challenge)) == 200
    assert site.verify(dana, method, "attempt-clone") == "rejected"
    assert site.sign_count(method) == 3
    assert ("webauthn", "counter_regression") in site.audit("dana")


def test_counter_zero_from_an_authenticator_without_a_counter(make_site: Callable[..., Site]) -> None:
    """Passkeys synced between devices report 0 every time: allowed while the stored count is 0 too."""
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    for attempt in ("attempt-1", "attempt-2"):
        challenge = site.challenge(dana, method, attempt)
        assert site.answer(method, attempt, Assertion(count_step=0).build(auth, challenge)) == 200
        assert site.verify(dana, method, attempt) == "accepted"
    assert site.sign_count(method) == 0


@pytest.mark.parametrize(("answered_after", "checked_after", "stored", "outcome"), [
    pytest.param(10, 20, 200, "accepted", id="in-time"),
    pytest.param(10, CEREMONY_TTL + 1, 200, "rejected", id="checked-after-expiry"),
    pytest.param(CEREMONY_TTL + 1, CEREMONY_TTL + 2, 409, "rejected", id="answered-after-expiry"),
])
def test_expired_challenge_is_refused(make_site: Callable[..., Site], answered_after: float, checked_after: float,
                                      stored: int, outcome: str) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    challenge = site.challenge(dana, method, "attempt-1")
    site.clock.now = START + answered_after
    assert site.answer(method, "attempt-1", Assertion().build(auth, challenge)) == stored
    site.clock.now = START + checked_after
    assert site.verify(dana, method, "attempt-1") == outcome


# -- registration ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("origin", "rp_id", "ceremony", "flags", "accepted"), [
    pytest.param(ORIGIN, RP_ID, "webauthn.create", UP | UV, True, id="valid"),
    pytest.param("https://evil.example", RP_ID, "webauthn.create", UP | UV, False, id="wrong-origin"),
    pytest.param(ORIGIN, "evil.example", "webauthn.create", UP | UV, False, id="wrong-rp-id-hash"),
    pytest.param(ORIGIN, RP_ID, "webauthn.get", UP | UV, False, id="sign-in-type"),
    pytest.param(ORIGIN, RP_ID, "webauthn.create", UV, False, id="user-presence-missing"),
])
def test_registration_with_one_thing_wrong_is_refused(make_site: Callable[..., Site], origin: str, rp_id: str,
                                                      ceremony: str, flags: int, accepted: bool) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method_id, challenge, route = site.enroll_begin(dana, "Laptop")
    raw = auth.register(challenge, origin=origin, rp_id=rp_id, ceremony=ceremony, flags=flags)
    assert site.post_registration(route, raw) == 200
    assert site.enroll_finish(dana, method_id) == ("accepted" if accepted else "rejected")
    confirmed = [m for m in site.mw.runtime.store.list_methods(dana.id) if m.confirmed]
    assert len(confirmed) == (1 if accepted else 0)
    assert len(site.mw.runtime.store.webauthn_credentials_of_user(dana.id)) == (1 if accepted else 0)
    if not accepted:
        assert ("webauthn", "registration_refused") in site.audit("dana")


def test_registration_uv_required(make_site: Callable[..., Site]) -> None:
    site = make_site(user_verification="required")
    dana = site.user("dana")
    method_id, challenge, route = site.enroll_begin(dana, "Laptop")
    assert site.post_registration(route, Authenticator().register(challenge, flags=UP)) == 200
    assert site.enroll_finish(dana, method_id) == "rejected"
    # The failed try got a fresh ceremony; a verified answer to it is accepted.
    view = site.mw.runtime.signin.enroll_view(dana, method_id, CLIENT, site.clock.now)
    assert view is not None
    fresh = json.loads(view.fields["options"])["challenge"]
    assert site.post_registration(view.fields["register"], Authenticator().register(fresh)) == 200
    assert site.enroll_finish(dana, method_id) == "accepted"


def test_registration_with_the_challenge_of_another_enrollment(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, erin = site.user("dana"), site.user("erin")
    dana_id, _, dana_route = site.enroll_begin(dana, "Laptop")
    erin_id, erin_challenge, erin_route = site.enroll_begin(erin, "Laptop")
    assert site.post_registration(dana_route, Authenticator().register(erin_challenge)) == 200
    assert site.enroll_finish(dana, dana_id) == "rejected"
    assert site.post_registration(erin_route, Authenticator().register(erin_challenge)) == 200
    assert site.enroll_finish(erin, erin_id) == "accepted"


def test_registration_of_a_credential_id_taken_by_another_user(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, erin = site.user("dana"), site.user("erin")
    erin_key = Authenticator()
    site.register(erin, "Laptop", erin_key)
    # Dana's (attacker's) own key under Erin's credential id: if it replaced Erin's, Erin's passkey would be his.
    forged = Authenticator(credential_id=erin_key.credential_id)
    method_id, challenge, route = site.enroll_begin(dana, "Laptop")
    assert site.post_registration(route, forged.register(challenge)) == 200
    assert site.enroll_finish(dana, method_id) == "rejected"
    assert ("webauthn", "registration_refused") in site.audit("dana")
    [erin_cred] = site.mw.runtime.store.webauthn_credentials_of_user(erin.id)
    assert erin_cred.credential_id == b64url(erin_key.credential_id)
    assert site.mw.runtime.store.webauthn_credentials_of_user(dana.id) == []


def test_registration_answer_is_stored_once(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana, auth = site.user("dana"), Authenticator()
    method_id, challenge, route = site.enroll_begin(dana, "Laptop")
    assert site.post_registration(route, auth.register(challenge)) == 200
    assert site.post_registration(route, Authenticator().register(challenge)) == 409  # a second answer: refused
    assert site.post_registration(route.rsplit("/", 1)[0] + "/" + "A" * 43, auth.register(challenge)) == 409
    assert site.enroll_finish(dana, method_id) == "accepted"
    assert site.enroll_finish(dana, method_id) == "rejected"  # confirmed already


@pytest.mark.parametrize(("fmt", "aaguid", "accepted"), [
    pytest.param("packed", AAGUID_OK, True, id="packed-allowed-model"),
    pytest.param("packed", AAGUID_OTHER, False, id="packed-model-not-allowed"),
    pytest.param("none", AAGUID_OK, False, id="none-names-an-allowed-model"),
    pytest.param("none", AAGUID_OTHER, False, id="none-model-not-allowed"),
])
def test_aaguid_allow_list(make_site: Callable[..., Site], fmt: str, aaguid: str, accepted: bool) -> None:
    """``attestation = "direct"`` with an ``aaguids`` allow-list. A "none" attestation is refused whatever AAGUID
    it names: without a statement the AAGUID is only the client's word.

    Without ``attestation_roots`` the packed attestation's certificate is checked against no trust anchors, so
    the ``packed-allowed-model`` answer above, signed by a certificate the "authenticator" made itself, passes:
    the allow-list alone keeps honest users to the listed models (see :func:`test_attestation_roots` for the
    barrier against a client that forges its registration)."""
    site = make_site(attestation="direct", aaguids=[AAGUID_OK])
    dana = site.user("dana")
    method_id, challenge, route = site.enroll_begin(dana, "Laptop")
    assert json.loads(site.mw.runtime.signin.enroll_view(dana, method_id, CLIENT, site.clock.now)  # type: ignore[union-attr]
                      .fields["options"])["attestation"] == "direct"
    assert site.post_registration(route, Authenticator(aaguid=aaguid).register(challenge, fmt=fmt)) == 200
    assert site.enroll_finish(dana, method_id) == ("accepted" if accepted else "rejected")
    refused = ("webauthn", "registration_refused") in site.audit("dana")
    assert refused is not accepted
    creds = site.mw.runtime.store.webauthn_credentials_of_user(dana.id)
    assert [c.aaguid for c in creds] == ([AAGUID_OK] if accepted else [])


def test_aaguid_is_kept_without_allow_list(make_site: Callable[..., Site]) -> None:
    site = make_site()
    dana = site.user("dana")
    site.register(dana, "Laptop", Authenticator(aaguid=AAGUID_OTHER))
    [cred] = site.mw.runtime.store.webauthn_credentials_of_user(dana.id)
    assert cred.aaguid == AAGUID_OTHER


ROOT = Root.make()


@pytest.mark.parametrize(("roots", "make_answer", "accepted", "reason"), [
    pytest.param("vendor", lambda a, c: a.register(c, fmt="packed", chain=ROOT.issue(AAGUID_OK)), True, None,
                 id="leaf-of-the-configured-root"),
    pytest.param("vendor", lambda a, c: a.register(c, fmt="packed", chain=ROOT.issue(None)), True, None,
                 id="leaf-without-aaguid-extension"),
    pytest.param("other", lambda a, c: a.register(c, fmt="packed", chain=ROOT.issue(AAGUID_OK)), False,
                 "certificate chain", id="leaf-of-another-root"),
    pytest.param("both", lambda a, c: a.register(c, fmt="packed", chain=ROOT.issue(AAGUID_OK)), True, None,
                 id="one-of-several-roots"),
    pytest.param("vendor", lambda a, c: a.register(c, fmt="packed"), False, "certificate chain",
                 id="forged-self-signed-certificate"),
    pytest.param("vendor", lambda a, c: a.register(c, fmt="packed", chain=Root.make("Forger").issue(AAGUID_OK)),
                 False, "certificate chain", id="forger-ca-with-the-same-name"),
    pytest.param("vendor", lambda a, c: a.register(c, fmt="packed-self"), False, "none or self attestation",
                 id="self-attestation"),
    pytest.param("vendor", lambda a, c: a.register(c, fmt="none"), False, "no attestation", id="none"),
    pytest.param("vendor", lambda a, c: a.register(c, fmt="packed", chain=ROOT.issue(AAGUID_OTHER)), False,
                 "another authenticator model", id="leaf-names-another-model"),
    pytest.param("vendor", lambda a, c: Authenticator(aaguid=AAGUID_OTHER).register(
        c, fmt="packed", chain=ROOT.issue(AAGUID_OTHER)), False, "not allowed", id="genuine-model-not-allowed"),
])
def test_attestation_roots(make_site: Callable[..., Site], tmp_path: Any, roots: str,
                           make_answer: Callable[[Authenticator, str], str], accepted: bool,
                           reason: str | None) -> None:
    """``attestation_roots``: the attestation must chain to a configured vendor root; a forged packed attestation
    naming an allowed model (the known limit without roots) is refused."""
    other = Root.make("Another Vendor Root CA")
    pems = {"vendor": [ROOT.pem()], "other": [other.pem()], "both": [other.pem(), ROOT.pem()]}[roots]
    (tmp_path / "roots").mkdir()
    for n, pem in enumerate(pems):
        (tmp_path / "roots" / f"root{n}.pem").write_bytes(pem)
    site = make_site(attestation="direct", aaguids=[AAGUID_OK], attestation_roots=str(tmp_path / "roots"))
    dana = site.user("dana")
    method_id, challenge, route = site.enroll_begin(dana, "Laptop")
    assert site.post_registration(route, make_answer(Authenticator(), challenge)) == 200
    assert site.enroll_finish(dana, method_id) == ("accepted" if accepted else "rejected")
    rows = [r for r in site.mw.runtime.store.list_audit(username="dana") if r.result == "registration_refused"]
    if accepted:
        assert rows == [] and len(site.mw.runtime.store.webauthn_credentials_of_user(dana.id)) == 1
    else:
        assert reason is not None and rows and reason.lower() in json.dumps(rows[0].detail).lower(), rows
        assert site.mw.runtime.store.webauthn_credentials_of_user(dana.id) == []


# -- concurrency ---------------------------------------------------------------------------------------------------
def test_concurrent_checks_of_one_assertion_accept_once(make_site: Callable[..., Site], database_url: str) -> None:
    site = make_site(database_url)
    dana, auth = site.user("dana"), Authenticator()
    method = site.register(dana, "Laptop", auth)
    challenge = site.challenge(dana, method, "attempt-1")
    assert site.answer(method, "attempt-1", Assertion().build(auth, challenge)) == 200
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def check() -> None:
        barrier.wait(timeout=30)
        outcome = site.verify(dana, method, "attempt-1")
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=check) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 20, "a check hung for more than 60 s"
    assert outcomes.count("accepted") == 1, outcomes
    assert site.sign_count(method) == 1
