"""Signed tokens: the session cookie, the pending sign-in cookie, CSRF tokens, the "remember this device" cookie.

Rules:

- One itsdangerous salt per purpose, so a token made for one purpose never verifies as another.
- ``secret_keys`` is a list for rotation: every key verifies, the LAST one signs.
- Times live in the signed payload (issued-at, last-seen); cookie expiry is only a hint to the browser.
  The absolute and inactivity timeouts are checked here against the ``now`` the caller passes in.
- The pending sign-in token names the user and what is left to do; it never holds a password.
- Malformed, tampered, wrong-purpose or wrongly-typed tokens all decode to ``None``; nothing raises.
- Session tokens are verified here, not by itsdangerous's ``loads``, because they are checked on every request:
  the same HMAC-SHA256 over the same bytes with the same derived keys (itsdangerous derives each key again for
  every token; here each is derived once, at start), every key of the list tried, and the same decoding of the
  signature. ``tests/core/test_tokens.py`` checks that this accepts exactly the tokens itsdangerous accepts.
  The payload is decoded as itsdangerous encodes it (base64, zlib when it starts with ``.``, then JSON); the
  JSON must fill the whole text. itsdangerous still signs every token and verifies the other purposes.
- A session token whose signature has been verified once is remembered (a bounded first-in-first-out map keyed
  by the exact token string), so a browser repeating the same cookie costs a dictionary lookup, not an HMAC and
  a JSON parse. The remembered Session carries the request Identity built from it (``Session.identity``, a
  derived field outside the Session's value), so that is built once per token too.
  Only tokens this process verified as correctly signed are remembered; expiry and revocation are still
  checked on every request by the callers, from the payload.

Nothing here reads a clock, a store or a request: callers pass ``now`` and get frozen values back.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import secrets
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from itsdangerous import BadData, URLSafeSerializer
from itsdangerous.signer import HMACAlgorithm

if TYPE_CHECKING:
    from .decision import Identity

SALT_SESSION = "mfa_middleware.session"
SALT_PENDING = "mfa_middleware.pending-sign-in"
SALT_CSRF = "mfa_middleware.csrf"
SALT_DEVICE = "mfa_middleware.remember-device"

MAX_TOKEN_LENGTH = 4096
VERIFIED_CACHE_SIZE = 10_000


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser session (level 1: primary only; level 2: second factor done)."""

    sid: str
    username: str
    groups: tuple[str, ...]
    level: int
    methods: tuple[str, ...]  # e.g. ("forms", "totp")
    primary_at: float
    mfa_at: float | None
    issued_at: float  # start of the session: the absolute timeout counts from here
    last_seen: float  # the inactivity timeout counts from here
    exempt: bool  # the user was MFA-exempt (state `disabled`) when signing in
    admin: bool = False
    email: str | None = None
    name: str | None = None
    #: The request identity made from this session, built by ``Identity.from_session`` on first use and kept
    #: here, so a cookie served from the verified-cookie cache brings its identity along. Derived, so not part of
    #: the value: never compared, hashed, shown, passed in or copied by ``dataclasses.replace``.
    identity: Identity | None = field(default=None, init=False, repr=False, compare=False)

    def to_payload(self) -> dict[str, Any]:
        payload = {"s": self.sid, "u": self.username, "g": list(self.groups), "l": self.level,
                   "m": list(self.methods), "p": self.primary_at, "a": self.mfa_at, "i": self.issued_at,
                   "t": self.last_seen, "x": 1 if self.exempt else 0, "d": 1 if self.admin else 0}
        if self.email:
            payload["e"] = self.email
        if self.name:
            payload["n"] = self.name
        return payload

    @classmethod
    def from_payload(cls, data: Any) -> Session | None:
        """The session in a verified payload, or None when any field is missing or of the wrong type."""
        if type(data) is not dict:
            return None
        try:
            sid, username, groups, level, methods = data["s"], data["u"], data["g"], data["l"], data["m"]
            primary_at, mfa_at, issued_at, last_seen = data["p"], data["a"], data["i"], data["t"]
            exempt, admin = data["x"], data["d"]
        except KeyError:
            return None
        email, name = data.get("e"), data.get("n")
        if (type(sid) is not str or type(username) is not str or not username or type(groups) is not list
                or type(methods) is not list or type(level) is not int or level not in (1, 2)
                or type(exempt) is not int or exempt not in (0, 1) or type(admin) is not int or admin not in (0, 1)
                # times: a float or an int (not a bool), not negative: _is_time, inlined as this runs per cookie
                or type(primary_at) not in _TIME_TYPES or type(issued_at) not in _TIME_TYPES
                or type(last_seen) not in _TIME_TYPES or (mfa_at is not None and type(mfa_at) not in _TIME_TYPES)
                or not (primary_at >= 0 and issued_at >= 0 and last_seen >= 0 and (mfa_at is None or mfa_at >= 0))
                or (email is not None and type(email) is not str) or (name is not None and type(name) is not str)):
            return None
        for item in groups:
            if type(item) is not str:
                return None
        for item in methods:
            if type(item) is not str:
                return None
        try:
            return cls(sid, username, tuple(groups), level, tuple(methods), float(primary_at),
                       None if mfa_at is None else float(mfa_at), float(issued_at), float(last_seen), exempt == 1,
                       admin == 1, email, name)
        except OverflowError:  # an integer time too large for a float
            return None


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """Between the primary step and the second factor: who, how, since when, where to go next, and which
    enrollment is in flight.

    It holds no stage: what the sign-in may do next is derived at every request from the user's current record
    (``core/signin_flow.py``), so an old pending cookie cannot carry a stage that no longer applies.
    """

    sid: str
    username: str
    primary_method: str
    primary_at: float
    next: str
    enrollment_id: int | None = None
    #: the method this attempt uses (chosen with "Sign in another way"); None: the user's default
    method_id: int | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"s": self.sid, "u": self.username, "pm": self.primary_method, "p": self.primary_at,
                "n": self.next, "e": self.enrollment_id, "m": self.method_id}

    @classmethod
    def from_payload(cls, data: Any) -> PendingSignIn | None:
        try:
            sid, username, pm, primary_at, nxt, enrollment = (
                data["s"], data["u"], data["pm"], data["p"], data["n"], data["e"])
        except (KeyError, TypeError):
            return None
        method = data.get("m")
        if not (isinstance(sid, str) and sid and isinstance(username, str) and username and isinstance(pm, str)
                and _is_time(primary_at) and isinstance(nxt, str) and _is_id(enrollment) and _is_id(method)):
            return None
        try:
            return cls(sid=sid, username=username, primary_method=pm, primary_at=float(primary_at), next=nxt,
                       enrollment_id=enrollment, method_id=method)
        except OverflowError:  # an integer time too large for a float
            return None


