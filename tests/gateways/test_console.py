"""The development console gateway: logs each message, keeps the last N in a thread-safe outbox, newest first."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from mfa_middleware.gateways import ConsoleGateway, EmailGateway, Outbox, OutgoingEmail


def message(n: int) -> OutgoingEmail:
    return OutgoingEmail(to=f"user{n}@example.test", subject=f"Code {n}", text=f"Your code is {n:06d}",
                         html=f"<p>Your code is {n:06d}</p>")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_logs_and_keeps_newest_first(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mfa_middleware.gateways")
    clock = Clock()
    gateway = ConsoleGateway(site_name="Demo", outbox_size=3, clock=clock)
    assert isinstance(gateway, EmailGateway)
    for n in range(5):
        gateway.send(message(n))
    entries = gateway.outbox.messages()
    assert [e.email.subject for e in entries] == ["Code 4", "Code 3", "Code 2"]
    assert entries[0].sent_at > entries[1].sent_at > entries[2].sent_at
    assert entries[0].sender == "Demo <no-reply@localhost>"
    assert entries[0].message_id.endswith("@localhost>")
    records = [r for r in caplog.records if r.name == "mfa_middleware.gateways"]
    assert len(records) == 5
    assert "user4@example.test" in records[-1].getMessage() and "000004" in records[-1].getMessage()


def test_outbox_is_bounded_and_thread_safe() -> None:
    outbox_size = 64
    gateway = ConsoleGateway(site_name="Demo", outbox_size=outbox_size)

    def sender(base: int) -> None:
        for i in range(50):
            gateway.send(message(base * 1000 + i))

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = gateway.outbox.messages()
    assert len(entries) == len(gateway.outbox) == outbox_size
    assert len({e.email.to for e in entries}) == outbox_size
    for t in range(8):  # per sender thread, newest first means its counter goes down
        mine = [int(e.email.to[4:].split("@")[0]) for e in entries if int(e.email.to[4:].split("@")[0]) // 1000 == t]
        assert mine == sorted(mine, reverse=True)


def test_snapshot_and_clear() -> None:
    outbox = Outbox(2)
    gateway = ConsoleGateway(site_name="Demo")
    gateway.outbox = outbox
    gateway.send(message(1))
    snapshot = outbox.messages()
    outbox.clear()
    assert len(snapshot) == 1 and outbox.messages() == ()


def test_outbox_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Outbox(0)
