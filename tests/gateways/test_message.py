"""What a factor may hand to a gateway: one bare recipient, a one-line subject, both bodies. An address typed at
enrollment must never add a recipient or a header (the attacker's inputs come first)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mfa_middleware.gateways import OutgoingEmail, check_address, compose_message

GOOD = {"to": "ann@example.test", "subject": "Your code", "text": "Code 123456", "html": "<p>Code 123456</p>"}


@pytest.mark.parametrize("to", [
    pytest.param("ann@example.test, eve@evil.test", id="list"),
    pytest.param("ann@example.test\r\nBcc: eve@evil.test", id="crlf-header"),
    pytest.param("ann@example.test\nRCPT TO:<eve@evil.test>", id="lf-smtp-command"),
    pytest.param("Ann <ann@example.test>", id="display-name"),
    pytest.param("<ann@example.test>", id="angle-brackets"),
    pytest.param("ann@example.test>,<eve@evil.test", id="bracket-break"),
    pytest.param("ann @example.test", id="space"),
    pytest.param("ann@example.test\x00", id="nul"),
    pytest.param("ann@eve@example.test", id="two-ats"),
    pytest.param("ann", id="no-domain"),
    pytest.param("@example.test", id="no-local-part"),
    pytest.param("ann@", id="empty-domain"),
    pytest.param("(comment)ann@example.test", id="comment"),
    pytest.param("", id="empty"),
])
def test_recipient_must_be_one_bare_address(to: str) -> None:
    with pytest.raises(ValueError, match="recipient"):
        OutgoingEmail(**{**GOOD, "to": to})


@pytest.mark.parametrize("to", [pytest.param("ann@example.test", id="simple"),
                                pytest.param("ann.lee+mfa@mail.example.test", id="plus-and-dots"),
                                pytest.param("o'brien@example.test", id="apostrophe")])
def test_ordinary_addresses_pass(to: str) -> None:
    assert check_address(to) == to


@pytest.mark.parametrize(("field", "value", "match"), [
    pytest.param("subject", "Code\r\nBcc: eve@evil.test", "subject", id="subject-crlf"),
    pytest.param("subject", "Code\nX: y", "subject", id="subject-lf"),
    pytest.param("subject", "", "subject", id="subject-empty"),
    pytest.param("text", "  ", "plain-text and an HTML body", id="no-text"),
    pytest.param("html", "", "plain-text and an HTML body", id="no-html"),
])
def test_subject_and_bodies(field: str, value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OutgoingEmail(**{**GOOD, field: value})


def test_compose_headers_and_parts() -> None:
    now = datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=1)))
    msg = compose_message(OutgoingEmail(**GOOD), from_address="mfa@contoso.test", site_name='Contoso "IT", Köln',
                          now=now)
    assert msg["From"].addresses[0].display_name == 'Contoso "IT", Köln'
    assert msg["Date"].datetime == now
    assert str(msg["Message-ID"]).endswith("@contoso.test>")
    assert msg["Auto-Submitted"] == "auto-generated"
    wire = msg.as_bytes()
    assert b"\nTo: ann@example.test\n" in wire
    assert wire.isascii(), "non-ASCII display names are encoded (RFC 2047), the message stays 7-bit headers"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_compose_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compose_message(OutgoingEmail(**GOOD), from_address="mfa@contoso.test", site_name="S",
                        now=datetime(2026, 3, 1, 12, 30))


def test_message_ids_are_unique() -> None:
    ids = {str(compose_message(OutgoingEmail(**GOOD), from_address="m@c.test", site_name="S",
                               now=datetime.now(UTC))["Message-ID"]) for _ in range(200)}
    assert len(ids) == 200
