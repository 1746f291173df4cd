"""A generic webhook gateway: each text or call is one signed JSON POST to the operator's own service.

For operators whose provider does not speak the Twilio API: a small service of theirs receives

```json
{"type": "text", "to": "+447400123456", "body": "...", "reference": "...", "timestamp": 1700000000}
{"type": "call", "to": "+447400123456", "script_url": "https://...", "status_url": "https://...",
 "extension": "123" or null, "timeout": 30, "reference": "...", "timestamp": 1700000000}
```

with the headers ``X-MFA-Timestamp: <unix seconds>`` and ``X-MFA-Signature: v1=<hex>``, where the hex is
HMAC-SHA256 keyed with the shared secret over ``f"{timestamp}."`` followed by the exact body bytes
(:func:`sign_webhook`). It answers 2xx with ``{"id": "<its id for the message or call>"}``; any other answer
is an error as :mod:`~mfa_middleware.gateways.phone.transport` maps it (4xx: refused, 5xx: unavailable).

Its answers come back the same way: the service POSTs to the call's ``status_url`` (or the factor's answer
URL) a body signed with the same two headers, and the factor checks them with
:func:`check_webhook_signature`, which refuses a timestamp more than ``tolerance`` seconds old or in the
future, and any malformed header. Several ``v1=`` values separated by commas are accepted (secret rotation on
the sender's side). As with Twilio, a valid signature does not stop a replay inside the tolerance: the factor's
one-time challenge id does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from ...phone.numbers import mask_e164
from .base import check_extension, check_recipient, check_reference
from .transport import make_client, post, provider_id

log = logging.getLogger("mfa_middleware.gateways.phone")

TIMESTAMP_HEADER = "X-MFA-Timestamp"
SIGNATURE_HEADER = "X-MFA-Signature"
SIGNATURE_VERSION = "v1"
MIN_SECRET_BYTES = 32
DEFAULT_TOLERANCE = 300


def sign_webhook(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``X-MFA-Signature`` value for ``body`` sent at ``timestamp``: ``v1=`` and 64 hex digits."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{int(timestamp)}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def check_webhook_signature(secret: str | bytes, timestamp_header: str | None, body: bytes,
                            signature_header: str | None, *, now: float,
                            tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """True if the headers sign ``body`` with ``secret`` and the timestamp is within ``tolerance`` of ``now``.

    ``now`` is Unix time in seconds. False for a missing header, a timestamp that is not 1-12 ASCII digits, a
    timestamp more than ``tolerance`` seconds before or after ``now``, or a signature header that is not
    ``v1=<64 hex>`` (optionally several, comma-separated). Constant-time in the signature.
    """
    if not timestamp_header or not signature_header or not secret:
        return False
    stamp = timestamp_header.strip()
    if not (stamp.isascii() and stamp.isdigit() and 1 <= len(stamp) <= 12):
        return False
    if abs(now - int(stamp)) > tolerance:
        return False
    expected = sign_webhook(secret, int(stamp), body).encode("ascii")
    ok = False
    for part in signature_header.split(","):
        candidate = part.strip()
        if not candidate.isascii() or not candidate.startswith(f"{SIGNATURE_VERSION}="):
            continue
        digest = candidate[len(SIGNATURE_VERSION) + 1:]
        if len(digest) != 64 or any(ch not in "0123456789abcdefABCDEF" for ch in digest):
            continue
        ok |= hmac.compare_digest(expected, f"{SIGNATURE_VERSION}={digest.lower()}".encode("ascii"))
    return ok


class WebhookPhoneGateway:
    """POSTs each text or call as signed JSON to ``url``; one request per send, never retried."""

    kind = "webhook"

    def __init__(self, url: str, secret: str | bytes, *, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http(s) URL")
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"the webhook secret must be at least {MIN_SECRET_BYTES} bytes")
        if not 0 < timeout <= 300:
            raise ValueError("timeout must be between 0 and 300 seconds")
        self.url = url
        self._secret = key
        self.timeout = timeout
        self._clock = clock
        self._provider = f"the phone webhook at {parts.netloc}"
        self._client = make_client(timeout)

    def __repr__(self) -> str:  # never the secret
        return f"WebhookPhoneGateway(url={self.url!r})"

    def close(self) -> None:
        self._client.close()

    def send_text(self, to_e164: str, body: str, *, reference: str) -> str:
        check_recipient(to_e164)
        check_reference(reference)
        if not isinstance(body, str) or not body:
            raise ValueError("a text message needs a body")
        return self._send({"type": "text", "to": to_e164, "body": body, "reference": reference}, to_e164)

    def place_call(self, to_e164: str, *, extension: str | None, script_url: str, status_url: str,
                   reference: str, timeout: int) -> str:
        check_recipient(to_e164)
        check_reference(reference)
        check_extension(extension)
        for value, what in ((script_url, "script_url"), (status_url, "status_url")):
            if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
                raise ValueError(f"{what} must be an absolute http(s) URL")
        if not 1 <= timeout <= 600:
            raise ValueError("timeout must be between 1 and 600 seconds")
        return self._send({"type": "call", "to": to_e164, "script_url": script_url, "status_url": status_url,
                           "extension": extension, "timeout": timeout, "reference": reference}, to_e164)

    def _send(self, payload: dict[str, object], to_e164: str) -> str:
        timestamp = int(self._clock())
        payload["timestamp"] = timestamp
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
                   SIGNATURE_HEADER: sign_webhook(self._secret, timestamp, body)}
        what, masked, reference = payload["type"], mask_e164(to_e164), payload["reference"]
        try:
            answer = post(self._client, self.url, provider=self._provider, timeout=self.timeout, content=body,
                          headers=headers)
            message_id = provider_id(answer, "id", self._provider)
        except Exception as exc:
            log.warning("webhook %s to %s failed, reference %s: %s", what, masked, reference, exc)
            raise
        log.info("webhook %s to %s accepted, reference %s, id %s", what, masked, reference, message_id)
        return message_id
