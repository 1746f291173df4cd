"""The device side of the protocol over HTTP (httpx): registration, signed requests, verified sign-in requests.

Trust model: the server's requests are believed only when they verify against the server key received at
registration (:func:`~mfa_middleware.factors.push.protocol.verify_envelope`); the answer carries the number the
person picked, never one chosen by the program.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ..factors.push import protocol
from .keystore import Account


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A sign-in request the server signed, as the person sees it."""

    account: Account
    id: str
    site: str
    host: str
    client_ip: str
    user_agent: str
    created_at: int
    expires_at: int
    numbers: tuple[int, ...]


class ServerRefused(Exception):
    """The server answered with an error (the message is the server's)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _error(response: httpx.Response) -> ServerRefused:
    try:
        message = str(response.json().get("error", response.text))
    except ValueError:
        message = response.text[:200]
    return ServerRefused(response.status_code, message)


def webhook_channel(url: str | None) -> dict[str, str] | None:
    """The protocol's channel object for a webhook URL (None: no channel). The server checks it against its
    allow-list; this only refuses what can never work."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("a webhook channel is an https:// URL (like https://ntfy.example/your-topic)")
    return {"type": "webhook", "url": url}


def channel_label(channel: dict[str, str] | None) -> str:
    return "" if channel is None else f"{channel['type']} {urlsplit(channel['url']).hostname or ''}"


def register(url: str, name: str, algorithm: protocol.Algorithm, *, timeout: float = 30.0,
             channel: dict[str, str] | None = None) -> Account:
    """Register a new key pair with a registration URL (``.../device/v1/register?token=...``), optionally with a
    push channel (see :func:`webhook_channel`)."""
    parts = urlsplit(url)
    token = (parse_qs(parts.query).get("token") or [""])[0]
    if parts.scheme not in ("http", "https") or not token or not parts.path.endswith("/device/v1/register"):
        raise ValueError("not a registration address (it ends in /device/v1/register?token=...)")
    key = protocol.new_private_key(algorithm)
    body: dict[str, Any] = {"token": token, "public_key": protocol.b64u(protocol.public_key_bytes(key)),
                            "name": name}
    if channel is not None:
        body["channel"] = channel
    response = httpx.post(f"{parts.scheme}://{parts.netloc}{parts.path}", json=body, timeout=timeout)
    if response.status_code != 200:
        raise _error(response)
    data = response.json()
    return Account(account_id=data["account_id"], base_url=data["base_url"], server_key=data["server_key"],
                   private_key=protocol.b64u(protocol.private_key_bytes(key)), algorithm=algorithm,
                   site=data.get("site", ""), username=data.get("username", ""), name=name,
                   channel=channel_label(channel))


class DeviceClient:
    """Signed calls of one account."""

    def __init__(self, account: Account, *, http: httpx.Client | None = None) -> None:
        self.account = account
        self.key = protocol.load_private_key(protocol.unb64u(account.private_key, "private key"))
        self.server_key = protocol.unb64u(account.server_key, "server key")
        self.http = http or httpx.Client(timeout=httpx.Timeout(10.0, read=40.0))

    def _signed(self, method: str, endpoint: str, body: bytes = b"", query: str = "") -> httpx.Response:
        url = self.account.base_url.rstrip("/") + "/" + endpoint + (f"?{query}" if query else "")
        path = urlsplit(url).path + (f"?{query}" if query else "")
        timestamp = int(time.time())
        nonce = secrets.token_urlsafe(18)
        signature = protocol.sign(self.key, protocol.request_string(method, path, body, timestamp, nonce,
                                                                    self.account.account_id))
        headers = {protocol.HEADER_ACCOUNT: self.account.account_id, protocol.HEADER_TIMESTAMP: str(timestamp),
                   protocol.HEADER_NONCE: nonce, protocol.HEADER_SIGNATURE: protocol.b64u(signature)}
        if body:
            headers["Content-Type"] = "application/json"
        return self.http.request(method, url, content=body, headers=headers)

    def pending(self, wait: int = 0) -> list[PendingRequest]:
        """The pending requests, each verified against the server's key; ``wait`` > 0 long-polls."""
        response = self._signed("GET", "requests", query=f"wait={wait}")
        if response.status_code != 200:
            raise _error(response)
        found = []
        for envelope in response.json().get("requests", []):
            data = protocol.verify_envelope(self.server_key, envelope)
            if data.get("account_id") != self.account.account_id:
                continue  # signed by our server, but not for this account: ignore
            found.append(PendingRequest(self.account, str(data["id"]), str(data.get("site", "")),
                                        str(data.get("host", "")), str(data.get("client_ip", "")),
                                        str(data.get("user_agent", "")), int(data["created_at"]),
                                        int(data["expires_at"]), tuple(int(n) for n in data["numbers"])))
        return found

    def answer(self, request_id: str, answer: protocol.Answer, number: int | None = None) -> dict[str, Any]:
        timestamp = int(time.time())
        signature = protocol.sign(self.key, protocol.answer_string(request_id, answer, number, timestamp))
        body = json.dumps({"request_id": request_id, "answer": answer, "number": number, "timestamp": timestamp,
                           "signature": protocol.b64u(signature)}).encode()
        response = self._signed("POST", "answer", body)
        if response.status_code != 200:
            raise _error(response)
        result: dict[str, Any] = response.json()
        return result

    def set_channel(self, channel: dict[str, str] | None) -> str | None:
        """Set (or, with None, remove) this device's push channel; the server's answer: the channel type set."""
        response = self._signed("POST", "channel", json.dumps({"channel": channel}).encode())
        if response.status_code != 200:
            raise _error(response)
        kind = response.json().get("channel")
        return None if kind is None else str(kind)

    def close(self) -> None:
        self.http.close()
