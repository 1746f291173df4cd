"""The signed-webhook phone gateway against a local receiver that checks our signature with its own code."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from mfa_middleware.gateways.phone import (
    GatewayRefused,
    GatewayUnavailable,
    WebhookPhoneGateway,
    check_webhook_signature,
    sign_webhook,
)
from tests.support.servers import free_port, serve_wsgi
from tests.support.webhook_receiver import WebhookReceiver, reference_sign, webhook_receiver

TO = "+447400123456"
SECRET = b"s" * 40


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver(SECRET) as running:
        yield running


def test_text_is_a_signed_json_post(receiver: WebhookReceiver) -> None:
    message_id = WebhookPhoneGateway(receiver.url, SECRET, timeout=5).send_text(TO, "code 493027", reference="c1")
    assert message_id.startswith("WH")
    [got] = receiver.received
    assert got.valid
    assert got.payload == {"type": "text", "to": TO, "body": "code 493027", "reference": "c1",
                           "timestamp": int(got.headers["x-mfa-timestamp"])}
    assert got.headers["content-type"] == "application/json"


def test_call_carries_the_script_and_status_urls(receiver: WebhookReceiver) -> None:
    WebhookPhoneGateway(receiver.url, SECRET).place_call(TO, extension="12", script_url="https://m.example/s",
                                                         status_url="https://m.example/t", reference="c2", timeout=30)
    [got] = receiver.received
    assert got.valid and got.payload["type"] == "call" and got.payload["extension"] == "12"
    assert got.payload["script_url"] == "https://m.example/s" and got.payload["status_url"] == "https://m.example/t"


def test_a_wrong_secret_is_refused_by_the_receiver_once(receiver: WebhookReceiver) -> None:
    with pytest.raises(GatewayUnavailable, match="credentials"):
        WebhookPhoneGateway(receiver.url, b"w" * 40).send_text(TO, "code", reference="c")
    assert [r.valid for r in receiver.received] == [False]


@pytest.mark.parametrize(("mode", "error", "match"), [
    pytest.param("400", GatewayRefused, "HTTP 400", id="refused-400"),
    pytest.param("500", GatewayUnavailable, "HTTP 500", id="down-500"),
])
def test_errors_raise_once_without_retry(receiver: WebhookReceiver, mode: Any, error: type[Exception],
                                         match: str) -> None:
    receiver.mode = mode
    with pytest.raises(error, match=match):
        WebhookPhoneGateway(receiver.url, SECRET).send_text(TO, "code", reference="c")
    assert len(receiver.received) == 1


def test_a_hang_times_out_once(receiver: WebhookReceiver) -> None:
    receiver.mode = "hang"
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable, match="did not answer"):
        WebhookPhoneGateway(receiver.url, SECRET, timeout=0.5).send_text(TO, "code", reference="c")
    assert time.monotonic() - started < 5, "answers within 5 s"
    assert len(receiver.received) == 1


def test_refused_connection() -> None:
    with pytest.raises(GatewayUnavailable, match="cannot reach"):
        WebhookPhoneGateway(f"http://127.0.0.1:{free_port()}/x", SECRET, timeout=2).send_text(TO, "c", reference="c")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        WebhookPhoneGateway("https://x.example/", b"short")


# --- the answer callback, checked by "our" endpoint -------------------------------------------------------------

class Callback:
    def __init__(self) -> None:
        self.accepted: list[Any] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        body = request.get_data()
        if not check_webhook_signature(SECRET, request.headers.get("X-MFA-Timestamp"), body,
                                       request.headers.get("X-MFA-Signature"), now=time.time()):
            return Response("forbidden", status=403)(environ, start_response)
        self.accepted.append(json.loads(body))
        return Response("ok")(environ, start_response)


@pytest.mark.parametrize(("signature", "status"), [
    pytest.param("good", 200, id="good"), pytest.param("bad", 403, id="wrong-secret"),
    pytest.param("none", 403, id="unsigned"), pytest.param("stale", 403, id="an-hour-old"),
    pytest.param("future", 403, id="an-hour-ahead"),
])
def test_answer_callbacks(receiver: WebhookReceiver, signature: Any, status: int) -> None:
    app = Callback()
    with serve_wsgi(app) as base:
        reply = receiver.post_back(f"{base}/_mfa/phone/status/c1", {"id": "WH1", "digits": "#"}, signature)
    assert reply.status_code == status
    assert app.accepted == ([{"id": "WH1", "digits": "#"}] if status == 200 else [])


BODY = b'{"digits":"#"}'
NOW = 1_700_000_000


@pytest.mark.parametrize(("stamp", "header", "body", "ok"), [
    pytest.param(str(NOW), None, BODY, True, id="good"),
    pytest.param(str(NOW - 300), None, BODY, True, id="at-the-tolerance"),
    pytest.param(str(NOW - 301), None, BODY, False, id="stale"),
    pytest.param(str(NOW + 301), None, BODY, False, id="future"),
    pytest.param(str(NOW), None, BODY + b" ", False, id="changed-body"),
    pytest.param(" ", None, BODY, False, id="blank-timestamp"),
    pytest.param("1e9", None, BODY, False, id="float-timestamp"),
    pytest.param("-" + str(NOW), None, BODY, False, id="negative-timestamp"),
    pytest.param("9" * 40, None, BODY, False, id="huge-timestamp"),
    pytest.param(str(NOW), "", BODY, False, id="empty-signature"),
    pytest.param(str(NOW), "v2=" + "0" * 64, BODY, False, id="unknown-version"),
    pytest.param(str(NOW), "v1=zz", BODY, False, id="not-hex"),
    pytest.param(str(NOW), "v1=" + "0" * 64, BODY, False, id="wrong-mac"),
    pytest.param(str(NOW), "v1=" + "0" * 64 + ", {good}", BODY, True, id="rotation-list"),
])
def test_check_webhook_signature(stamp: str, header: str | None, body: bytes, ok: bool) -> None:
    good = sign_webhook(SECRET, int(stamp) if stamp.isdigit() and len(stamp) < 20 else NOW, BODY)
    value = good if header is None else header.replace("{good}", good)
    assert check_webhook_signature(SECRET, stamp, body, value, now=NOW) is ok


def test_sign_webhook_matches_the_independent_reference() -> None:
    assert sign_webhook(SECRET, NOW, BODY) == reference_sign(SECRET, NOW, BODY)
    assert sign_webhook(SECRET.decode(), NOW, BODY) == reference_sign(SECRET, NOW, BODY)
