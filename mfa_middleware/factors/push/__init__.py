"""Push approval with number matching: a registered authenticator (a device key pair) approves a sign-in by picking
the 2-digit number the sign-in page shows, denies it, or reports it as fraud. ``docs/push-protocol.md`` describes
the device protocol for authors of authenticators; :mod:`.protocol` holds its signed byte strings.

Trust model:

- **Nothing from a device is believed unless its key signed it.** A device registers its public key (Ed25519 or
  ECDSA P-256) once, with a one-time registration token (random, 256 bits; only its SHA-256 is stored; valid
  :data:`REGISTRATION_TTL` seconds; used once, in one conditional UPDATE). Every later request of the device
  (``/device/v1/...``) is signed over method, path, body hash, timestamp, nonce and account id; a timestamp more
  than :data:`~.protocol.MAX_SKEW` seconds off, a nonce the device used before, an unknown account or a wrong
  signature get 401 and change nothing. An answer is signed once more over request id, answer, number and
  timestamp.
- **A device answers only its own requests.** A request id of another device (another user) is "no such request"
  (404), and nothing changes. A request's status moves once, in one conditional UPDATE, from ``pending`` (only
  before it expires, default 60 s) to ``approved``, ``denied``, ``failed`` (a wrong number) or ``fraud``; an
  approval is used once (``approved`` -> ``used``) by the sign-in that asked. So replays, twenty answers at once
  or two servers change nothing after the first answer.
- **Number matching** (against push fatigue): the page shows a number from 10 to 99; the device offers it among
  three and the user must pick it. A wrong number fails the attempt (counted like a wrong code), as does a deny.
  Fraud goes through :class:`~mfa_middleware.services.fraud.FraudReports` (block, notify, audit).
- **Requests the server sends are signed** with its Ed25519 key, derived from the encryption keys (the first one:
  rotating that key changes the server key, and devices must be set up again), so an authenticator can tell the
  server's requests from anyone else's.
- **Pushes are capped** per user: ``[methods.push] max_per_10_minutes`` (default 5); one more raises
  :class:`~mfa_middleware.factors.base.TooSoon`, and the page offers the other methods. The count and the insert are
  one statement.
- **Channels only wake the device** (:mod:`.channels`): a device may register a Web Push subscription or a webhook
  URL (at registration or with ``POST /device/v1/channel``, signed like every device request, changing that
  device's channel only); when a sign-in asks it, a background sender posts a wake-up without the number, after
  the request row exists and without ever delaying the sign-in page. Channel hosts are an operator's allow-list.
- **Long-poll never holds a transaction.** ``GET /device/v1/requests`` answers at once when a request is pending,
  else waits (at most :data:`MAX_WAIT` seconds) on an in-process condition, re-reading the store in short
  transactions at least every second (so a request made by another server is seen too).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Request, Response

from ...gateways import GatewayUnavailable
from ...secretbox import SecretBox
from ...services.audit import AuditLog
from ...services.fraud import FraudReports
from ...store import MethodRecord, Store, UserRecord
from ...store.sql import PushDeviceRecord, PushRequestRecord
from ..base import (Access, EnrollField, EnrollmentView, FactorContext, FactorRoute, Interaction, Outcome, Prompt,
                    RouteContext, TooSoon, Verification)
from . import protocol, webapp
from .channels import (DEFAULT_SEND_TIMEOUT, Channel, ChannelRefused, ChannelSender, ChannelSettings, Wake,
                       WakeResult, channel_from_json, parse_channel, vapid_public_key, wake_payload)
from .protocol import ProtocolError

#: how long a registration URL works (seconds)
REGISTRATION_TTL = 10 * 60
#: the longest a long-poll waits (seconds)
MAX_WAIT = 25
#: the window of the push cap (seconds)
CAP_WINDOW = 10 * 60
#: how often a waiting long-poll re-reads the store at the latest (seconds)
RECHECK_EVERY = 1.0
MAX_BODY = 8 * 1024
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{16,64}")
STATUS_PENDING, STATUS_APPROVED, STATUS_DENIED, STATUS_FAILED, STATUS_FRAUD, STATUS_USED = (
    "pending", "approved", "denied", "failed", "fraud", "used")


@dataclass(frozen=True, slots=True)
class PushSettings:
    prefix: str = "/_mfa"
    request_ttl: float = 60
    max_per_10_minutes: int = 5
    #: Web Push: the site's VAPID key (b64u raw P-256 private key; "" for none) and its contact
    vapid_private_key: str = ""
    vapid_subject: str = ""
    #: the allow-list of channel hosts (exact names, IP addresses or "*.suffix"), checked on set and on send
    channel_hosts: tuple[str, ...] = ()
    send_timeout: float = DEFAULT_SEND_TIMEOUT


def device_token() -> str:
    """A request or account id: 128 random bits, base64url, never starting with ``-`` (an id a person copies into
    ``mfa-authenticator deny ID`` must not read as an option)."""
    while True:
        token = secrets.token_urlsafe(16)
        if not token.startswith("-"):
            return token


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def _json(data: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _refused(status: int, error: str) -> Response:
    return _json({"error": error}, status)


class PushFactor:
    kind = "push"
    label = "Authenticator app notification"
    description = "Approve a notification on your registered authenticator by picking the number the page shows."
    interaction = Interaction.OUT_OF_BAND
    templates = __name__
    enroll_fields: tuple[EnrollField, ...] = ()
    standalone = True
    routes: tuple[FactorRoute, ...] = (
        FactorRoute("/device/v1/register", "register", Access.PUBLIC, ("POST",)),
        FactorRoute("/device/v1/requests", "requests", Access.PUBLIC, ("GET",)),
        FactorRoute("/device/v1/answer", "answer", Access.PUBLIC, ("POST",)),
        FactorRoute("/device/v1/channel", "channel", Access.PUBLIC, ("POST",)),
        FactorRoute("/push/status.json", "poll", Access.SIGN_IN, ("GET",)),
        FactorRoute("/authenticator/", "webapp", Access.PUBLIC, ("GET",)),
        FactorRoute("/authenticator/<path:filename>", "webapp", Access.PUBLIC, ("GET",)),
    )

    def __init__(self, store: Store, box: SecretBox, audit: AuditLog, fraud: FraudReports, settings: PushSettings,
                 *, clock: Callable[[], float] = time.time, max_per_user: int = 5) -> None:
        self.store, self.box, self.audit, self.fraud, self.settings = store, box, audit, fraud, settings
        self.clock = clock
        self.max_per_user = max_per_user
        seed = box.lookup_keys("push server signing key")[0]
        self._server_key = ed25519.Ed25519PrivateKey.from_private_bytes(seed[:32])
        self.server_public_key = self._server_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        # Long-polls of this process wait here; a new request wakes them (other servers' requests are seen at
        # the next re-read).
        self._changed = threading.Condition()
        self._generation = 0
        self.sender = ChannelSender(ChannelSettings(
            vapid_private_key=settings.vapid_private_key, vapid_subject=settings.vapid_subject,
            hosts=settings.channel_hosts, timeout=settings.send_timeout), self._wake_result)
        self.vapid_public_key = vapid_public_key(settings.vapid_private_key) if settings.vapid_private_key else None

    # -- enrollment ----------------------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        self.store.delete_methods(user.id, unconfirmed_only=True)  # one enrollment in flight per user
        token = secrets.token_urlsafe(32)
        method_id = self.store.add_method(user.id, self.kind, self.label, None, now=ctx.now,
                                          detail=self.box.encrypt(json.dumps({"token": token})))
        self.store.add_push_registration(user.id, method_id, token_digest(token), now=ctx.now,
                                         expires_at=ctx.now + REGISTRATION_TTL)
        method = self.store.get_method(method_id)
        assert method is not None
        return self.enroll_view(user, method, ctx)

    def registration_url(self, origin: str, token: str) -> str:
        return f"{origin.rstrip('/')}{self.settings.prefix}/device/v1/register?token={token}"

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        token = ""
        if method.detail is not None:
            token = str(json.loads(self.box.decrypt(method.detail)).get("token", ""))
        url = self.registration_url(ctx.origin or "http://localhost", token)
        svg = segno.make(url, error="m").svg_inline(scale=4, dark="#111827", light="#ffffff",
                                                    title="Registration QR code for your authenticator")
        device = self.store.push_device_of_method(method.id)
        return EnrollmentView(method_id=method.id, fields={"url": url, "qr_svg": svg, "minutes": str(
            REGISTRATION_TTL // 60), "device": device.name if device is not None else ""})

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        if method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        if self.store.push_device_of_method(method.id) is None:
            return Verification(Outcome.PENDING)  # the device has not registered yet
        if not self.store.confirm_method(method.id, user.id, step=None, now=ctx.now,
                                         only_if_first=ctx.first_method_only):
            return Verification(Outcome.REPLAYED)
        return Verification(Outcome.ACCEPTED)

    # -- sign-in -------------------------------------------------------------------------------------------------
    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        if not ctx.attempt_id or self.store.push_request_of_attempt(method.id, ctx.attempt_id) is not None:
            return  # one request per attempt: a reload or a poll sends nothing
        device = self.store.push_device_of_method(method.id)
        if device is None:
            raise GatewayUnavailable("this push method has no registered device")
        number = 10 + secrets.randbelow(90)
        others: set[int] = set()
        while len(others) < 2:
            candidate = 10 + secrets.randbelow(90)
            if candidate != number:
                others.add(candidate)
        choices = [number, *others]
        secrets.SystemRandom().shuffle(choices)
        public_id = device_token()
        host = urlsplit(ctx.origin).netloc if ctx.origin else ""
        made = self.store.add_push_request(
            public_id=public_id, user_id=user.id, method_id=method.id, device_id=device.id,
            sign_in_id=ctx.attempt_id, number=number, choices=choices, site=ctx.site_name, host=host,
            client_ip=ctx.client_ip, user_agent=ctx.user_agent, now=ctx.now,
            expires_at=ctx.now + self.settings.request_ttl, cap=self.settings.max_per_10_minutes, window=CAP_WINDOW)
        if made is None:
            self.audit.write("push", "capped", now=ctx.now, actor=user.username, username=user.username,
                             client_ip=ctx.client_ip, user_agent=ctx.user_agent,
                             limit=self.settings.max_per_10_minutes)
            raise TooSoon("Too many sign-in requests were sent to your authenticator in the last 10 minutes. "
                          "Try again in a few minutes, or sign in another way.")
        self.audit.write("push", "sent", now=ctx.now, actor=user.username, username=user.username,
                         client_ip=ctx.client_ip, user_agent=ctx.user_agent, reference=f"push-{made}")
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        if device.channel is not None:
            self._wake(device.id, device.channel, user.username, public_id, made, ctx)

    # -- push channels -------------------------------------------------------------------------------------------
    def _wake(self, device_id: int, stored: bytes, username: str, public_id: str, request_id: int,
              ctx: FactorContext) -> None:
        """Queue the device's wake-up (never raises: the sign-in page does not depend on it)."""
        reference = f"push-{request_id}"
        try:
            channel = channel_from_json(self.box.decrypt(stored))
        except Exception as exc:  # an undecryptable or damaged channel: audited, the long-poll still works
            self.audit.write("push", "wake_failed", now=ctx.now, actor=username, username=username,
                             reference=reference, reason=f"stored channel unusable: {type(exc).__name__}")
            return
        wake = Wake(device_id=device_id, stored=stored, channel=channel,
                    payload=wake_payload(ctx.site_name, public_id), ttl=int(self.settings.request_ttl),
                    username=username, reference=reference, title=ctx.site_name)
        if not self.sender.submit(wake):
            self.audit.write("push", "wake_failed", now=ctx.now, actor=username, username=username,
                             reference=reference, channel=channel.type,
                             reason="too many wake-ups waiting to be sent; not sent")

    def _wake_result(self, wake: Wake, result: WakeResult) -> None:
        """Audit a wake-up's fate (in the sender's thread); a Web Push "gone" removes that channel."""
        reason = result.reason
        if result.outcome == "gone" and not self.store.clear_push_channel(wake.device_id, wake.stored):
            reason = f"HTTP {result.status}: the subscription is gone (the device has set another channel since)"
        detail: dict[str, Any] = {"channel": wake.channel.type, "target": result.host, "reference": wake.reference}
        if reason:
            detail["reason"] = reason
        self.audit.write("push", "wake_sent" if result.outcome == "sent" else "wake_failed", now=self.clock(),
                         actor=wake.username, username=wake.username, **detail)

    def _channel_of(self, data: Mapping[str, Any]) -> Channel | None:
        return parse_channel(data.get("channel"), self.settings.channel_hosts,
                             webpush_available=self.sender.webpush_available)

    def _store_channel(self, channel: Channel | None) -> bytes | None:
        return None if channel is None else self.box.encrypt(json.dumps(channel.to_json()))

    def _set_channel(self, rctx: RouteContext, device: PushDeviceRecord) -> Response:
        try:
            data = json.loads(self._body(rctx.request) or b"")
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or "channel" not in data:
            return _refused(400, "send JSON with \"channel\": a Web Push subscription, a webhook or null")
        try:
            channel = self._channel_of(data)
        except ChannelRefused as exc:
            rctx.audit("push", "channel_refused", reason=str(exc), credential=device.account_id)
            return _refused(exc.status, str(exc))
        self.store.set_push_channel(device.id, self._store_channel(channel))
        user = self.store.get_user_by_id(device.user_id)
        username = user.username if user is not None else None
        host = "" if channel is None else (urlsplit(channel.url).hostname or "")
        self.audit.write("push", "channel_set" if channel is not None else "channel_removed", now=rctx.now,
                         actor=username or "anonymous", username=username, client_ip=rctx.client_ip,
                         user_agent=rctx.user_agent, credential=device.account_id,
                         channel=channel.type if channel is not None else "", target=host)
        return _json({"channel": None if channel is None else channel.type})

    def status_of(self, request: PushRequestRecord | None, now: float) -> str:
        """What a poll sees: pending | approved | denied | failed | fraud (an expired pending request failed)."""
        if request is None:
            return STATUS_FAILED
        if request.status == STATUS_PENDING:
            return STATUS_PENDING if now < request.expires_at else STATUS_FAILED
        return STATUS_APPROVED if request.status == STATUS_USED else request.status

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        request = self.store.push_request_of_attempt(method.id, ctx.attempt_id) if ctx.attempt_id else None
        status = self.status_of(request, ctx.now)
        device = self.store.push_device_of_method(method.id)
        return Prompt(Interaction.OUT_OF_BAND,
                      f"We sent a sign-in request to {device.name if device else 'your authenticator'}.",
                      {"status": status, "number": str(request.number) if request is not None else "",
                       "poll": f"{self.settings.prefix}/{self.kind}/status.json", "interval": "1000"})

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        if not method.confirmed or method.user_id != user.id or method.kind != self.kind or not ctx.attempt_id:
            return Verification(Outcome.REJECTED)
        request = self.store.push_request_of_attempt(method.id, ctx.attempt_id)
        status = self.status_of(request, ctx.now)
        if request is None or status in (STATUS_FAILED, STATUS_DENIED):
            return Verification(Outcome.REJECTED)
        if status == STATUS_PENDING:
            return Verification(Outcome.PENDING)
        if status == STATUS_FRAUD:
            return Verification(Outcome.FRAUD)
        return Verification(Outcome.ACCEPTED if self.store.use_push_request(request.id) else Outcome.REPLAYED)

    # -- the device protocol -------------------------------------------------------------------------------------
    def envelope(self, request: PushRequestRecord, account_id: str) -> dict[str, str]:
        """A sign-in request as the device receives it, signed with the server's key."""
        payload = protocol.canonical_json({
            "v": 1, "id": request.public_id, "account_id": account_id, "site": request.site, "host": request.host,
            "client_ip": request.client_ip, "user_agent": request.user_agent, "created_at": int(request.created_at),
            "expires_at": int(request.expires_at), "numbers": list(request.choices)})
        return {"payload": protocol.b64u(payload), "signature": protocol.b64u(self._server_key.sign(payload))}

    def _body(self, request: Request) -> bytes | None:
        if (request.content_length or 0) > MAX_BODY:
            return None
        data = request.get_data(cache=True)
        return data if len(data) <= MAX_BODY else None

    def authenticate(self, request: Request, now: float) -> PushDeviceRecord | str:
        """The device that signed this request, or why it is refused (see the trust model)."""
        account = request.headers.get(protocol.HEADER_ACCOUNT, "")
        raw_ts = request.headers.get(protocol.HEADER_TIMESTAMP, "")
        nonce = request.headers.get(protocol.HEADER_NONCE, "")
        raw_sig = request.headers.get(protocol.HEADER_SIGNATURE, "")
        if not (account and raw_ts and nonce and raw_sig):
            return "unsigned request"
        if not _ACCOUNT.fullmatch(account) or not _NONCE.fullmatch(nonce) or not re.fullmatch(r"[0-9]{1,12}", raw_ts):
            return "malformed signature headers"
        timestamp = int(raw_ts)
        if abs(timestamp - now) > protocol.MAX_SKEW:
            return "stale timestamp"
        body = self._body(request)
        if body is None:
            return "body too large"
        device = self.store.push_device_by_account(account)
        if device is None:
            return "unknown account"
        try:
            key, _ = protocol.load_public_key(device.public_key)
            signature = protocol.unb64u(raw_sig, "signature")
        except ProtocolError:
            return "bad signature"
        query = request.query_string.decode("latin-1")
        path = request.root_path + request.path + (f"?{query}" if query else "")
        if not protocol.verify(key, signature, protocol.request_string(request.method, path, body, timestamp, nonce,
                                                                       account)):
            return "bad signature"
        if not self.store.use_push_nonce(device.id, nonce, now=now, keep_until=timestamp + protocol.MAX_SKEW + 1):
            return "replayed nonce"
        return device

    def _register(self, rctx: RouteContext) -> Response:
        body = self._body(rctx.request)
        try:
            data = json.loads(body or b"")
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("token", "public_key")):
            return _refused(400, "send JSON with token, public_key and name")
        name = str(data.get("name") or "Authenticator")[:100].strip() or "Authenticator"
        try:
            spki = protocol.unb64u(data["public_key"], "public_key")
            _, algorithm = protocol.load_public_key(spki)
        except ProtocolError as exc:
            return _refused(400, str(exc))
        try:
            channel = self._channel_of(data)
        except ChannelRefused as exc:
            rctx.audit("push", "register_refused", reason=str(exc))
            return _refused(exc.status, str(exc))
        account_id = device_token()
        device = self.store.register_push_device(token_digest(data["token"][:128]), account_id=account_id,
                                                 public_key=spki, algorithm=algorithm, name=name, now=rctx.now,
                                                 channel=self._store_channel(channel))
        if device is None:
            rctx.audit("push", "register_refused", reason="unknown, used or expired registration URL")
            return _refused(410, "this registration URL is unknown, used or expired: set the method up again")
        user = self.store.get_user_by_id(device.user_id)
        name_of_user = user.username if user is not None else ""
        self.audit.write("push", "registered", now=rctx.now, actor=name_of_user, username=name_of_user,
                         client_ip=rctx.client_ip, user_agent=rctx.user_agent, label=device.name,
                         credential=f"{algorithm}:{account_id}")
        base = rctx.request.host_url.rstrip("/") + rctx.request.root_path + self.settings.prefix + "/device/v1"
        return _json({"account_id": account_id, "server_key": protocol.b64u(self.server_public_key),
                      "base_url": base, "site": rctx.factor_context.site_name, "username": name_of_user,
                      "algorithm": algorithm, "vapid_public_key": self.vapid_public_key,
                      "channel": None if channel is None else channel.type})

    def _requests(self, rctx: RouteContext, device: PushDeviceRecord) -> Response:
        raw_wait = rctx.request.args.get("wait", str(MAX_WAIT))
        wait = min(int(raw_wait), MAX_WAIT) if raw_wait.isascii() and raw_wait.isdigit() else MAX_WAIT
        deadline = time.monotonic() + wait
        self.store.touch_push_device(device.id, now=rctx.now)
        while True:
            with self._changed:
                seen = self._generation
            pending = self.store.pending_push_requests(device.id, now=self.clock())
            remaining = deadline - time.monotonic()
            if pending or remaining <= 0:
                break
            with self._changed:  # no transaction is open here
                if self._generation == seen:
                    self._changed.wait(timeout=min(RECHECK_EVERY, remaining))
        return _json({"requests": [self.envelope(r, device.account_id) for r in pending]})

    def _answer(self, rctx: RouteContext, device: PushDeviceRecord) -> Response:
        try:
            data = json.loads(self._body(rctx.request) or b"")
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            return _refused(400, "send JSON with request_id, answer, number, timestamp and signature")
        request_id, answer, number, timestamp = (data.get("request_id"), data.get("answer"), data.get("number"),
                                                 data.get("timestamp"))
        if not (isinstance(request_id, str) and answer in protocol.ANSWERS and isinstance(timestamp, int)
                and not isinstance(timestamp, bool)
                and (number is None or (isinstance(number, int) and not isinstance(number, bool)))):
            return _refused(400, "request_id (string), answer (approve|deny|fraud), number (integer or null) and "
                                 "timestamp (integer) are required")
        assert isinstance(answer, str)
        if answer == "approve" and number is None:
            return _refused(400, "an approval carries the number the user picked")
        try:
            key, _ = protocol.load_public_key(device.public_key)
            signature = protocol.unb64u(str(data.get("signature", "")), "signature")
        except ProtocolError:
            return _refused(401, "bad answer signature")
        if not protocol.verify(key, signature, protocol.answer_string(request_id, answer, number, timestamp)):
            rctx.audit("push", "answer_refused", reason="bad answer signature", credential=device.account_id)
            return _refused(401, "bad answer signature")
        if abs(timestamp - rctx.now) > protocol.MAX_SKEW:
            return _refused(401, "stale answer timestamp")
        request = self.store.push_request_by_public_id(request_id)
        if request is None or request.device_id != device.id:
            rctx.audit("push", "answer_refused", reason="no such request for this device", credential=device.account_id)
            return _refused(404, "no such request")
        if self.status_of(request, rctx.now) != STATUS_PENDING:
            return _refused(409, "this request was answered already or has expired")
        status = {"deny": STATUS_DENIED, "fraud": STATUS_FRAUD}.get(answer) or (
            STATUS_APPROVED if number == request.number else STATUS_FAILED)
        if not self.store.settle_push_request(request.id, status, now=rctx.now):
            return _refused(409, "this request was answered already or has expired")
        user = self.store.get_user_by_id(request.user_id)
        username = user.username if user is not None else None
        self.audit.write("push", "answer_" + ("wrong_number" if status == STATUS_FAILED else status), now=rctx.now,
                         actor=username or "anonymous", username=username, client_ip=rctx.client_ip,
                         user_agent=rctx.user_agent, reference=f"push-{request.id}")
        if status == STATUS_FRAUD and user is not None:
            outcome = self.fraud.report(user, self.kind, now=rctx.now, client_ip=request.client_ip,
                                        user_agent=request.user_agent, reference=f"push:{request.id}")
            return _json({"status": status, "message": outcome.message})
        return _json({"status": status})

    def handle(self, route: str, rctx: RouteContext, **args: str) -> Response:
        if route == "poll":
            if rctx.method is None:
                raise NotFound()
            request = self.store.push_request_of_attempt(rctx.method.id, rctx.factor_context.attempt_id)
            return _json({"status": self.status_of(request, rctx.now)})
        if route == "register":
            return self._register(rctx)
        if route == "webapp":
            return webapp.serve(rctx.request, args.get("filename", ""), rctx.factor_context.site_name)
        if route not in ("requests", "answer", "channel"):
            raise NotFound()
        device = self.authenticate(rctx.request, rctx.now)
        if isinstance(device, str):
            rctx.audit("push", "device_refused", reason=device)
            return _refused(401, device)
        if route == "requests":
            return self._requests(rctx, device)
        if route == "channel":
            return self._set_channel(rctx, device)
        return self._answer(rctx, device)


__all__ = ["PushFactor", "PushSettings", "REGISTRATION_TTL", "token_digest"]
