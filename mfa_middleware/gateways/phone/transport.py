"""One HTTP POST to a provider, its failures mapped onto the gateway errors; shared by the HTTP gateways.

No retries (``httpx.HTTPTransport(retries=0)``), no redirects followed, no proxy or ``.netrc`` read from the
environment (``trust_env=False``), a timeout on every network step, and an answer read up to 64 KiB only.

| outcome | raises |
|---|---|
| connection refused, DNS failure, TLS failure, timeout | ``GatewayUnavailable`` |
| 3xx (not followed), 401, 403, 429, 5xx | ``GatewayUnavailable`` (account or provider problem) |
| any other 4xx | ``GatewayRefused`` (this request: usually the number) |
| 2xx that is not a JSON object | ``GatewayUnavailable`` |
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from .base import GatewayRefused, GatewayUnavailable

MAX_ANSWER_BYTES = 64 * 1024


def make_client(timeout: float) -> httpx.Client:
    """The client an HTTP gateway keeps for its lifetime (pooled connections; safe to share between threads)."""
    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
                        transport=httpx.HTTPTransport(retries=0))


def post(client: httpx.Client, url: str, *, provider: str, timeout: float, data: Mapping[str, Any] | None = None,
         content: bytes | None = None, headers: Mapping[str, str] | None = None,
         auth: tuple[str, str] | None = None) -> dict[str, Any]:
    """POST once and return the JSON object the provider answered with, or raise (see the module table).

    ``provider`` names the service in messages ("Twilio at api.example.org"); messages never hold the request
    body, credentials or the provider's own error text.
    """
    try:
        with client.stream("POST", url, data=data, content=content, headers=headers, auth=auth) as response:
            raw = b""
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > MAX_ANSWER_BYTES:
                    raise GatewayUnavailable(f"{provider} answered with more than {MAX_ANSWER_BYTES} bytes")
            status = response.status_code
    except httpx.TimeoutException:
        raise GatewayUnavailable(f"{provider} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise GatewayUnavailable(f"cannot reach {provider}: {type(exc).__name__}") from None
    answer = _json_object(raw)
    if 300 <= status < 400:
        raise GatewayUnavailable(f"{provider} answered with a redirect (HTTP {status}), which is not followed")
    if status in (401, 403):
        raise GatewayUnavailable(f"{provider} refused the account credentials (HTTP {status})")
    if status == 429:
        raise GatewayUnavailable(f"{provider} is rate limiting this account (HTTP 429)")
    if 400 <= status < 500:
        code = None if answer is None else answer.get("code")
        provider_code = str(code) if isinstance(code, int | str) and str(code).isalnum() else None
        suffix = f", error {provider_code}" if provider_code else ""
        raise GatewayRefused(f"{provider} refused the request (HTTP {status}{suffix})", status=status,
                             provider_code=provider_code)
    if status >= 500 or status < 200:
        raise GatewayUnavailable(f"{provider} failed (HTTP {status})")
    if answer is None:
        raise GatewayUnavailable(f"{provider} accepted the request but its answer is not a JSON object "
                                 f"(HTTP {status})")
    return answer


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def provider_id(answer: Mapping[str, Any], key: str, provider: str) -> str:
    """The id under ``key`` in a provider's answer: 1-64 ASCII letters, digits, ``-`` or ``_``."""
    value = answer.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isascii() or \
            not value.replace("-", "").replace("_", "").isalnum():
        raise GatewayUnavailable(f"{provider} accepted the request but gave no usable {key!r} in its answer")
    return value