@dataclass(frozen=True, slots=True)
class DeviceToken:
    """ "Remember this device": which user (id AND name, so a user deleted and made again under the same name does
    not inherit it), which device (a random id; the store keeps only a digest of it) and when it was remembered
    (the device row's ``created_at``: the user's credential epoch the device belongs to). The signature makes it
    unforgeable; whether the device still stands (not forgotten, expired or ended by a revocation) is the store's
    question (``services/devices.py``)."""

    user_id: int
    username: str
    device_id: str
    created_at: float

    def to_payload(self) -> dict[str, Any]:
        return {"i": self.user_id, "u": self.username, "d": self.device_id, "c": self.created_at}

    @classmethod
    def from_payload(cls, data: Any) -> DeviceToken | None:
        if type(data) is not dict:
            return None
        user_id, username, device_id, created_at = data.get("i"), data.get("u"), data.get("d"), data.get("c")
        if not (type(user_id) is int and user_id > 0 and type(username) is str and username
                and type(device_id) is str and 16 <= len(device_id) <= 64 and _is_time(created_at)):
            return None
        assert isinstance(created_at, (int, float))
        return cls(user_id=user_id, username=username, device_id=device_id, created_at=float(created_at))


def _is_id(value: object) -> bool:
    return value is None or (type(value) is int and value > 0)


