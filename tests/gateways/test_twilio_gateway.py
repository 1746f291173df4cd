"""The Twilio-compatible gateway against a local server that speaks the provider's API and calls back."""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from mfa_middleware.gateways.phone import (
    GatewayRefused,
    GatewayUnavailable,
    TwilioGateway,
    check_twilio_signature,
    twilio_signature,
    twiml_gather,
    twiml_say_hangup,
)
from tests.support.servers import free_port, serve_wsgi
from tests.support.twilio_provider import TwilioProvider, reference_signature, twilio_provider

TO = "+447400123456"
FROM = "+14155550100"
SITE = "Acme <&\"'> Intranet"


@pytest.fixture
def provider() -> Iterator[TwilioProvider]:
    with twilio_provider() as running:
        yield running


def gateway_for(provider: TwilioProvider, *, token: str | None = None, timeout: float = 5.0, **kw: Any
                ) -> TwilioGateway:
    return TwilioGateway(provider.account_sid, token or provider.auth_token, FROM, base_url=provider.base_url,
                         timeout=timeout, **kw)


# --- texts ------------------------------------------------------------------------------------------------------

def test_text_goes_through_the_messages_api(provider: TwilioProvider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mfa_middleware")
    sid = gateway_for(provider).send_text(TO, "Your Acme code is 493027", reference="chal-1")
    assert sid.startswith("SM") and len(sid) == 34
    assert provider.messages == [{"To": TO, "From": FROM, "Body": "Your Acme code is 493027", "sid": sid}]
    assert provider.api_requests == 1
    assert "493027" not in caplog.text and TO not in caplog.text and provider.auth_token not in caplog.text
    assert "+44 •••• ••3456" in caplog.text and "chal-1" in caplog.text


def test_text_through_a_messaging_service(provider: TwilioProvider) -> None:
    gateway_for(provider, messaging_service_sid="MG" + "1" * 32).send_text(TO, "code 1", reference="r")
    assert provider.messages[0]["MessagingServiceSid"] == "MG" + "1" * 32 and "From" not in provider.messages[0]


def test_wrong_credentials_are_unavailable_not_refused(provider: TwilioProvider) -> None:
    with pytest.raises(GatewayUnavailable, match="credentials") as info:
        gateway_for(provider, token="wrong-token").send_text(TO, "code", reference="r")
    assert not isinstance(info.value, GatewayRefused)
    assert provider.api_requests == 1 and provider.messages == []


@pytest.mark.parametrize(("mode", "error", "match"), [
    pytest.param("400", GatewayRefused, r"HTTP 400, error 21211", id="bad-number-400"),
    pytest.param("500", GatewayUnavailable, r"HTTP 500", id="server-error-500"),
])
def test_provider_errors_raise_once_without_retry(provider: TwilioProvider, mode: Any, error: type[Exception],
                                                  match: str, caplog: pytest.LogCaptureFixture) -> None:
    provider.mode = mode
    gateway = gateway_for(provider)
    with pytest.raises(error, match=match) as info:
        gateway.send_text(TO, "code 111111", reference="r1")
    assert provider.api_requests == 1
    with pytest.raises(error):
        gateway.place_call(TO, extension=None, script_url="https://mfa.example.org/s", status_url=
                           "https://mfa.example.org/t", reference="r2", timeout=30)
    assert provider.api_requests == 2
    assert TO not in str(info.value) and "111111" not in caplog.text and TO not in caplog.text
    if isinstance(info.value, GatewayRefused):
        assert info.value.status == 400 and info.value.provider_code == "21211"


def test_a_hanging_provider_times_out_once(provider: TwilioProvider) -> None:
    provider.mode = "hang"
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable, match="did not answer within 0.5 s") as info:
        gateway_for(provider, timeout=0.5).send_text(TO, "code", reference="r")
    assert not isinstance(info.value, GatewayRefused)
    assert time.monotonic() - started < 5, "a hang is cut by the timeout (answers within 5 s)"
    assert provider.api_requests == 1


