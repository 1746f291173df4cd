"""The device protocol's wire format, shared by the server (:mod:`mfa_middleware.factors.push`) and the console
authenticator (:mod:`mfa_middleware.authenticator`). ``docs/push-protocol.md`` is the normative description; this
module is its one implementation of the byte strings that are signed.

Rules:

- Binary values travel as base64url without padding. Public keys are DER SubjectPublicKeyInfo (what WebCrypto's
  ``exportKey("spki")`` gives), Ed25519 or ECDSA P-256 only. An ECDSA signature is the raw ``r || s`` pair (64
  bytes, as in JWS ES256 and WebCrypto), never DER; an Ed25519 signature is its 64 bytes.
- A device request is signed over :func:`request_string`: a fixed label, the method, the path with its query,
  the SHA-256 of the body (hex), the timestamp, the nonce and the device's account id, one per line. The server
  accepts a timestamp within :data:`MAX_SKEW` seconds of its clock and each nonce once per device.
- An answer is signed, in addition, over :func:`answer_string` (request id, answer, number, timestamp), so that
  the answer itself is attributable whatever carried it.
- A sign-in request is sent to the device as ``{"payload": b64u(canonical JSON), "signature": b64u(Ed25519)}``:
  the device verifies the signature over the payload bytes exactly as received, then parses them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

VERSION = "v1"
#: a device request's timestamp may differ from the server's clock by at most this many seconds
MAX_SKEW = 60
#: the headers of a signed device request
HEADER_ACCOUNT, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE = (
    "X-MFA-Account", "X-MFA-Timestamp", "X-MFA-Nonce", "X-MFA-Signature")
Algorithm = Literal["ed25519", "es256"]
Answer = Literal["approve", "deny", "fraud"]
ANSWERS: tuple[Answer, ...] = ("approve", "deny", "fraud")
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class ProtocolError(ValueError):
    """A value on the wire is malformed (the message names which)."""


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 4096:
        raise ProtocolError(f"{what}: not a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{what}: not a base64url string") from None


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_string(method: str, path: str, body: bytes, timestamp: int, nonce: str, account_id: str) -> bytes:
    """What a device signs for one HTTP request (``path`` includes the query string, if any)."""
    return "\n".join(("mfa-device-" + VERSION, method.upper(), path, body_digest(body), str(timestamp), nonce,
                      account_id)).encode("utf-8")


def answer_string(request_id: str, answer: str, number: int | None, timestamp: int) -> bytes:
    """What a device signs for its answer to one sign-in request."""
    return "\n".join(("mfa-answer-" + VERSION, request_id, answer, "" if number is None else str(number),
                      str(timestamp))).encode("utf-8")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def load_public_key(spki_der: bytes) -> tuple[PublicKey, Algorithm]:
    """A device's public key from its DER SubjectPublicKeyInfo; only Ed25519 and P-256 are accepted."""
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, TypeError):
        raise ProtocolError("public_key: not a DER SubjectPublicKeyInfo") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "es256"
    raise ProtocolError("public_key: only Ed25519 and ECDSA P-256 keys are accepted")


def public_key_bytes(key: PrivateKey | PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` is ``key``'s over ``data`` (constant-time inside the library)."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
            return True
        if len(signature) != 64:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def new_private_key(algorithm: Algorithm) -> PrivateKey:
    return ed25519.Ed25519PrivateKey.generate() if algorithm == "ed25519" else ec.generate_private_key(
        ec.SECP256R1())


def private_key_bytes(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(pkcs8_der: bytes) -> PrivateKey:
    key = serialization.load_der_private_key(pkcs8_der, password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey) or (
            isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
        return key
    raise ProtocolError("private key: only Ed25519 and ECDSA P-256 keys are used")


def verify_envelope(server_key: bytes, envelope: Any) -> dict[str, Any]:
    """A sign-in request the server sent (``{"payload", "signature"}``), checked against the server's raw Ed25519
    public key; raises :class:`ProtocolError` for anything the server did not sign."""
    if not isinstance(envelope, dict):
        raise ProtocolError("request: not an object")
    payload = unb64u(envelope.get("payload", ""), "payload")
    signature = unb64u(envelope.get("signature", ""), "signature")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(server_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        raise ProtocolError("request: the server's signature does not verify") from None
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ProtocolError("request: the payload is not an object")
    return data
