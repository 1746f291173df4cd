"""A local HTTP server that speaks the Twilio REST API as Twilio does, and calls back like Twilio's voice platform.

Written from the provider's documentation, independently of ``mfa_middleware.gateways.phone.twilio`` (its
request signature is computed here with its own code), so a test that passes proves our client and our
callbacks agree with the provider's rules, not with themselves.

- ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``.../Calls.json``: HTTP Basic ``sid:token`` (401 with
  Twilio's error JSON, code 20003, otherwise), form fields checked (To and From in E.164, Body, Url, ...; 400
  with Twilio's codes), 201 with ``{"sid": "SM..."|"CA...", ...}``. Every API request is counted.
- :meth:`TwilioProvider.answer` plays the callee: fetches the call's ``Url`` (signed), reads the TwiML, presses
  the keys on its ``<Gather>`` as Twilio would (the finish key ends the input and is not sent; ``numDigits``
  ends it too; no finish key and too few digits is silence: no action request), then posts ``Digits`` to the
  ``action`` URL with the signature the test chose. :meth:`TwilioProvider.finish` posts the status callback.
- ``mode`` makes the API answer 500, 400 (error 21211, "invalid To number") or hang; a hang is released at
  teardown and never lasts more than 30 s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urljoin

import httpx

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
Mode = Literal["ok", "500", "400", "hang"]
SignatureKind = Literal["good", "bad", "none", "stale_url"]
HANG_LIMIT = 30.0


def reference_signature(token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's documented algorithm: URL, then each parameter name and value sorted by name; HMAC-SHA1; base64."""
    message = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), message.encode(), hashlib.sha1).digest()).decode()


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ProviderCall:
    sid: str
    form: dict[str, str]
    digits_posted: str | None = None
    last_action: tuple[str, dict[str, str], dict[str, str]] | None = None  # url, params, headers


class TwilioProvider:
    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.mode: Mode = "ok"
        self.api_requests = 0
        self.messages: list[dict[str, str]] = []
        self.calls: dict[str, ProviderCall] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.base_url = ""

    # --- the callee -------------------------------------------------------------------------------------------
    def _call_params(self, call: ProviderCall, status: str) -> dict[str, str]:
        return {"CallSid": call.sid, "AccountSid": self.account_sid, "From": call.form["From"],
                "To": call.form["To"], "CallStatus": status, "Direction": "outbound-api", "ApiVersion": "2010-04-01"}

    def post_signed(self, url: str, params: dict[str, str], signature: SignatureKind = "good",
                    signed_url: str | None = None) -> Reply:
        headers: dict[str, str] = {}
        if signature == "good":
            headers["X-Twilio-Signature"] = reference_signature(self.auth_token, url, params)
        elif signature == "bad":
            headers["X-Twilio-Signature"] = reference_signature("not-the-token", url, params)
        elif signature == "stale_url":
            headers["X-Twilio-Signature"] = reference_signature(self.auth_token, signed_url or url + "x", params)
        reply = httpx.post(url, data=params, headers=headers, timeout=10.0, follow_redirects=False)
        return Reply(reply.status_code, reply.text, dict(reply.headers))

    def answer(self, call_sid: str, digits: str, *, signature: SignatureKind = "good") -> tuple[Reply, Reply | None]:
        """Answer the call and press ``digits``; returns the script fetch's reply and the action's (or None)."""
        call = self.calls[call_sid]
        script_url = call.form["Url"]
        script = self.post_signed(script_url, self._call_params(call, "in-progress"))
        if script.status != 200:
            return script, None
        gather = ET.fromstring(script.body).find("Gather")
        if gather is None:
            return script, None
        finish = gather.get("finishOnKey", "#")
        limit = int(gather.get("numDigits", "0")) or None
        collected, finished_on = "", None
        for key in digits:
            if finish and key == finish:
                finished_on = key
                break
            collected += key
            if limit is not None and len(collected) >= limit:
                finished_on = ""
                break
        if finished_on is None:
            return script, None  # silence until the timeout: the document falls through, nothing is posted
        action = urljoin(script_url, gather.get("action") or script_url)
        params = {**self._call_params(call, "in-progress"), "Digits": collected, "FinishedOnKey": finished_on}
        headers_kind: SignatureKind = signature
        call.digits_posted = collected
        call.last_action = (action, params, {})
        return script, self.post_signed(action, params, headers_kind, signed_url=script_url)

    def replay(self, call_sid: str) -> Reply:
        """Post the last action request of this call again, with its valid signature (a replay)."""
        last = self.calls[call_sid].last_action
        assert last is not None, "nothing to replay"
        return self.post_signed(last[0], dict(last[1]))

    def finish(self, call_sid: str, status: str = "completed", *, signature: SignatureKind = "good") -> Reply:
        call = self.calls[call_sid]
        params = {**self._call_params(call, status), "CallDuration": "7" if status == "completed" else "0"}
        return self.post_signed(call.form["StatusCallback"], params, signature)


