"""The development phone gateway: outbox, answers from the keypad, nothing secret in the log."""

from __future__ import annotations

import logging
import threading

import pytest

from mfa_middleware.gateways.phone import ConsolePhoneGateway, PhoneGateway

TO = "+447400123456"


def call(gateway: ConsolePhoneGateway, reference: str = "c1", extension: str | None = None) -> str:
    return gateway.place_call(TO, extension=extension, script_url="http://localhost/s", status_url=
                              "http://localhost/t", reference=reference, timeout=30)


def test_it_is_a_phone_gateway() -> None:
    assert isinstance(ConsolePhoneGateway(), PhoneGateway)


def test_texts_are_kept_and_the_log_holds_no_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mfa_middleware")
    gateway = ConsolePhoneGateway()
    message_id = gateway.send_text(TO, "Your code is 493027", reference="chal-9")
    [text] = gateway.texts()
    assert (text.id, text.to, text.masked, text.body, text.reference) == (message_id, TO, "+44 •••• ••3456",
                                                                         "Your code is 493027", "chal-9")
    assert "493027" not in caplog.text and TO not in caplog.text
    assert "+44 •••• ••3456" in caplog.text and "chal-9" in caplog.text


def test_calls_wait_for_an_answer_from_the_keypad() -> None:
    gateway = ConsolePhoneGateway()
    call_id = call(gateway, extension="12")
    entry = gateway.call(call_id)
    assert entry is not None and entry.digits is None and entry.extension == "12"
    answered = gateway.record_answer(call_id, "0#")
    assert answered.digits == "0#" and answered.answered_at is not None
    assert gateway.calls()[0].digits == "0#"
    with pytest.raises(ValueError, match="already been answered"):
        gateway.record_answer(call_id, "#")


@pytest.mark.parametrize("digits", [
    pytest.param("1a", id="letter"), pytest.param("#" * 33, id="too-many"), pytest.param("٣#", id="arabic-indic"),
])
def test_bad_keypad_input_is_refused(digits: str) -> None:
    gateway = ConsolePhoneGateway()
    call_id = call(gateway)
    with pytest.raises(ValueError):
        gateway.record_answer(call_id, digits)
    with pytest.raises(ValueError, match="no such call"):
        gateway.record_answer("CA" + "0" * 32, "#")


def test_the_outbox_is_bounded_and_newest_first() -> None:
    gateway = ConsolePhoneGateway(outbox_size=3)
    ids = [gateway.send_text(TO, f"code {i}", reference=f"r{i}") for i in range(5)]
    assert [t.id for t in gateway.texts()] == ids[:1:-1]
    call_ids = [call(gateway, f"r{i}") for i in range(4)]
    assert [c.id for c in gateway.calls()] == call_ids[:0:-1]
    assert gateway.call(call_ids[0]) is None


def test_concurrent_sends_keep_the_bound() -> None:
    gateway = ConsolePhoneGateway(outbox_size=10)
    threads = [threading.Thread(target=lambda: [gateway.send_text(TO, "c", reference="r") for _ in range(50)])
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(gateway.texts()) == 10 and len({t.id for t in gateway.texts()}) == 10


def test_bad_arguments() -> None:
    gateway = ConsolePhoneGateway()
    with pytest.raises(ValueError, match="E.164"):
        gateway.send_text("07400123456", "c", reference="r")
    with pytest.raises(ValueError, match="extension"):
        call(gateway, extension="12#")
    with pytest.raises(ValueError, match="outbox size"):
        ConsolePhoneGateway(outbox_size=0)