def test_a_refused_connection_is_unavailable() -> None:
    gateway = TwilioGateway("AC" + "0" * 32, "token", FROM, base_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(GatewayUnavailable, match="cannot reach") as info:
        gateway.send_text(TO, "code", reference="r")
    assert not isinstance(info.value, GatewayRefused)


@pytest.mark.parametrize(("kwargs", "match"), [
    pytest.param({"to_e164": "07400123456"}, "E.164", id="national-number"),
    pytest.param({"to_e164": "+4474001234567890"}, "E.164", id="too-long"),
    pytest.param({"reference": "a\nb"}, "reference", id="newline-in-reference"),
    pytest.param({"body": ""}, "body", id="empty-body"),
])
def test_bad_arguments_never_reach_the_provider(provider: TwilioProvider, kwargs: dict[str, str],
                                                match: str) -> None:
    args = {"to_e164": TO, "body": "code", "reference": "r", **kwargs}
    with pytest.raises(ValueError, match=match):
        gateway_for(provider).send_text(args["to_e164"], args["body"], reference=args["reference"])
    assert provider.api_requests == 0


def test_the_token_is_not_in_the_repr(provider: TwilioProvider) -> None:
    assert provider.auth_token not in repr(gateway_for(provider))


# --- calls, round trip through "our" endpoint -------------------------------------------------------------------

class OurEndpoint:
    """A tiny werkzeug app standing in for the factor's /_mfa/ routes: script, digits, status."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.base = ""
        self.events: list[tuple[str, str, dict[str, str]]] = []
        self.refused: list[str] = []
        self.used: set[str] = set()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        form = request.form.to_dict(flat=False)
        if not check_twilio_signature(self.token, request.url, form, request.headers.get("X-Twilio-Signature")):
            self.refused.append(request.path)
            return Response("forbidden", status=403)(environ, start_response)
        params = request.form.to_dict()
        kind, _, challenge = request.path.strip("/").partition("/")
        if kind == "script":
            xml = twiml_gather(f"This is {SITE}. Press pound to approve.", f"{self.base}/answer/{challenge}",
                               language="en-GB", voice="Polly.Amy", num_digits=None, timeout=10,
                               no_input_text="We did not hear from you. Goodbye.")
        elif kind == "answer":
            if challenge in self.used:  # the one-time challenge id: a replay changes nothing
                self.refused.append(request.path + " (replay)")
                return Response("gone", status=409)(environ, start_response)
            self.used.add(challenge)
            xml = twiml_say_hangup("Thank you. Goodbye.", language="en-GB", voice=None)
        else:
            xml = "<Response/>"
        self.events.append((kind, challenge, params))
        return Response(xml, mimetype="text/xml")(environ, start_response)


@pytest.fixture
def endpoint(provider: TwilioProvider) -> Iterator[OurEndpoint]:
    app = OurEndpoint(provider.auth_token)
    with serve_wsgi(app) as base:
        app.base = base
        yield app


def place(provider: TwilioProvider, endpoint: OurEndpoint, extension: str | None = None) -> str:
    return gateway_for(provider).place_call(TO, extension=extension, script_url=f"{endpoint.base}/script/c1",
                                            status_url=f"{endpoint.base}/status/c1", reference="c1", timeout=25)


def test_call_form_fields_are_as_the_calls_api_defines(provider: TwilioProvider, endpoint: OurEndpoint) -> None:
    sid = place(provider, endpoint, extension="4321")
    assert sid.startswith("CA")
    form = provider.calls[sid].form
    assert form == {"To": TO, "From": FROM, "Url": f"{endpoint.base}/script/c1", "Method": "POST",
                    "StatusCallback": f"{endpoint.base}/status/c1", "StatusCallbackMethod": "POST",
                    "StatusCallbackEvent": "completed", "Timeout": "25", "SendDigits": "ww4321"}
    assert "SendDigits" not in provider.calls[place(provider, endpoint)].form


@pytest.mark.parametrize("extension", [
    pytest.param("12a", id="letter"), pytest.param("1#", id="hash"), pytest.param("12345678901", id="eleven"),
    pytest.param("", id="empty"), pytest.param("١٢", id="arabic-indic"),
])
def test_bad_extensions_are_refused(provider: TwilioProvider, endpoint: OurEndpoint, extension: str) -> None:
    with pytest.raises(ValueError, match="extension"):
        place(provider, endpoint, extension=extension)
    assert provider.api_requests == 0


@pytest.mark.parametrize(("keys", "digits"), [
    pytest.param("#", "", id="pound-approves"),
    pytest.param("0#", "0", id="zero-pound-reports-fraud"),
    pytest.param("1234#", "1234", id="pin-then-pound"),
])
def test_answer_round_trip_with_a_good_signature(provider: TwilioProvider, endpoint: OurEndpoint, keys: str,
                                                 digits: str) -> None:
    sid = place(provider, endpoint)
    script, action = provider.answer(sid, keys)
    assert script.status == 200 and action is not None and action.status == 200
    gather = ET.fromstring(script.body).find("Gather")
    assert gather is not None and gather.get("finishOnKey") == "#" and gather.get("input") == "dtmf"
    say = gather.find("Say")
    assert say is not None and say.text == f"This is {SITE}. Press pound to approve."
    assert say.get("language") == "en-GB" and say.get("voice") == "Polly.Amy"
    assert [(e[0], e[1]) for e in endpoint.events] == [("script", "c1"), ("answer", "c1")]
    assert endpoint.events[1][2]["Digits"] == digits and endpoint.events[1][2]["CallSid"] == sid
    assert ET.fromstring(action.body).find("Hangup") is not None
    finished = provider.finish(sid, "completed")
    assert finished.status == 200 and endpoint.events[-1][0] == "status"
    assert endpoint.events[-1][2]["CallStatus"] == "completed"


def test_silence_posts_no_digits_and_the_status_says_how_it_ended(provider: TwilioProvider,
                                                                  endpoint: OurEndpoint) -> None:
    sid = place(provider, endpoint)
    _, action = provider.answer(sid, "")
    assert action is None
    assert provider.finish(sid, "no-answer").status == 200
    assert [e[0] for e in endpoint.events] == ["script", "status"]
    assert endpoint.events[-1][2]["CallStatus"] == "no-answer"


@pytest.mark.parametrize("signature", [
    pytest.param("bad", id="wrong-token"), pytest.param("none", id="unsigned"),
    pytest.param("stale_url", id="signed-for-another-url"),
])
def test_forged_answers_change_nothing(provider: TwilioProvider, endpoint: OurEndpoint, signature: Any) -> None:
    sid = place(provider, endpoint)
    script, action = provider.answer(sid, "#", signature=signature)
    assert script.status == 200 and action is not None and action.status == 403
    assert [e[0] for e in endpoint.events] == ["script"]
    assert provider.finish(sid, "completed", signature=signature).status == 403
    assert endpoint.refused == ["/answer/c1", "/status/c1"]


def test_a_replayed_answer_changes_nothing(provider: TwilioProvider, endpoint: OurEndpoint) -> None:
    sid = place(provider, endpoint)
    provider.answer(sid, "#")
    assert provider.replay(sid).status == 409
    assert [e[0] for e in endpoint.events] == ["script", "answer"]


# --- the signature ------------------------------------------------------------------------------------------------

DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


@pytest.mark.parametrize(("caller", "expected"), [
    pytest.param("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc=", id="current-documentation"),
    pytest.param("+12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", id="older-documentation"),
])
def test_signature_known_answers_from_the_providers_documentation(caller: str, expected: str) -> None:
    params = {"CallSid": "CA1234567890ABCDE", "Caller": caller, "Digits": "1234", "From": caller,
              "To": "+18005551212"}
    assert twilio_signature("12345", DOC_URL, params) == expected
    assert check_twilio_signature("12345", DOC_URL, params, expected)


PARAMS = {"CallSid": "CA" + "ab" * 16, "Digits": "", "From": FROM, "To": TO}
URL = "https://mfa.example.org/_mfa/phone/answer/c1?sig=xyz"


@pytest.mark.parametrize(("token", "url", "params", "header"), [
    pytest.param("tok", URL, {**PARAMS, "Digits": "0"}, None, id="changed-param"),
    pytest.param("tok", URL, {**PARAMS, "Extra": "1"}, None, id="added-param"),
    pytest.param("tok", URL, {k: v for k, v in PARAMS.items() if k != "Digits"}, None, id="removed-param"),
    pytest.param("tok", URL.replace("c1", "c2"), PARAMS, None, id="changed-url"),
    pytest.param("tok", URL.replace("https", "http"), PARAMS, None, id="changed-scheme"),
    pytest.param("other", URL, PARAMS, None, id="wrong-token"),
    pytest.param("tok", URL, PARAMS, "", id="empty-header"),
    pytest.param("tok", URL, PARAMS, "ünïcode", id="non-ascii-header"),
])
def test_signature_tampering_is_refused(token: str, url: str, params: dict[str, str], header: str | None) -> None:
    good = twilio_signature("tok", URL, PARAMS)
    assert check_twilio_signature("tok", URL, PARAMS, good)
    assert not check_twilio_signature(token, url, params, good if header is None else header)


def test_signature_matches_the_independent_reference() -> None:
    assert twilio_signature("tok", URL, PARAMS) == reference_signature("tok", URL, PARAMS)


# --- TwiML --------------------------------------------------------------------------------------------------------

def test_twiml_escapes_the_site_name_and_the_action_url() -> None:
    xml = twiml_gather(f"{SITE} ]]> <Say>injected</Say>", "https://mfa.example.org/a?x=1&y=\"2\"",
                       language="en-US", voice=None, num_digits=5, timeout=8)
    root = ET.fromstring(xml)
    gather = root.find("Gather")
    assert gather is not None and gather.get("action") == "https://mfa.example.org/a?x=1&y=\"2\""
    assert gather.get("numDigits") == "5" and gather.get("timeout") == "8"
    says = root.findall(".//Say")
    assert len(says) == 1 and says[0].text == f"{SITE} ]]> <Say>injected</Say>"
    assert "<Say>injected" not in xml and "&lt;&amp;" in xml
    hangup = twiml_say_hangup("Bye & <thanks>", language="fr-FR", voice="Polly.Lea")
    assert ET.fromstring(hangup).findtext("Say") == "Bye & <thanks>"


def test_twiml_replaces_characters_xml_cannot_carry() -> None:
    root = ET.fromstring(twiml_say_hangup("a\x00b\x1bc", language="en-US"))
    assert root.findtext("Say") == "a b c"


@pytest.mark.parametrize(("kwargs", "match"), [
    pytest.param({"action_url": "/relative"}, "action_url", id="relative-action"),
    pytest.param({"action_url": "javascript:alert(1)"}, "action_url", id="javascript-action"),
    pytest.param({"language": "en US"}, "language", id="bad-language"),
    pytest.param({"voice": "Polly Amy\""}, "voice", id="bad-voice"),
    pytest.param({"finish_on_key": "##"}, "finish_on_key", id="bad-finish-key"),
    pytest.param({"num_digits": 0}, "num_digits", id="zero-digits"),
    pytest.param({"timeout": 0}, "timeout", id="zero-timeout"),
    pytest.param({"prompt": " "}, "text", id="blank-prompt"),
])
def test_twiml_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"prompt": "Press pound", "action_url": "https://mfa.example.org/a", "language": "en-US",
                            "voice": None, "num_digits": None, "finish_on_key": "#", "timeout": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        twiml_gather(args.pop("prompt"), args.pop("action_url"), **args)