def _handler(provider: TwilioProvider) -> type[BaseHTTPRequestHandler]:
    path_re = re.compile(r"/2010-04-01/Accounts/([^/]+)/(Messages|Calls)\.json")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, payload: dict[str, object]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: int, message: str) -> None:
            self._send(status, {"code": code, "message": message, "status": status,
                                "more_info": f"https://www.twilio.com/docs/errors/{code}"})

        def do_POST(self) -> None:
            with provider.lock:
                provider.api_requests += 1
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode()
            if provider.mode == "hang":
                provider.release.wait(HANG_LIMIT)
                return
            if provider.mode == "500":
                self._error(500, 20500, "Internal Server Error")
                return
            match = path_re.fullmatch(self.path)
            if match is None:
                self._error(404, 20404, "The requested resource was not found")
                return
            expected = "Basic " + base64.b64encode(f"{provider.account_sid}:{provider.auth_token}".encode()).decode()
            if not hmac.compare_digest(self.headers.get("Authorization", ""), expected):
                self._error(401, 20003, "Authenticate")
                return
            if match.group(1) != provider.account_sid:
                self._error(404, 20404, "The requested resource was not found")
                return
            if self.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
                self._error(400, 20001, "Form-encoded body required")
                return
            fields = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
            if provider.mode == "400":
                self._error(400, 21211, f"The 'To' number {fields.get('To', '')} is not a valid phone number.")
                return
            to, sender = fields.get("To", ""), fields.get("From")
            if not to:
                self._error(400, 21604 if match.group(2) == "Messages" else 21201, "A 'To' phone number is required.")
                return
            if not E164.fullmatch(to):
                self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
                return
            if match.group(2) == "Messages":
                if sender is None and not fields.get("MessagingServiceSid"):
                    self._error(400, 21603, "A 'From' phone number is required.")
                    return
                if sender is not None and not E164.fullmatch(sender):
                    self._error(400, 21212, f"The 'From' number {sender} is not a valid phone number.")
                    return
                if not fields.get("Body"):
                    self._error(400, 21602, "Message body is required.")
                    return
                sid = "SM" + secrets.token_hex(16)
                with provider.lock:
                    provider.messages.append({**fields, "sid": sid})
                self._send(201, {"sid": sid, "account_sid": provider.account_sid, "to": to, "from": sender,
                                 "status": "queued", "api_version": "2010-04-01"})
                return
            if sender is None or not E164.fullmatch(sender):
                self._error(400, 21213 if sender is None else 21212, "A valid 'From' phone number is required.")
                return
            if not fields.get("Url", "").startswith(("http://", "https://")):
                self._error(400, 21205, "Url is not a valid URL.")
                return
            if "SendDigits" in fields and not re.fullmatch(r"[0-9#*wW]{1,32}", fields["SendDigits"]):
                self._error(400, 21208, "SendDigits is not valid.")
                return
            sid = "CA" + secrets.token_hex(16)
            with provider.lock:
                provider.calls[sid] = ProviderCall(sid=sid, form=fields)
            self._send(201, {"sid": sid, "account_sid": provider.account_sid, "to": to, "from": sender,
                             "status": "queued", "api_version": "2010-04-01"})

    return Handler


@contextmanager
def twilio_provider(account_sid: str = "AC" + "0" * 32, auth_token: str = "provider-token-0123456789"
                    ) -> Iterator[TwilioProvider]:
    provider = TwilioProvider(account_sid, auth_token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    server.daemon_threads = True
    provider.base_url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
