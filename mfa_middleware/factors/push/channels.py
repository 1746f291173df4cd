"""Push channels: how the server wakes a device when a sign-in asks it something. ``docs/push-protocol.md``
("Push channels") is the description for authors of authenticators.

Two kinds:

- **Web Push** (RFC 8030), the browser's ``PushSubscription``: the wake-up is encrypted for the subscription
  (RFC 8291, ``aes128gcm``) and the site identifies itself with its VAPID key (RFC 8292), through ``pywebpush``;
- **webhook** (UnifiedPush / ntfy style): a plain POST of the same small JSON to a URL the device chose.

Trust model:

- **A channel only wakes the device.** The wake-up is ``{"v": 1, "type": "sign-in", "site", "id"}``: no number, no
  secret, nothing the device acts on. The device then fetches its requests over the signed protocol and verifies
  the server's signature as always; a forged or replayed wake-up at most makes it ask for nothing.
- **A device cannot make the server POST anywhere it likes.** Channel URLs are ``https`` only, to a host on the
  operator's allow-list (``[methods.push] channel_hosts``: exact names, or ``*.suffix`` for names below a domain),
  with no user name or password, ASCII only, at most :data:`MAX_URL` characters. Plain ``http`` is accepted only
  for a loopback host listed exactly (a test or a push service on the same machine). Redirects are never followed,
  no proxy or ``.netrc`` is read from the environment, and every send has a timeout. The allow-list is checked
  again at every send, so removing a host from it stops wake-ups to it at once.
- **A channel is a capability.** Whoever knows a subscription's endpoint and keys can wake (or spam) the device,
  so the channel is stored encrypted (SecretBox) and neither URLs nor keys reach audit rows or logs (the host
  does).
- **Sending never delays or fails a sign-in.** :class:`ChannelSender` queues wake-ups for a few worker threads (at
  most :data:`MAX_WORKERS`, :data:`MAX_QUEUE` waiting; a full queue drops the wake-up and says so); the result of
  each send, a 404 or 410 from a Web Push service (the subscription is gone: the channel is removed), a timeout or
  another failure, goes to a callback that audits it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import requests  # type: ignore[import-untyped,unused-ignore]
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)

#: the longest channel URL accepted (push services' endpoints are a few hundred characters)
MAX_URL = 2048
#: worker threads that send wake-ups at the same time, at most
MAX_WORKERS = 4
#: wake-ups waiting for a worker, at most; more are dropped (and audited)
MAX_QUEUE = 100
#: a worker with nothing to do for this long ends (seconds); the next wake-up starts one again
IDLE_SECONDS = 5.0
#: the largest answer body read from a push service or webhook
MAX_ANSWER_BYTES = 16 * 1024
#: ``[methods.push] send_timeout`` by default (seconds)
DEFAULT_SEND_TIMEOUT = 10.0
#: VAPID tokens are valid this long (RFC 8292 allows at most 24 hours)
VAPID_LIFETIME = 12 * 3600

ChannelType = Literal["webpush", "webhook"]
_B64U = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_WEBPUSH_KEYS = frozenset({"type", "endpoint", "keys", "expirationTime"})
_LOOPBACK_NAMES = frozenset({"localhost"})


class ChannelRefused(ValueError):
    """A channel a device sent cannot be used: ``status`` 400 (malformed) or 403 (host not allowed)."""

    def __init__(self, status: Literal[400, 403], message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class WebPushChannel:
    """A browser's push subscription: ``endpoint`` and the keys the payload is encrypted for (b64u)."""

    endpoint: str
    p256dh: str
    auth: str
    type: ChannelType = "webpush"

    @property
    def url(self) -> str:
        return self.endpoint

    def to_json(self) -> dict[str, Any]:
        return {"type": "webpush", "endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass(frozen=True, slots=True)
class WebhookChannel:
    """A URL the server POSTs the wake-up to (ntfy topic, UnifiedPush endpoint)."""

    url: str
    type: ChannelType = "webhook"

    def to_json(self) -> dict[str, Any]:
        return {"type": "webhook", "url": self.url}


Channel = WebPushChannel | WebhookChannel


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """True if ``host`` (lower case, no brackets) is on the allow-list: equal to an entry, or below the domain of
    a ``*.suffix`` entry (``*.push.example.com`` allows ``a.push.example.com``, not ``push.example.com``)."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1 and not _is_ip(host):
                return True
        elif host == pattern:
            return True
    return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: Any, patterns: tuple[str, ...], what: str) -> str:
    """``url`` if a channel may point to it (see the trust model), else :class:`ChannelRefused`; the message
    names the host at most, never the rest of the URL."""
    if not isinstance(url, str) or not url:
        raise ChannelRefused(400, f"{what}: a URL string is required")
    if len(url) > MAX_URL:
        raise ChannelRefused(400, f"{what}: longer than {MAX_URL} characters")
    if not url.isascii() or any(ord(c) <= 0x20 or c in "\\\x7f" for c in url):
        raise ChannelRefused(400, f"{what}: only printable ASCII without spaces or backslashes (punycode for "
                                  "international host names)")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise ChannelRefused(400, f"{what}: not a URL") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ChannelRefused(400, f"{what}: an https:// URL is required")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise ChannelRefused(400, f"{what}: a user name or password in the URL is not accepted")
    if parts.fragment or "#" in url:
        raise ChannelRefused(400, f"{what}: a fragment (#...) is not accepted")
    if port == 0 or not re.fullmatch(r"[a-z0-9.:-]+", host) or host.endswith("."):
        raise ChannelRefused(400, f"{what}: not a usable host name")
    if parts.scheme == "http" and not (_is_loopback(host) and host in patterns):
        raise ChannelRefused(400, f"{what}: an https:// URL is required (http only for a loopback host listed in "
                                  "[methods.push] channel_hosts)")
    if not host_allowed(host, patterns):
        raise ChannelRefused(403, f"{what}: the host {host} is not in this site's [methods.push] channel_hosts")
    return url


def _b64u_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _B64U.fullmatch(value) or len(value) > 200:
        raise ChannelRefused(400, f"{what}: not a base64url string")
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise ChannelRefused(400, f"{what}: not a base64url string") from None


def parse_channel(value: Any, patterns: tuple[str, ...], *, webpush_available: bool) -> Channel | None:
    """A channel from a device's JSON (the ``channel`` member of the body), checked: None for ``null``; raises
    :class:`ChannelRefused` for anything else that is not a usable channel."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ChannelRefused(400, "channel: an object (or null) is required")
    kind = value.get("type")
    if kind == "webhook":
        if set(value) - {"type", "url"}:
            raise ChannelRefused(400, "channel: a webhook channel has only \"type\" and \"url\"")
        return WebhookChannel(check_url(value.get("url"), patterns, "channel.url"))
    if kind != "webpush":
        raise ChannelRefused(400, "channel.type: \"webpush\" or \"webhook\"")
    if set(value) - _WEBPUSH_KEYS:
        raise ChannelRefused(400, "channel: a webpush channel has \"type\", \"endpoint\", \"keys\" (and "
                                  "\"expirationTime\") only")
    if not webpush_available:
        raise ChannelRefused(400, "channel: this site has no VAPID key, so Web Push is not available; use a "
                                  "webhook channel or long-poll")
    expiration = value.get("expirationTime")
    if expiration is not None and (isinstance(expiration, bool) or not isinstance(expiration, int | float)):
        raise ChannelRefused(400, "channel.expirationTime: a number or null")
    keys = value.get("keys")
    if not isinstance(keys, dict) or set(keys) != {"p256dh", "auth"}:
        raise ChannelRefused(400, "channel.keys: an object with \"p256dh\" and \"auth\" only")
    p256dh = _b64u_bytes(keys["p256dh"], "channel.keys.p256dh")
    if len(p256dh) != 65 or p256dh[0] != 4:
        raise ChannelRefused(400, "channel.keys.p256dh: a 65-byte uncompressed P-256 point is required")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise ChannelRefused(400, "channel.keys.p256dh: not a point on P-256") from None
    if len(_b64u_bytes(keys["auth"], "channel.keys.auth")) != 16:
        raise ChannelRefused(400, "channel.keys.auth: 16 bytes are required")
    endpoint = check_url(value.get("endpoint"), patterns, "channel.endpoint")
    return WebPushChannel(endpoint, keys["p256dh"].rstrip("="), keys["auth"].rstrip("="))


def channel_from_json(text: str) -> Channel:
    """A stored channel (written by :meth:`to_json` after :func:`parse_channel` checked it)."""
    data = json.loads(text)
    if data.get("type") == "webpush":
        return WebPushChannel(data["endpoint"], data["keys"]["p256dh"], data["keys"]["auth"])
    return WebhookChannel(data["url"])


def wake_payload(site: str, request_id: str) -> bytes:
    """The wake-up's body: never the number, never anything the device must trust."""
    return json.dumps({"v": 1, "type": "sign-in", "site": site, "id": request_id},
                      separators=(",", ":")).encode("utf-8")


# -- sending -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChannelSettings:
    #: base64url of the raw 32-byte P-256 private key ("": no Web Push)
    vapid_private_key: str = ""
    vapid_subject: str = ""
    hosts: tuple[str, ...] = ()
    timeout: float = DEFAULT_SEND_TIMEOUT


@dataclass(frozen=True, slots=True)
class Wake:
    """One wake-up to send. ``stored`` is the channel's stored (encrypted) bytes, so that a "gone" answer removes
    this channel only, never one the device set since."""

    device_id: int
    stored: bytes
    channel: Channel
    payload: bytes
    ttl: int
    username: str
    reference: str
    title: str = ""


Outcome = Literal["sent", "failed", "gone"]


@dataclass(frozen=True, slots=True)
class WakeResult:
    outcome: Outcome
    host: str
    status: int | None = None
    reason: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


def vapid_public_key(private_key: str) -> str:
    """The b64u 65-byte uncompressed public point of a VAPID key (``applicationServerKey`` in a browser)."""
    raw = base64.urlsafe_b64decode(private_key + "=" * (-len(private_key) % 4))
    key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    from cryptography.hazmat.primitives import serialization

    point = key.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode("ascii")


class ChannelSender:
    """Sends wake-ups in the background; ``on_result`` hears how each one went (in a worker thread)."""

    def __init__(self, settings: ChannelSettings, on_result: Callable[[Wake, WakeResult], None], *,
                 max_workers: int = MAX_WORKERS, max_queue: int = MAX_QUEUE) -> None:
        self.settings = settings
        self.on_result = on_result
        self.max_workers = max_workers
        self._queue: queue.Queue[Wake] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._workers = 0
        self._vapid: Any = None
        if settings.vapid_private_key:
            from py_vapid import Vapid02  # type: ignore[import-untyped,unused-ignore]

            raw = base64.urlsafe_b64decode(settings.vapid_private_key + "=" * (-len(settings.vapid_private_key) % 4))
            self._vapid = Vapid02(ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()))

    @property
    def webpush_available(self) -> bool:
        return self._vapid is not None

    def submit(self, wake: Wake) -> bool:
        """Queue a wake-up; never blocks. False (nothing sent) when the queue is full."""
        with self._lock:
            try:
                self._queue.put_nowait(wake)
            except queue.Full:
                return False
            if self._workers < self.max_workers:
                self._workers += 1
                threading.Thread(target=self._work, name="mfa-push-wake", daemon=True).start()
        return True

    def _work(self) -> None:
        while True:
            try:
                wake = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._workers -= 1
                        return
                continue
            try:
                result = self.deliver(wake)
            except Exception as exc:  # a bug must not end the worker; the result says what failed
                log.exception("push wake-up failed unexpectedly")
                result = WakeResult("failed", urlsplit(wake.channel.url).hostname or "", None,
                                    f"internal error: {type(exc).__name__}")
            try:
                self.on_result(wake, result)
            except Exception:
                log.exception("push wake-up result not recorded")

    def deliver(self, wake: Wake) -> WakeResult:
        """Send one wake-up now (in the calling thread) and say how it went."""
        host = urlsplit(wake.channel.url).hostname or ""
        try:
            check_url(wake.channel.url, self.settings.hosts, "channel")
        except ChannelRefused as exc:
            return WakeResult("failed", host, None, f"not sent: {exc}")
        if isinstance(wake.channel, WebPushChannel):
            return self._webpush(wake.channel, wake, host)
        return self._webhook(wake.channel, wake, host)

    def _webhook(self, channel: WebhookChannel, wake: Wake, host: str) -> WakeResult:
        headers = {"Content-Type": "application/json", "Priority": "high", "TTL": str(wake.ttl),
                   "Urgency": "high"}
        if wake.title and wake.title.isascii() and wake.title.isprintable():
            headers["Title"] = wake.title  # ntfy shows it as the notification's title
        try:
            with httpx.Client(timeout=httpx.Timeout(self.settings.timeout), follow_redirects=False,
                              trust_env=False, transport=httpx.HTTPTransport(retries=0)) as client:
                with client.stream("POST", channel.url, content=wake.payload, headers=headers) as response:
                    read = 0
                    for chunk in response.iter_bytes():
                        read += len(chunk)
                        if read > MAX_ANSWER_BYTES:
                            break
                    status = response.status_code
        except httpx.TimeoutException:
            return WakeResult("failed", host, None, f"no answer within {self.settings.timeout:g} s")
        except httpx.HTTPError as exc:
            return WakeResult("failed", host, None, f"cannot reach the host: {type(exc).__name__}")
        if 200 <= status < 300:
            return WakeResult("sent", host, status)
        if 300 <= status < 400:
            return WakeResult("failed", host, status, f"HTTP {status}: a redirect, not followed")
        return WakeResult("failed", host, status, f"HTTP {status}")

    def _webpush(self, channel: WebPushChannel, wake: Wake, host: str) -> WakeResult:
        if self._vapid is None:
            return WakeResult("failed", host, None, "not sent: this site has no VAPID key")
        from pywebpush import WebPusher  # type: ignore[import-untyped,unused-ignore]

        parts = urlsplit(channel.endpoint)
        claims = {"sub": self.settings.vapid_subject, "aud": f"{parts.scheme}://{parts.netloc}",
                  "exp": int(time.time()) + VAPID_LIFETIME}
        headers: dict[str, str] = {**self._vapid.sign(claims), "Urgency": "high"}
        session = _session()
        try:
            response = WebPusher(channel.to_json(), requests_session=session).send(
                wake.payload, headers, ttl=max(1, wake.ttl), content_encoding="aes128gcm",
                timeout=self.settings.timeout)
            status = int(response.status_code)
            response.close()
        except requests.Timeout:
            return WakeResult("failed", host, None, f"no answer within {self.settings.timeout:g} s")
        except requests.TooManyRedirects:
            return WakeResult("failed", host, None, "a redirect, not followed")
        except requests.RequestException as exc:
            return WakeResult("failed", host, None, f"cannot reach the push service: {type(exc).__name__}")
        finally:
            session.close()
        if 200 <= status < 300:
            return WakeResult("sent", host, status)
        if status in (404, 410):
            return WakeResult("gone", host, status, f"HTTP {status}: the subscription is gone; channel removed")
        if 300 <= status < 400:
            return WakeResult("failed", host, status, f"HTTP {status}: a redirect, not followed")
        return WakeResult("failed", host, status, f"HTTP {status}")


def _session() -> Any:
    """A session that never follows a redirect (``max_redirects = 0`` raises before the redirected request is
    made) and reads nothing from the environment (proxies, ``.netrc``)."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = 0
    return session


__all__ = ["DEFAULT_SEND_TIMEOUT", "Channel", "ChannelRefused", "ChannelSender", "ChannelSettings", "Wake",
           "WakeResult", "WebPushChannel", "WebhookChannel", "channel_from_json", "check_url", "host_allowed",
           "parse_channel", "vapid_public_key", "wake_payload"]