class _HMACSHA256:
    """HMAC-SHA256 (RFC 2104) under one key, the key's two padded blocks hashed once: ``digest(message)`` equals
    ``hmac.new(key, message, hashlib.sha256).digest()`` at two hash copies instead of a key setup per call."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64decode(data: bytes) -> bytes:
    """``itsdangerous.encoding.base64_decode`` of bytes in one C call: padded, URL-safe alphabet, bytes outside
    the alphabet skipped (``base64.urlsafe_b64decode`` does exactly this); raises ``binascii.Error``."""
    return binascii.a2b_base64(data.translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(data) % 4))


_JSON = json.JSONDecoder()


def _session_payload(signed: bytes) -> Any:
    """The value in a verified session payload, decoded as itsdangerous's ``URLSafeSerializer`` encodes it; None
    when it does not decode (only a holder of a key could sign such a payload)."""
    try:
        compressed = signed.startswith(b".")
        data = _b64decode(signed[1:] if compressed else signed)
        if compressed:
            data = zlib.decompress(data)
        text = data.decode()
        value, end = _JSON.raw_decode(text)
    except (ValueError, zlib.error, RecursionError):  # base64, UTF-8 and JSON errors are ValueErrors
        return None
    return value if end == len(text) else None


_TIME_TYPES = (float, int)


def _is_time(value: object) -> bool:
    return type(value) in _TIME_TYPES and value >= 0  # type: ignore[operator]


class TokenCodec:
    """Signs and verifies the tokens of one configuration (one serializer per purpose)."""

    def __init__(self, secret_keys: tuple[str, ...], verified_cache_size: int = VERIFIED_CACHE_SIZE) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        self._verified: OrderedDict[str, Session] = OrderedDict()
        self._verified_size = verified_cache_size
        self._verified_lock = threading.Lock()
        keys = list(secret_keys)  # itsdangerous verifies with each and signs with the last
        kwargs = {"digest_method": hashlib.sha256}
        self.session_serializer = URLSafeSerializer(keys, salt=SALT_SESSION, signer_kwargs=kwargs)
        self.pending_serializer = URLSafeSerializer(keys, salt=SALT_PENDING, signer_kwargs=kwargs)
        self.csrf_serializer = URLSafeSerializer(keys, salt=SALT_CSRF, signer_kwargs=kwargs)
        self.device_serializer = URLSafeSerializer(keys, salt=SALT_DEVICE, signer_kwargs=kwargs)
        # The session keys, derived once as itsdangerous derives them, newest first (itsdangerous's order).
        signer = self.session_serializer.make_signer(SALT_SESSION)
        if type(signer.algorithm) is not HMACAlgorithm or signer.digest_method is not hashlib.sha256:
            raise TypeError("session tokens are verified here as HMAC-SHA256, as itsdangerous signs them")
        self._session_macs = tuple(_HMACSHA256(signer.derive_key(key)) for key in reversed(signer.secret_keys))

    @staticmethod
    def _loads(serializer: URLSafeSerializer, token: str | None) -> Any:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            return serializer.loads(token)
        except (BadData, ValueError, TypeError, UnicodeError):
            return None

    def dump_session(self, session: Session) -> str:
        return str(self.session_serializer.dumps(session.to_payload()))

    def load_session(self, token: str | None) -> Session | None:
        if token is None:
            return None
        known = self._verified.get(token)
        if known is not None:
            return known
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        signed = self.unsign_session(token)
        if signed is None:
            return None
        session = Session.from_payload(_session_payload(signed))
        if session is not None and self._verified_size:
            with self._verified_lock:
                self._verified[token] = session
                if len(self._verified) > self._verified_size:
                    self._verified.popitem(last=False)
        return session

    def unsign_session(self, token: str) -> bytes | None:
        """The signed part of a session token (its payload) when the signature verifies with one of the keys,
        else None: what itsdangerous's ``Signer.unsign`` returns for the session salt, without raising."""
        try:
            value, sep, signature = token.encode().rpartition(b".")
            mac = _b64decode(signature)
        except (ValueError, UnicodeError):  # binascii.Error is a ValueError
            return None
        if not sep:
            return None
        for keyed in self._session_macs:
            if hmac.compare_digest(keyed.digest(value), mac):
                return value
        return None

    def dump_pending(self, pending: PendingSignIn) -> str:
        return str(self.pending_serializer.dumps(pending.to_payload()))

    def load_pending(self, token: str | None) -> PendingSignIn | None:
        return PendingSignIn.from_payload(self._loads(self.pending_serializer, token))

    def dump_device(self, device: DeviceToken) -> str:
        return str(self.device_serializer.dumps(device.to_payload()))

    def load_device(self, token: str | None) -> DeviceToken | None:
        """The remembered device in a correctly signed device token, or None (tampered, another purpose's salt,
        malformed)."""
        return DeviceToken.from_payload(self._loads(self.device_serializer, token))

    def make_csrf(self, binding: str) -> str:
        """A CSRF token bound to the browser's current cookie (session id, pending id or anonymous id)."""
        return str(self.csrf_serializer.dumps({"b": binding}))

    def check_csrf(self, token: str | None, binding: str | None) -> bool:
        if not binding:
            return False
        data = self._loads(self.csrf_serializer, token)
        if not isinstance(data, dict) or not isinstance(data.get("b"), str):
            return False
        return secrets.compare_digest(data["b"], binding)


def session_expired(session: Session, now: float, absolute_timeout: float, inactivity_timeout: float) -> bool:
    """True when the absolute or the inactivity timeout has passed (or the times are from the future)."""
    if session.issued_at > now + 60 or session.last_seen > now + 60:
        return True
    return now - session.issued_at > absolute_timeout or now - session.last_seen > inactivity_timeout


def pending_expired(pending: PendingSignIn, now: float, sign_in_timeout: float) -> bool:
    return pending.primary_at > now + 60 or now - pending.primary_at > sign_in_timeout
