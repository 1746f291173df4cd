"""Phone call: we call the user's mobile or office phone; they approve with ``#`` or report fraud with ``0#``.

Rules:

- A number is parsed with ``phonenumbers`` (:func:`mfa_middleware.phone.parse_phone`, ``need_mobile=False``: an
  office landline is fine) in a country of ``[phone] allowed_countries``; an optional extension (1-10 digits) is
  dialled after the call connects. Both are stored encrypted in the method's ``detail`` (JSON
  ``{"e164", "extension"}`` through the :class:`~mfa_middleware.secretbox.SecretBox`) and the number is shown
  masked everywhere but at entry. Enrolling proves the number: the method stays unconfirmed until a call to it
  is answered with ``#``.
- **One call per attempt.** :meth:`PhoneCallFactor.begin` places at most one call for a sign-in attempt (a page
  reload or a poll places nothing), after :class:`~mfa_middleware.services.phone_limits.PhoneSendGuard` counted
  it (channel ``call``: the same caps as texts, against toll fraud). A gateway that is down raises
  :class:`~mfa_middleware.gateways.GatewayUnavailable`, and the page offers the other methods.
- **Call state lives in the store** (``mfa_calls``, migration 0009): one row per call with the SHA-256 of a
  random one-time id (the ``<token>`` of the call's URLs; the id itself is never stored) and a status that moves
  once, in one conditional UPDATE, from ``pending`` to ``approved``, ``fraud`` or ``failed``, and only before the
  call expires (ringing time plus two minutes to answer). An approval is used once (``approved`` -> ``used``) by
  the sign-in that placed it. So a replayed callback, a callback after expiry, two polls at once or two servers
  change nothing after the first answer.
- **Trust model of the provider's routes** (``/voice/script/<token>``, ``/voice/answer/<token>``,
  ``/voice/status/<token>``, all :attr:`Access.PUBLIC`): nothing is believed unless the request carries the
  provider's signature over the exact URL it requested (``X-Twilio-Signature`` keyed with the account's auth
  token; for the webhook gateway ``X-MFA-Timestamp``/``X-MFA-Signature`` with the shared secret and a 5-minute
  tolerance). An unsigned or forged request gets 403 and changes nothing; an unknown token gets a polite hang-up
  and changes nothing. The console gateway has no signature, so its routes answer 403: the demo's outbox keypad
  calls :meth:`PhoneCallFactor.answer_console` in-process instead. The answer is read only from what the
  signature covers: the form fields for Twilio (never a JSON body), the body for the webhook gateway.
- **Answers.** Digits ``""`` (the caller pressed ``#``) approve; the fraud code (``0``, so ``0#``) reports fraud
  through :class:`~mfa_middleware.services.fraud.FraudReports` (which, by default, blocks the user and ends every
  session); any other keys fail the attempt. Digits that are not keypad keys (``0-9*#``, at most 32) are no
  answer at all: they change nothing. A status callback of ``no-answer``, ``busy``, ``failed``,
  ``canceled``, or ``completed`` without an answer fails it too. A failed call is terminal for the attempt: the
  page says so and offers the other methods (a new sign-in places a new call).
- Every call writes an audit row with the masked number and a reference (never the token).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Request, Response

from ...gateways import GatewayUnavailable
from ...gateways.phone import (PhoneConfig, PhoneGateway, check_twilio_signature, check_webhook_signature,
                               twiml_gather, twiml_say_hangup)
from ...gateways.phone.base import MAX_EXTENSION_DIGITS
from ...phone import PhoneNumberError, parse_phone, phone_from_e164
from ...secretbox import SecretBox
from ...services.audit import AuditLog
from ...services.passwords import Passwords
from ...services.fraud import FraudReports
from ...services.phone_limits import PhoneSendGuard, mask_for_audit
from ...store import MethodRecord, Store, UserRecord
from ...store.sql import CallRecord, SendPurpose
from ..base import (Access, EnrollError, EnrollField, EnrollmentView, FactorContext, FactorRoute, Interaction, Outcome,
                    Prompt, RouteContext, TooSoon, Verification)

#: the default fraud code (``[fraud] code``): ``0#`` reports the call
FRAUD_CODE = "0"
#: seconds to answer after the phone stopped ringing (the script, the gather): a call expires after
#: ``call_timeout`` + this
ANSWER_GRACE = 120
GATHER_TIMEOUT = 10
#: what an answer callback's digits may be: keys of a phone's keypad, at most 32 of them (anything else is not a
#: caller's answer and changes nothing)
KEYPAD_DIGITS = re.compile(r"[0-9*#]{0,32}")
STATUS_PENDING, STATUS_APPROVED, STATUS_FRAUD, STATUS_FAILED, STATUS_USED = (
    "pending", "approved", "fraud", "failed", "used")
#: status callbacks that end a call without an answer (``completed`` counts only while nothing was answered)
FAILED_CALL_STATUSES = frozenset({"no-answer", "busy", "failed", "canceled", "completed"})


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    prefix: str = "/_mfa"
    allowed_countries: tuple[str, ...] = ()
    default_region: str | None = None
    language: str = "en-US"
    voice: str | None = None
    call_timeout: int = 30
    #: ``[phone] public_url``: where the provider reaches us (the script and callback URLs, and the URL the
    #: provider's signature covers); the console gateway may go without
    public_url: str | None = None
    #: ``[methods.voice] pin``: the caller enters a PIN chosen at enrollment, then ``#``
    pin: bool = False


PIN_FIELD = EnrollField("pin", "PIN for calls", "password", "new-password",
                        "4 to 10 digits. You type it on the phone's keypad on every call, then the pound key (#).",
                        10)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def reference_of(call_id: int) -> str:
    """The id the provider and the log see for a call (never its token)."""
    return f"call-{call_id}"


def call_routes(kind: str) -> tuple[FactorRoute, ...]:
    """A phone-call method's routes, under its kind (``/voice/...``, ``/mobile_voice/...``)."""
    return (
        FactorRoute(f"/{kind}/script/<token>", "script", Access.PUBLIC, ("POST",)),
        FactorRoute(f"/{kind}/answer/<token>", "answer", Access.PUBLIC, ("POST",)),
        FactorRoute(f"/{kind}/status/<token>", "status", Access.PUBLIC, ("POST",)),
        FactorRoute(f"/{kind}/status.json", "poll", Access.SIGN_IN, ("GET",)),
    )


