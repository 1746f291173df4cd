"""Caps on texts and calls against SMS pumping and toll fraud (:mod:`mfa_middleware.services.phone_limits`):
the resend interval, the per-user, per-number and per-country hourly and daily caps, the last slot under twenty
concurrent requests, refused gateway sends that still count, 0 = no cap, and the configuration keys. Every store
test runs on SQLite and on a real PostgreSQL, with a fixed clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import inspect, select

from mfa_middleware.config import ConfigError
from mfa_middleware.services.audit import AuditLog
from mfa_middleware.services.phone_limits import (PhoneSendGuard, SendLimits, SendRefusal, mask_for_audit,
                                                  number_key, parse_send_limits, user_message)
from mfa_middleware.store import Store, UserRecord
from mfa_middleware.store.schema import phone_sends
from tests.store.test_concurrency import run_together
from tests.support.mfa import START

KEY = b"n" * 32
NUMBER = "+447700900123"
OTHER = "+447700900456"
HOUR, DAY = 3600.0, 86400.0


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    try:
        store.upgrade()
        yield store
    finally:
        store.close()


@pytest.fixture
def alice(store: Store) -> UserRecord:
    return store.create_user("alice", now=START)


@pytest.fixture
def guard(store: Store) -> PhoneSendGuard:
    return PhoneSendGuard(store, AuditLog(store), KEY)


def users(store: Store, count: int) -> list[UserRecord]:
    return [store.create_user(f"user{i}", now=START) for i in range(count)]


def text(guard: PhoneSendGuard, user: UserRecord, at: float, number: str = NUMBER, country: str = "GB",
         purpose: Any = "sign_in", limits: SendLimits | None = None) -> SendRefusal | None:
    return guard.reserve(user, number, country, "text", purpose, now=at, limits=limits)


# -- schema -------------------------------------------------------------------------------------------------------
def test_the_migration_creates_the_tables_and_indexes(store: Store) -> None:
    inspector = inspect(store.engine)
    assert {c["name"] for c in inspector.get_columns("mfa_phone_sends")} == {
        "id", "user_id", "number_key", "country", "channel", "purpose", "at"}
    assert {tuple(i["column_names"]) for i in inspector.get_indexes("mfa_phone_sends")} >= {
        ("user_id", "at"), ("number_key", "at"), ("country", "at")}
    assert {c["name"] for c in inspector.get_columns("mfa_fraud_reports")} == {
        "id", "user_id", "username", "method_kind", "at", "client_ip", "user_agent", "reference", "blocked_until",
        "notified"}


def test_the_table_holds_no_phone_number(store: Store, guard: PhoneSendGuard, alice: UserRecord) -> None:
    assert text(guard, alice, START) is None

    with store.engine.connect() as conn:
        rows = conn.execute(select(phone_sends)).all()
    assert len(rows) == 1
    assert rows[0].number_key == number_key(KEY, NUMBER) and len(rows[0].number_key) == 64
    assert "7700900123" not in repr(tuple(rows[0]))
    assert number_key(b"m" * 32, NUMBER) != number_key(KEY, NUMBER)  # keyed: a dictionary of numbers is no use


# -- the caps -----------------------------------------------------------------------------------------------------
def test_the_sixth_text_in_an_hour_is_refused(guard: PhoneSendGuard, alice: UserRecord) -> None:
    for i in range(5):  # each to a new number, 31 s apart: only the user's cap applies
        assert text(guard, alice, START + 31 * i, number=f"+4477009001{i:02d}") is None

    refused = text(guard, alice, START + 31 * 5, number="+447700900199")

    assert refused is not None and refused.limit == "user_hour"
    assert refused.retry_after == pytest.approx(HOUR - 31 * 5)
    assert text(guard, alice, START + HOUR, number="+447700900199") is None  # the first send has left the hour


def test_the_resend_before_30_seconds_is_refused_and_allowed_after(guard: PhoneSendGuard,
                                                                   alice: UserRecord) -> None:
    assert text(guard, alice, START) is None

    early = text(guard, alice, START + 5)

    assert early == SendRefusal("min_interval", 25.0)
    assert user_message(early) == "You can ask for a new code in 25 seconds."
    assert text(guard, alice, START + 29.9) is not None
    assert text(guard, alice, START + 30) is None


def test_the_interval_is_per_purpose_and_per_channel(guard: PhoneSendGuard, alice: UserRecord) -> None:
    assert guard.reserve(alice, NUMBER, "GB", "call", "sign_in", now=START) is None
    refused = guard.reserve(alice, NUMBER, "GB", "call", "sign_in", now=START + 1)
    assert refused is not None and refused.limit == "min_interval"
    # A text right after the call is "Sign in another way", not a resend; it still counts for the caps.
    assert text(guard, alice, START + 1) is None
    assert text(guard, alice, START + 2, purpose="enroll") is None  # proving a number is another purpose
    refused = text(guard, alice, START + 3)
    assert refused is not None and refused.limit == "min_interval"


def test_the_number_cap_holds_across_users(store: Store, guard: PhoneSendGuard) -> None:
    people = users(store, 6)
    for i, person in enumerate(people[:5]):
        assert text(guard, person, START + i) is None

    refused = text(guard, people[5], START + 5)

    assert refused is not None and refused.limit == "number_hour"
    assert text(guard, people[5], START + 5, number=OTHER) is None


def test_the_country_cap_holds_across_users_and_numbers(store: Store, guard: PhoneSendGuard) -> None:
    limits = SendLimits(per_country_hour=3, per_country_day=4)
    people = users(store, 6)
    for i in range(3):
        assert text(guard, people[i], START + i, number=f"+2376500000{i}", country="CM", limits=limits) is None

    refused = text(guard, people[3], START + 3, number="+23765000009", country="CM", limits=limits)

    assert refused is not None and refused.limit == "country_hour" and refused.retry_after == pytest.approx(HOUR - 3)
    assert text(guard, people[3], START + 3, number=NUMBER, country="GB", limits=limits) is None
    assert text(guard, people[4], START + HOUR, number="+23765000008", country="CM", limits=limits) is None
    day = text(guard, people[5], START + HOUR + 1, number="+23765000007", country="CM", limits=limits)
    assert day is not None and day.limit == "country_day" and day.retry_after == pytest.approx(DAY - HOUR - 1)
    assert user_message(day) == ("We cannot send more codes to this country today. Try again tomorrow or use "
                                 "another method.")


def test_the_daily_number_cap_says_try_tomorrow(store: Store, guard: PhoneSendGuard) -> None:
    people = users(store, 21)
    for i, person in enumerate(people[:20]):  # 20 users, one every 20 minutes: never 5 in one hour
        assert text(guard, person, START + i * 1200) is None

    refused = text(guard, people[20], START + 20 * 1200)

    assert refused is not None and refused.limit == "number_day"
    assert refused.retry_after == pytest.approx(DAY - 20 * 1200)
    assert user_message(refused) == ("Too many codes were sent to this number today. Try again tomorrow or use "
                                     "another method.")


def test_the_longest_wait_is_reported(guard: PhoneSendGuard, alice: UserRecord) -> None:
    limits = SendLimits(per_user_hour=1)
    assert text(guard, alice, START, limits=limits) is None

    refused = text(guard, alice, START + 1, limits=limits)  # the interval and the hourly cap both refuse

    assert refused is not None and refused.limit == "user_hour" and refused.retry_after == pytest.approx(HOUR - 1)


def test_refused_gateway_sends_still_count(store: Store, guard: PhoneSendGuard, alice: UserRecord) -> None:
    """The method reserves, then the gateway fails; nothing gives the reservation back."""
    assert not hasattr(store, "release_phone_send")
    for i in range(5):
        assert text(guard, alice, START + 31 * i) is None
        # ... the gateway answered 503 here: no text left, but the send is counted.

    assert store.count_phone_sends(since=START - 1, user_id=alice.id) == 5
    assert text(guard, alice, START + 31 * 5) is not None


def test_a_refusal_counts_nothing(store: Store, guard: PhoneSendGuard, alice: UserRecord) -> None:
    assert text(guard, alice, START) is None
    for i in range(1, 10):
        assert text(guard, alice, START + i) is not None

    assert store.count_phone_sends(since=START - 1) == 1
    assert text(guard, alice, START + 30) is None  # refused asks did not push the interval further


def test_zero_means_no_cap(guard: PhoneSendGuard, alice: UserRecord) -> None:
    limits = SendLimits(min_interval=0, per_user_hour=0, per_user_day=0, per_number_hour=0, per_number_day=0,
                        per_country_hour=0, per_country_day=0)

    assert all(text(guard, alice, START, limits=limits) is None for _ in range(50))


def test_a_refused_send_is_audited_with_a_masked_number(store: Store, guard: PhoneSendGuard,
                                                        alice: UserRecord) -> None:
    assert text(guard, alice, START) is None
    assert guard.reserve(alice, NUMBER, "gb", "text", "sign_in", now=START + 1, client_ip="203.0.113.9") is not None

    rows = [e for e in store.list_audit(username="alice") if e.event == "phone"]
    assert len(rows) == 1
    row = rows[0]
    assert row.result == "capped" and row.client_ip == "203.0.113.9"
    assert row.detail == {"limit": "min_interval", "channel": "text", "purpose": "sign_in", "country": "GB",
                          "number": mask_for_audit(NUMBER), "retry_after": 29}
    assert "900123" not in json.dumps(row.detail) and mask_for_audit(NUMBER).endswith("23")


def test_prune_removes_old_sends_only(store: Store, guard: PhoneSendGuard, alice: UserRecord) -> None:
    assert text(guard, alice, START) is None
    assert text(guard, alice, START + DAY) is None

    assert store.prune_phone_sends(START + DAY) == 1
    assert store.count_phone_sends(since=0) == 1


@pytest.mark.parametrize("bad", [
    pytest.param({"channel": "fax"}, id="channel"),
    pytest.param({"purpose": "marketing"}, id="purpose"),
    pytest.param({"e164": "07700 900123"}, id="not-e164"),
    pytest.param({"e164": "+4477009001234567"}, id="too-long"),
])
def test_bad_arguments_are_refused(guard: PhoneSendGuard, alice: UserRecord, bad: dict[str, Any]) -> None:
    args: dict[str, Any] = {"e164": NUMBER, "channel": "text", "purpose": "sign_in", **bad}
    with pytest.raises(ValueError):
        guard.reserve(alice, args["e164"], "GB", args["channel"], args["purpose"], now=START)


# -- concurrency: the last slot ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "limits", "cap"), [
    pytest.param("one-user", SendLimits(min_interval=0, per_user_hour=2), "user_hour", id="one-user"),
    pytest.param("one-number", SendLimits(min_interval=0, per_number_hour=2), "number_hour",
                 id="one-number-many-users"),
    pytest.param("one-country", SendLimits(min_interval=0, per_country_hour=2), "country_hour",
                 id="one-country-many-users-and-numbers"),
])
def test_twenty_concurrent_reserves_for_the_last_slot_give_one_success(store: Store, guard: PhoneSendGuard,
                                                                      shape: str, limits: SendLimits,
                                                                      cap: str) -> None:
    people = users(store, 21)
    assert text(guard, people[0], START - 60, limits=limits) is None  # one slot of two left, in every shape
    slots = iter(range(20))
    lock = threading.Lock()

    def task() -> SendRefusal | None:
        with lock:
            i = next(slots)
        person = people[0] if shape == "one-user" else people[1 + i]
        number = NUMBER if shape == "one-number" else f"+4477009002{i:02d}"
        return text(guard, person, START, number=number, limits=limits)

    results = run_together(20, task)

    assert sum(r is None for r in results) == 1
    assert {r.limit for r in results if r is not None} == {cap}
    assert store.count_phone_sends(since=START - HOUR) == 2


# -- configuration ------------------------------------------------------------------------------------------------
def test_parse_defaults_and_values() -> None:
    assert parse_send_limits({}, "mfa.toml", "methods.sms.") == SendLimits()
    parsed = parse_send_limits({"resend_after": "1m", "per_user_per_hour": 3, "per_number_per_day": 0,
                                "per_country_per_hour": 0, "code_ttl": "5m"}, "mfa.toml", "methods.sms.")
    assert parsed == SendLimits(min_interval=60.0, per_user_hour=3, per_number_day=0, per_country_hour=0)


@pytest.mark.parametrize(("table", "message"), [
    pytest.param({"per_user_per_hour": -1}, "mfa.toml: methods.sms.per_user_per_hour: must be between 0 and",
                 id="negative"),
    pytest.param({"per_country_per_day": "lots"}, "mfa.toml: methods.sms.per_country_per_day: expected an integer",
                 id="not-a-number"),
    pytest.param({"per_number_per_hour": True}, "methods.sms.per_number_per_hour: expected an integer",
                 id="boolean"),
    pytest.param({"resend_after": "soon"}, "mfa.toml: methods.sms.resend_after: expected a duration", id="duration"),
    pytest.param({"resend_after": "2h"}, "methods.sms.resend_after: must be between 1s and 1h", id="interval-long"),
    pytest.param({"resend_after": 0}, "methods.sms.resend_after: a duration must be positive", id="interval-zero"),
    pytest.param({"per_user_per_hour": 30, "per_user_per_day": 20},
                 "methods.sms.per_user_per_hour: 30 is more than per_user_per_day (20)", id="hour-above-day"),
])
def test_parse_errors_name_the_file_and_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_send_limits(table, "mfa.toml", "methods.sms.")
    assert message in str(caught.value)


def test_the_key_secret_must_be_long_enough(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        PhoneSendGuard(store, AuditLog(store), b"short")


def test_old_sends_are_pruned_hourly_by_the_runtime(sqlite_url: str) -> None:
    """The runtime's hourly housekeeping deletes counted sends older than two days (no cap looks back further);
    younger ones stay and still count."""
    from mfa_middleware.runtime import PHONE_SENDS_KEPT, Runtime
    from tests.support.mfa import FAST_HASHER, Clock, make_config

    clock = Clock(START)
    rt = Runtime(make_config(sqlite_url), clock=clock, password_hasher=FAST_HASHER)
    rt.store.upgrade()
    try:
        user = rt.accounts.add("alice", actor="test", password="pw-alice-1")
        old = START - PHONE_SENDS_KEPT - 10
        assert rt.phone_guard.reserve(user, "+447400123456", "GB", "text", "sign_in", now=old) is None
        assert rt.phone_guard.reserve(user, "+447400123456", "GB", "text", "sign_in", now=START - 60) is None
        assert rt.store.count_phone_sends(since=0, user_id=user.id) == 2
        rt.revocations.refresh(START)  # the read, then the hourly pruning in the background
        rt.revocations.wait_idle()
        assert rt.store.count_phone_sends(since=0, user_id=user.id) == 1
    finally:
        rt.close()
