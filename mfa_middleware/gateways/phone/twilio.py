"""A Twilio-compatible gateway: texts through the Messages API, calls through the Calls API, TwiML for the call.

API (``{base_url}/2010-04-01/Accounts/{account_sid}/...``, HTTP Basic ``account_sid:auth_token``, form-encoded):

- ``Messages.json``: ``To``, ``From`` (or ``MessagingServiceSid``), ``Body``; the answer's ``sid`` (``SM...``) is
  returned.
- ``Calls.json``: ``To``, ``From``, ``Url`` (our call script), ``Method=POST``, ``StatusCallback``,
  ``StatusCallbackMethod=POST``, ``StatusCallbackEvent=completed`` (one callback when the call ends, whatever
  the outcome: ``CallStatus`` is then ``completed``, ``busy``, ``no-answer``, ``failed`` or ``canceled``),
  ``Timeout`` (seconds of ringing) and, for an extension, ``SendDigits=ww<digits>`` (each ``w`` waits half a
  second after the call connects). The answer's ``sid`` (``CA...``) is returned.

Callbacks: the provider signs every request it makes to us (fetching the script, posting the digits, posting
the status) with ``X-Twilio-Signature``: base64 of HMAC-SHA1, keyed with the auth token, over the full URL it
requested followed by every POST parameter as name then value, sorted by name. :func:`check_twilio_signature`
checks it in constant time. The signature proves the provider sent *these* parameters to *this* URL, but not
*when*: replay protection is the factor's job (a one-time challenge id in the URL, consumed on first use).

The call script: :func:`twiml_gather` asks for digits (``<Gather input="dtmf">`` with a nested ``<Say>``); the
provider posts ``Digits`` to ``action_url`` when the caller presses the finish key (``#``; ``Digits`` then holds
what came before it: ``""`` for ``#``, ``"0"`` for ``0#``, the PIN for ``1234#``) or has pressed ``num_digits``
keys. Silence until ``timeout`` falls through to the optional goodbye ``<Say>`` and ``<Hangup/>``, and the
factor learns it from the status callback (the call completed with no digits posted). All text is escaped by
ElementTree; control characters that XML cannot carry are replaced by spaces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit

from ...phone.numbers import is_e164, mask_e164
from .base import check_extension, check_recipient, check_reference
from .transport import make_client, post, provider_id

log = logging.getLogger("mfa_middleware.gateways.phone")

API_VERSION = "2010-04-01"
DEFAULT_BASE_URL = "https://api.twilio.com"
EXTENSION_PAUSE = "ww"  # one second after the call connects, before the extension is dialled
MAX_BODY_CHARS = 1600  # the Messages API's own limit
MIN_RING_SECONDS, MAX_RING_SECONDS = 5, 600
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")
_VOICE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SID = re.compile(r"[A-Za-z0-9]{2,64}")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


class TwilioGateway:
    """Sends texts and places calls through a Twilio-compatible REST API; one request per send, never retried.

    ``from_number`` is the E.164 caller id (a number of the account); with ``messaging_service_sid`` texts go
    out through that messaging service instead (calls still use ``from_number``). ``base_url`` is for
    compatible providers and tests; the configuration requires https except on loopback.
    """

    kind = "twilio"

    def __init__(self, account_sid: str, auth_token: str, from_number: str, *, base_url: str = DEFAULT_BASE_URL,
                 timeout: float = 10.0, messaging_service_sid: str | None = None) -> None:
        if not _SID.fullmatch(account_sid or ""):
            raise ValueError("account_sid must be letters and digits, such as AC followed by 32 hex digits")
        if not auth_token:
            raise ValueError("auth_token must not be empty")
        if not is_e164(from_number):
            raise ValueError("from_number must be a valid E.164 number such as +14155550100")
        if messaging_service_sid is not None and not _SID.fullmatch(messaging_service_sid):
            raise ValueError("messaging_service_sid must be letters and digits, such as MG followed by 32 hex")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname:
            raise ValueError("base_url must be an http(s) URL")
        if not 0 < timeout <= 300:
            raise ValueError("timeout must be between 0 and 300 seconds")
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._provider = f"Twilio at {urlsplit(base_url).netloc}"
        self._account_url = f"{self.base_url}/{API_VERSION}/Accounts/{quote(account_sid, safe='')}"
        self._client = make_client(timeout)

    def __repr__(self) -> str:  # never the token
        return f"TwilioGateway(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def send_text(self, to_e164: str, body: str, *, reference: str) -> str:
        check_recipient(to_e164)
        check_reference(reference)
        if not isinstance(body, str) or not body or len(body) > MAX_BODY_CHARS:
            raise ValueError(f"a text message needs a body of 1 to {MAX_BODY_CHARS} characters")
        form = {"To": to_e164, "Body": body}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        else:
            form["From"] = self.from_number
        return self._create("Messages.json", form, "text", to_e164, reference)

    def place_call(self, to_e164: str, *, extension: str | None, script_url: str, status_url: str,
                   reference: str, timeout: int) -> str:
        check_recipient(to_e164)
        check_reference(reference)
        check_extension(extension)
        _check_callback_url(script_url, "script_url")
        _check_callback_url(status_url, "status_url")
        if not MIN_RING_SECONDS <= timeout <= MAX_RING_SECONDS:
            raise ValueError(f"timeout must be between {MIN_RING_SECONDS} and {MAX_RING_SECONDS} seconds")
        form = {"To": to_e164, "From": self.from_number, "Url": script_url, "Method": "POST",
                "StatusCallback": status_url, "StatusCallbackMethod": "POST", "StatusCallbackEvent": "completed",
                "Timeout": str(timeout)}
        if extension:
            form["SendDigits"] = EXTENSION_PAUSE + extension
        return self._create("Calls.json", form, "call", to_e164, reference)

    def _create(self, resource: str, form: dict[str, str], what: str, to_e164: str, reference: str) -> str:
        masked = mask_e164(to_e164)
        try:
            answer = post(self._client, f"{self._account_url}/{resource}", provider=self._provider,
                          timeout=self.timeout, data=form, auth=(self.account_sid, self._auth_token))
            sid = provider_id(answer, "sid", self._provider)
        except Exception as exc:
            log.warning("twilio %s to %s failed, reference %s: %s", what, masked, reference, exc)
            raise
        log.info("twilio %s to %s accepted, reference %s, id %s", what, masked, reference, sid)
        return sid


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | Mapping[str, Sequence[str]]) -> str:
    """The ``X-Twilio-Signature`` the provider sends for a POST of ``params`` to ``url``.

    ``url`` is the full URL as the provider requested it (scheme, host, port if any, path and query string,
    exactly as given to it). ``params`` are the POST form fields (empty for a GET); a value may be a list for a
    repeated field, whose values are then signed in sorted order.
    """
    data = url
    for name in sorted(params):
        value = params[name]
        values = [value] if isinstance(value, str) else sorted(value)
        for item in values:
            data += name + item
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def check_twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | Mapping[str, Sequence[str]],
                           header: str | None) -> bool:
    """True if ``header`` (the request's ``X-Twilio-Signature``, ``None`` when absent) signs ``url`` and ``params``.

    Constant-time; a missing, empty or non-ASCII header is simply false. Pass every form field the request
    carried (werkzeug: ``request.form.to_dict(flat=False)``) and the URL exactly as the provider requested it
    (the public URL behind any proxy, with its query string).
    """
    if not header or not header.isascii() or not auth_token:
        return False
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii"))


def twiml_gather(prompt: str, action_url: str, *, language: str, voice: str | None = None,
                 num_digits: int | None = None, finish_on_key: str = "#", timeout: int = 10,
                 no_input_text: str | None = None) -> str:
    """A call script that says ``prompt`` and gathers keypad digits, posted to ``action_url``.

    ``language`` is a BCP-47 tag (``en-US``); ``voice`` an optional provider voice name (``Polly.Amy``);
    ``num_digits`` ends the input after that many keys; ``finish_on_key`` ends it on that key (``#``; ``""``
    for none); ``timeout`` is the seconds of silence before the input ends without an action request; then
    ``no_input_text`` (if given) is said and the call hangs up. Raises ``ValueError`` for a bad argument.
    """
    _check_callback_url(action_url, "action_url")
    if finish_on_key not in ("", *"0123456789#*"):
        raise ValueError("finish_on_key must be one of 0-9, # or *, or empty")
    if num_digits is not None and not 1 <= num_digits <= 32:
        raise ValueError("num_digits must be between 1 and 32")
    if not 1 <= timeout <= 60:
        raise ValueError("timeout must be between 1 and 60 seconds")
    response = ET.Element("Response")
    gather = ET.SubElement(response, "Gather", {"input": "dtmf", "action": action_url, "method": "POST",
                                                 "timeout": str(timeout), "finishOnKey": finish_on_key})
    if num_digits is not None:
        gather.set("numDigits", str(num_digits))
    _say(gather, prompt, language, voice)
    if no_input_text:
        _say(response, no_input_text, language, voice)
    ET.SubElement(response, "Hangup")
    return _document(response)


def twiml_say_hangup(text: str, *, language: str, voice: str | None = None) -> str:
    """A call script that says ``text`` and hangs up (the answer to the digits, or to an unknown challenge)."""
    response = ET.Element("Response")
    _say(response, text, language, voice)
    ET.SubElement(response, "Hangup")
    return _document(response)


def _say(parent: ET.Element, text: str, language: str, voice: str | None) -> None:
    if not isinstance(text, str) or not text.strip() or len(text) > 4096:
        raise ValueError("the text to say must be 1 to 4096 characters")
    if not _LANGUAGE.fullmatch(language or ""):
        raise ValueError(f"language must be a BCP-47 tag such as en-US, got {language!r}")
    attrs = {"language": language}
    if voice is not None:
        if not _VOICE.fullmatch(voice):
            raise ValueError("voice must be 1-64 letters, digits, '.', '_' or '-'")
        attrs["voice"] = voice
    say = ET.SubElement(parent, "Say", attrs)
    say.text = _NOT_XML.sub(" ", text)


def _document(root: ET.Element) -> str:
    body = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _check_callback_url(url: str, what: str) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or \
            _NOT_XML.search(url) or any(ch.isspace() for ch in url):
        raise ValueError(f"{what} must be an absolute http(s) URL")