class PhoneCallFactor:
    """The office phone (``voice``): any number the allow-list admits, landlines included, with an optional
    extension. :class:`MobileCallFactor` is the mobile phone's call, a method of its own."""

    kind = "voice"
    label = "Office phone call"
    description = "We call your office phone (with its extension, if any); answer and press the pound key (#)."
    #: whether the number must be a mobile one
    need_mobile = False
    interaction = Interaction.OUT_OF_BAND
    templates = __name__
    enroll_fields: tuple[EnrollField, ...] = (
        EnrollField("phone", "Phone number", "tel", "tel",
                    "Mobile or office number, with the country code, like +44 20 7946 0958. We call it to check.",
                    64),
        EnrollField("extension", "Extension (optional)", "text", "off", "Digits only; dialled after we connect.",
                    MAX_EXTENSION_DIGITS),
    )
    standalone = True
    max_per_user = 2
    routes: tuple[FactorRoute, ...] = call_routes("voice")

    def __init__(self, store: Store, box: SecretBox, gateway: PhoneGateway, guard: PhoneSendGuard, audit: AuditLog,
                 fraud: FraudReports, phone: PhoneConfig, settings: VoiceSettings, passwords: Passwords) -> None:
        self.store, self.box, self.gateway, self.guard, self.audit = store, box, gateway, guard, audit
        self.fraud, self.phone, self.settings, self.passwords = fraud, phone, settings, passwords
        if settings.pin:
            self.enroll_fields = (*type(self).enroll_fields, PIN_FIELD)

    # -- numbers ---------------------------------------------------------------------------------------------
    def _detail(self, method: MethodRecord) -> dict[str, object]:
        if method.detail is None:
            raise ValueError(f"phone-call method {method.id} has no number")
        data = json.loads(self.box.decrypt(method.detail))
        assert isinstance(data, dict)
        return data

    def destination(self, method: MethodRecord) -> tuple[str, str | None]:
        """(E.164 number, extension or None) of a method."""
        data = self._detail(method)
        return str(data["e164"]), (str(data["extension"]) if data.get("extension") else None)

    def _pin_hash(self, method_id: int) -> str | None:
        method = self.store.get_method(method_id)
        value = self._detail(method).get("pin") if method is not None else None
        return value if isinstance(value, str) else None

    def _origin(self, fallback: str) -> str:
        """Where the provider reaches us: ``[phone] public_url`` (never a request's Host header); only the console
        gateway, which calls nobody, may use ``fallback``."""
        return self.settings.public_url or fallback

    def masked(self, method: MethodRecord) -> str:
        e164, extension = self.destination(method)
        return phone_from_e164(e164).masked + (" ext. ••" if extension else "")

    # -- calls -----------------------------------------------------------------------------------------------
    def _url(self, origin: str, route: str, token: str) -> str:
        return f"{origin.rstrip('/')}{self.settings.prefix}/{self.kind}/{route}/{token}"

    def _call(self, user: UserRecord, method: MethodRecord, ctx: FactorContext, attempt_id: str,
              purpose: SendPurpose) -> None:
        """Count the call against the caps, record it, then ask the gateway to place it."""
        e164, extension = self.destination(method)
        if not self.settings.public_url and self.gateway.kind != "console":
            raise GatewayUnavailable("[phone] public_url is not set: no address to give the provider for the call")
        refusal = self.guard.reserve(user, e164, phone_from_e164(e164).region, "call", purpose,
                                     now=ctx.now, client_ip=ctx.client_ip, user_agent=ctx.user_agent)
        if refusal is not None:
            raise TooSoon(self.guard.user_message(refusal))
        token = secrets.token_urlsafe(32)
        call_id = self.store.add_call(user.id, method.id, attempt_id, token_digest(token), now=ctx.now,
                                      expires_at=ctx.now + self.settings.call_timeout + ANSWER_GRACE)
        origin = self._origin(ctx.origin or "http://localhost")
        reference = reference_of(call_id)
        audit = {"channel": "call", "purpose": purpose, "number": mask_for_audit(e164), "reference": reference}
        try:
            self.gateway.place_call(e164, extension=extension, script_url=self._url(origin, "script", token),
                                    status_url=self._url(origin, "status", token), reference=reference,
                                    timeout=self.settings.call_timeout)
        except GatewayUnavailable:
            self.store.settle_call(call_id, STATUS_FAILED, now=ctx.now)
            self.audit.write("phone", "send_failed", now=ctx.now, actor=user.username, username=user.username,
                             client_ip=ctx.client_ip, user_agent=ctx.user_agent, **audit)
            raise
        self.audit.write("phone", "sent", now=ctx.now, actor=user.username, username=user.username,
                         client_ip=ctx.client_ip, user_agent=ctx.user_agent, **audit)

    def status_of(self, call: CallRecord | None, now: float) -> str:
        """What a poll sees: pending | approved | fraud | failed (an expired pending call has failed)."""
        if call is None:
            return STATUS_FAILED
        if call.status == STATUS_PENDING:
            return STATUS_PENDING if now < call.expires_at else STATUS_FAILED
        return STATUS_APPROVED if call.status == STATUS_USED else call.status

    def _settle(self, call: CallRecord | None, now: float) -> Verification:
        """The outcome of an attempt's call; an approval is used up here (once)."""
        status = self.status_of(call, now)
        if call is None or status == STATUS_FAILED:
            return Verification(Outcome.REJECTED)
        if status == STATUS_PENDING:
            return Verification(Outcome.PENDING)
        if status == STATUS_FRAUD:
            return Verification(Outcome.FRAUD)
        return Verification(Outcome.ACCEPTED if self.store.use_call(call.id) else Outcome.REPLAYED)

    @staticmethod
    def _attempt(method: MethodRecord, ctx: FactorContext) -> str:
        return ctx.attempt_id or f"enroll-{method.id}"

    # -- the Factor protocol ---------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        try:
            phone = parse_phone(inputs.get("phone") or "", default_region=self.settings.default_region,
                                allowed_countries=self.settings.allowed_countries, need_mobile=self.need_mobile)
        except PhoneNumberError as exc:
            raise EnrollError(str(exc)) from None
        extension = (inputs.get("extension") or "").strip() or None
        if extension is not None and not (extension.isascii() and extension.isdigit()
                                          and len(extension) <= MAX_EXTENSION_DIGITS):
            raise EnrollError(f"An extension is 1 to {MAX_EXTENSION_DIGITS} digits, nothing else. Leave it empty "
                              "if the number reaches you directly.")
        data: dict[str, object] = {"e164": phone.e164, "extension": extension}
        if self.settings.pin:
            pin = (inputs.get("pin") or "").strip()
            if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 10):
                raise EnrollError("Choose a PIN of 4 to 10 digits (numbers only): you type it on the phone's keypad.")
            if len(set(pin)) == 1 or pin in "01234567890" or pin in "09876543210":
                raise EnrollError("That PIN is too easy to guess (repeated or consecutive digits). Choose another.")
            data["pin"] = self.passwords.hash(pin)
        self.store.delete_methods(user.id, unconfirmed_only=True)  # one enrollment in flight per user
        detail = self.box.encrypt(json.dumps(data))
        method_id = self.store.add_method(user.id, self.kind, f"Phone {phone.masked}", None, now=ctx.now,
                                          detail=detail)
        method = self.store.get_method(method_id)
        assert method is not None
        self._call(user, method, ctx, self._attempt(method, ctx), "enroll")
        return self.enroll_view(user, method, ctx)

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        return EnrollmentView(method_id=method.id, fields={"phone": self.masked(method),
                                                           **({"pin": "1"} if self.settings.pin else {})})

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        if method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        result = self._settle(self.store.call_of_attempt(method.id, self._attempt(method, ctx)), ctx.now)
        if not result.accepted:
            return result
        if not self.store.confirm_method(method.id, user.id, step=None, now=ctx.now,
                                         only_if_first=ctx.first_method_only):
            return Verification(Outcome.REPLAYED)
        return result

    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        if ctx.attempt_id and self.store.call_of_attempt(method.id, ctx.attempt_id) is None:
            self._call(user, method, ctx, ctx.attempt_id, "sign_in")

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        status = self.status_of(self.store.call_of_attempt(method.id, ctx.attempt_id), ctx.now) \
            if ctx.attempt_id else STATUS_FAILED
        return Prompt(Interaction.OUT_OF_BAND, f"We're calling {self.masked(method)}.",
                      {"status": status, "poll": f"{self.settings.prefix}/{self.kind}/status.json", "interval": "2000",
                       "fraud_code": self.fraud.settings.code if self.fraud.settings.allow_users_to_report else "",
                       **({"pin": "1"} if self.settings.pin else {})})

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        if not method.confirmed or method.user_id != user.id or method.kind != self.kind or not ctx.attempt_id:
            return Verification(Outcome.REJECTED)
        return self._settle(self.store.call_of_attempt(method.id, ctx.attempt_id), ctx.now)

    # -- the console gateway's keypad (demo) ----------------------------------------------------------------
    def answer_console(self, call_reference: str, digits: str, now: float) -> str:
        """Answer a console-gateway call as the outbox keypad's keys say (``"#"``, ``"0#"``); returns the call's
        status afterwards. The keys up to the first ``#`` are the call's digits (none: no answer, nothing
        changes). For the demo's outbox page only: it finds the call by the reference the console gateway shows,
        records the keys there (first answer only), and settles the call exactly as a signed callback would."""
        from ...gateways.phone import ConsolePhoneGateway

        if not isinstance(self.gateway, ConsolePhoneGateway):
            raise ValueError("only calls of the console gateway are answered on the outbox keypad")
        entry = next((c for c in self.gateway.calls() if c.reference == call_reference), None)
        if entry is None:
            raise ValueError("no such call in the outbox")
        if f"/{self.kind}/script/" not in entry.script_url:
            raise LookupError("the call belongs to another phone-call method")  # the outbox asks that one
        token = entry.script_url.rsplit("/", 1)[-1]
        call = self.store.call_by_token(token_digest(token))
        if call is None:
            raise ValueError("this call is not one of ours")
        self.gateway.record_answer(entry.id, digits)
        if "#" in digits:
            self._answer(call, digits.split("#", 1)[0], now, client_ip=None, user_agent="console keypad")
        fresh = self.store.call_by_token(token_digest(token))
        return self.status_of(fresh, now)

    def _answer(self, call: CallRecord, digits: str, now: float, *, client_ip: str | None,
                user_agent: str | None) -> str:
        """Settle a call with the digits pressed before ``#``; returns the words to say (nothing changes when the
        call was answered already or has expired)."""
        digits = digits.strip().rstrip("#")  # providers may or may not include the finishing key
        pin_hash = self._pin_hash(call.method_id) if self.settings.pin else None
        fraud_code = self.fraud.settings.code
        if digits == fraud_code:
            status = STATUS_FRAUD if self.fraud.settings.allow_users_to_report else STATUS_FAILED
        elif self.settings.pin:
            # PIN mode: the PIN, then #. A method set up before PIN mode was turned on has no PIN: it fails
            # until the user sets the number up again (never a pass without the PIN).
            status = STATUS_APPROVED if (digits and pin_hash is not None
                                         and self.passwords.verify(pin_hash, digits)) else STATUS_FAILED
        else:
            status = STATUS_APPROVED if digits == "" else STATUS_FAILED
        if not self.store.settle_call(call.id, status, now=now):
            return "This call has already been answered, or it has expired. Goodbye."
        user = self.store.get_user_by_id(call.user_id)
        name = user.username if user is not None else None
        self.audit.write("phone", "call_" + status, now=now, actor=name or "anonymous", username=name,
                         client_ip=client_ip, user_agent=user_agent, reference=reference_of(call.id))
        if digits == fraud_code and user is not None:
            # Also when reporting is off: the report service writes the refused row and says so.
            outcome = self.fraud.report(user, self.kind, now=now, client_ip=client_ip, user_agent=user_agent,
                                        reference=f"voice:{call.id}")
            return outcome.message
        if status == STATUS_APPROVED:
            return "Thank you. Your sign-in is approved. Goodbye."
        return "The sign-in was not approved. Goodbye."

    # -- routes --------------------------------------------------------------------------------------------------
    def _signed(self, request: Request, now: float) -> bool:
        """True if the provider signed this request (see the module docstring's trust model)."""
        # The URL the provider requested, as it knows it: the configured public address plus the path (a Host
        # header is the client's word and never decides what the signature must cover).
        base = (self.settings.public_url + request.path) if self.settings.public_url else request.base_url
        url = base + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")
        if self.phone.gateway == "twilio" and self.phone.auth_token:
            return check_twilio_signature(self.phone.auth_token, url, request.form.to_dict(flat=False),
                                          request.headers.get("X-Twilio-Signature"))
        if self.phone.gateway == "webhook" and self.phone.secret:
            return check_webhook_signature(self.phone.secret, request.headers.get("X-MFA-Timestamp"),
                                           request.get_data(cache=True), request.headers.get("X-MFA-Signature"),
                                           now=now)
        return False  # console: no provider calls back

    def _field(self, request: Request, form_name: str, json_name: str) -> str | None:
        """A field of a signed callback, read only from the part of the request its signature covers: the form
        fields for the Twilio-compatible gateway (``X-Twilio-Signature`` covers the form, never a JSON body); a
        JSON body (or a form) for the webhook gateway, whose signature covers the raw body."""
        if self.phone.gateway == "webhook" and request.mimetype == "application/json":
            try:
                data = json.loads(request.get_data(cache=True) or b"{}")
            except (ValueError, RecursionError):
                return None
            value = data.get(json_name) if isinstance(data, dict) else None
            return value if isinstance(value, str) else None
        if request.mimetype != "application/x-www-form-urlencoded":
            return None
        return request.form.get(form_name)

    def _twiml(self, body: str) -> Response:
        return Response(body, status=200, content_type="application/xml; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    def _say(self, text: str) -> Response:
        return self._twiml(twiml_say_hangup(text, language=self.phone.language, voice=self.phone.voice))

    def handle(self, route: str, rctx: RouteContext, **args: str) -> Response:
        if route == "poll":
            if rctx.method is None:
                raise NotFound()
            status = self.status_of(self.store.call_of_attempt(rctx.method.id, rctx.factor_context.attempt_id),
                                    rctx.now)
            return Response(json.dumps({"status": status}), content_type="application/json",
                            headers={"Cache-Control": "no-store"})
        if route not in ("script", "answer", "status"):
            raise NotFound()
        request = rctx.request
        if not self._signed(request, rctx.now):
            rctx.audit("phone", "callback_refused", reason=f"unsigned {route} callback")
            return Response("Forbidden", status=403, content_type="text/plain")
        token = args.get("token", "")
        call = self.store.call_by_token(token_digest(token)) if len(token) <= 128 else None
        if route == "status":
            if call is not None and (self._field(request, "CallStatus", "status") or "") in FAILED_CALL_STATUSES:
                if self.store.settle_call(call.id, STATUS_FAILED, now=rctx.now):
                    rctx.audit("phone", "call_failed", reference=reference_of(call.id))
            return Response("", status=204)
        if call is None or self.status_of(call, rctx.now) != STATUS_PENDING:
            return self._say("This call has already been answered, or it has expired. Goodbye.")
        if route == "script":
            site = rctx.factor_context.site_name or "your sign-in service"
            approve = ("enter your PIN, then press the pound key" if self.settings.pin else "press the pound key")
            prompt = (f"This is {site}. To approve your sign-in, {approve}. "
                      f"If you did not try to sign in, press {' '.join(self.fraud.settings.code)} then pound "
                      "to report fraud.")
            return self._twiml(twiml_gather(
                prompt, self._url(self._origin(request.host_url), "answer", token), language=self.phone.language,
                voice=self.phone.voice, finish_on_key="#", timeout=GATHER_TIMEOUT,
                no_input_text="We didn't get an answer. Goodbye."))
        digits = self._field(request, "Digits", "digits")
        if digits is None or not KEYPAD_DIGITS.fullmatch(digits):
            if digits is not None:
                rctx.audit("phone", "callback_refused", reason="answer digits are not keypad keys",
                           reference=reference_of(call.id))
            return self._say("We didn't get an answer. Goodbye.")
        finished = self._field(request, "FinishedOnKey", "finished_on_key")
        if digits == "" and finished is not None and finished != "#":
            # Nothing pressed, not even #: the gather timed out (a provider that posts on an empty result).
            # Silence is never an approval.
            if self.store.settle_call(call.id, STATUS_FAILED, now=rctx.now):
                rctx.audit("phone", "call_failed", reference=reference_of(call.id), reason="no key pressed")
            return self._say("We didn't get an answer. Goodbye.")
        return self._say(self._answer(call, digits, rctx.now, client_ip=rctx.client_ip,
                                      user_agent=rctx.user_agent))


class MobileCallFactor(PhoneCallFactor):
    """The mobile phone's call (``mobile_voice``): a mobile number, no extension. The same number may also be set
    up for text messages (``sms``): "mobile phone, text or call"."""

    kind = "mobile_voice"
    label = "Mobile phone call"
    description = "We call your mobile phone; answer and press the pound key (#)."
    need_mobile = True
    enroll_fields: tuple[EnrollField, ...] = (
        EnrollField("phone", "Mobile phone number", "tel", "tel",
                    "Include the country code, like +44 7400 123456. We call it to check it is yours.", 64),
    )
    routes: tuple[FactorRoute, ...] = call_routes("mobile_voice")


__all__ = ["FRAUD_CODE", "MobileCallFactor", "PhoneCallFactor", "VoiceSettings", "reference_of", "token_digest"]
