"""The OATH hardware token inventory in the store (``mfa_oath_tokens``) and the token service: add, list, get,
assign, unassign, delete, activation link, and the atomic consumption of HOTP counters and TOTP steps, also under
twenty concurrent requests. Every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import base64
import multiprocessing
import traceback
from typing import Any

import pyotp
import pytest
from sqlalchemy import inspect

from mfa_middleware.factors.oath.otp import decode_base32, hotp_code
from mfa_middleware.secretbox import SecretBox
from mfa_middleware.services.audit import AuditLog
from mfa_middleware.services.oath_tokens import CodeCheck, OathTokens, TokenError
from mfa_middleware.store import Store, UserRecord
from mfa_middleware.store.sql import OathTokenRecord, SerialTaken
from tests.store.test_concurrency import BARRIER_TIMEOUT, run_together
from tests.support.mfa import ENCRYPTION_KEY, START, Clock

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC4226 = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
ACTOR = "cli:helpdesk"


@pytest.fixture
def alice(store: Store) -> UserRecord:
    return store.create_user("alice", now=START)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox((ENCRYPTION_KEY,))


@pytest.fixture
def service(store: Store, box: SecretBox, clock: Clock) -> OathTokens:
    return OathTokens(store, box, AuditLog(store), clock)


def token(store: Store, serial: str) -> OathTokenRecord:
    found = store.get_oath_token(serial)
    assert found is not None, serial
    return found


# -- schema and records -----------------------------------------------------------------------------------------
def test_the_migration_creates_the_table(store: Store) -> None:
    columns = {c["name"] for c in inspect(store.engine).get_columns("mfa_oath_tokens")}

    assert columns == {"id", "serial", "user_id", "kind", "secret", "digits", "period", "counter", "last_step",
                       "manufacturer", "model", "imported_at", "last_used_at", "method_id"}


def test_add_get_and_list(store: Store, alice: UserRecord) -> None:
    t1 = store.add_oath_token("T1", "totp", b"enc1", digits=6, period=60, now=START, user_id=alice.id,
                              manufacturer="Maker", model="Model")
    store.add_oath_token("H1", "hotp", b"enc2", digits=8, counter=7, now=START + 1)

    totp = token(store, "T1")
    hotp = token(store, "H1")
    assert (totp.id, totp.user_id, totp.username, totp.kind, totp.period, totp.counter, totp.digits) == \
        (t1, alice.id, "alice", "totp", 60, None, 6)
    assert (totp.manufacturer, totp.model, totp.imported_at, totp.activated) == ("Maker", "Model", START, False)
    assert (hotp.user_id, hotp.username, hotp.kind, hotp.period, hotp.counter, hotp.digits) == \
        (None, None, "hotp", None, 7, 8)
    assert b"enc1" not in repr(totp).encode()
    assert [t.serial for t in store.list_oath_tokens()] == ["H1", "T1"]
    assert [t.serial for t in store.list_oath_tokens(user_id=alice.id)] == ["T1"]
    assert store.get_oath_token("nope") is None
    assert store.oath_serials(["T1", "X", "H1"]) == {"T1", "H1"}


def test_a_serial_is_unique(store: Store) -> None:
    store.add_oath_token("T1", "totp", b"enc", digits=6, period=30, now=START)

    with pytest.raises(SerialTaken):
        store.add_oath_token("T1", "hotp", b"other", digits=6, now=START)
    assert token(store, "T1").secret == b"enc"


def test_assign_only_to_one_user(store: Store, alice: UserRecord) -> None:
    bob = store.create_user("bob", now=START)
    store.add_oath_token("T1", "totp", b"enc", digits=6, period=30, now=START)

    assert store.assign_oath_token("T1", alice.id)
    assert store.assign_oath_token("T1", alice.id)  # again: hers already
    assert not store.assign_oath_token("T1", bob.id)
    assert not store.assign_oath_token("missing", bob.id)
    assert token(store, "T1").username == "alice"


def test_activation_link_unassign_and_delete_remove_the_method(store: Store, alice: UserRecord) -> None:
    bob = store.create_user("bob", now=START)
    tid = store.add_oath_token("T1", "totp", b"enc", digits=6, period=30, now=START)  # in the pool
    method = store.add_method(alice.id, "oath", "Token T1", None, now=START, confirmed=True)
    other = store.add_method(bob.id, "oath", "Token T1", None, now=START, confirmed=True)

    assert store.link_oath_token(tid, alice.id, method)
    assert not store.link_oath_token(tid, bob.id, other)  # activated already
    linked = token(store, "T1")
    assert (linked.username, linked.method_id, linked.activated) == ("alice", method, True)
    assert store.get_oath_token_by_method(method) == linked
    assert store.consume_oath_step(tid, 100, now=START)

    before = store.unassign_oath_token("T1")

    assert before is not None and (before.id, before.username, before.method_id) == (tid, "alice", method)
    after = token(store, "T1")
    assert (after.user_id, after.method_id, after.last_step) == (None, None, 100)  # old codes stay used
    assert store.get_method(method) is None
    assert store.get_method(other) is not None
    assert store.unassign_oath_token("missing") is None

    assert store.link_oath_token(tid, bob.id, other)
    deleted = store.delete_oath_token("T1")
    assert deleted is not None and deleted.username == "bob"
    assert store.get_oath_token("T1") is None and store.get_method(other) is None
    assert store.delete_oath_token("T1") is None


def test_a_deleted_user_leaves_the_token_in_the_pool(store: Store, alice: UserRecord) -> None:
    tid = store.add_oath_token("T1", "totp", b"enc", digits=6, period=30, now=START, user_id=alice.id)
    method = store.add_method(alice.id, "oath", "Token T1", None, now=START, confirmed=True)
    assert store.link_oath_token(tid, alice.id, method)

    store.delete_user(alice.id)

    left = token(store, "T1")
    assert (left.user_id, left.username, left.method_id) == (None, None, None)


def test_removing_the_users_methods_deactivates_the_token(store: Store, alice: UserRecord) -> None:
    tid = store.add_oath_token("T1", "totp", b"enc", digits=6, period=30, now=START, user_id=alice.id)
    method = store.add_method(alice.id, "oath", "Token T1", None, now=START, confirmed=True)
    assert store.link_oath_token(tid, alice.id, method)

    store.delete_methods(alice.id)  # mfa-admin user reset-mfa

    left = token(store, "T1")
    assert (left.username, left.method_id) == ("alice", None)


# -- atomic consumption -------------------------------------------------------------------------------------------
def test_consume_step_once_and_only_forward(store: Store) -> None:
    tid = store.add_oath_token("T1", "totp", b"enc", digits=6, period=30, now=START)

    assert store.consume_oath_step(tid, 10, now=START)
    assert not store.consume_oath_step(tid, 10, now=START)
    assert not store.consume_oath_step(tid, 9, now=START)
    assert store.consume_oath_step(tid, 2**40, now=START)
    assert token(store, "T1").last_step == 2**40
    assert not store.consume_oath_counter(tid, 0, now=START)  # not an HOTP token


def test_consume_counter_once_and_skipped_codes_die(store: Store) -> None:
    tid = store.add_oath_token("H1", "hotp", b"enc", digits=6, counter=5, now=START)

    assert not store.consume_oath_counter(tid, 4, now=START)  # behind
    assert store.consume_oath_counter(tid, 8, now=START)
    assert token(store, "H1").counter == 9
    assert not store.consume_oath_counter(tid, 8, now=START)
    assert not store.consume_oath_counter(tid, 6, now=START)  # skipped over: never
    assert not store.consume_oath_step(tid, 99, now=START)  # not a TOTP token
    assert store.resync_oath_counter(tid, 50, now=START)
    assert token(store, "H1").counter == 51
    assert not store.resync_oath_counter(tid, 50, now=START)


def test_twenty_threads_consume_one_totp_step_once(store: Store) -> None:
    tid = store.add_oath_token("T1", "totp", b"enc", digits=6, period=60, now=START)

    results = run_together(20, lambda: store.consume_oath_step(tid, 777, now=START))

    assert results.count(True) == 1
    assert token(store, "T1").last_step == 777


def test_twenty_threads_consume_one_hotp_counter_once(store: Store) -> None:
    tid = store.add_oath_token("H1", "hotp", b"enc", digits=6, now=START)

    results = run_together(20, lambda: store.consume_oath_counter(tid, 3, now=START))

    assert results.count(True) == 1
    assert token(store, "H1").counter == 4


@pytest.mark.parametrize("kind", [pytest.param("totp", id="totp-60s"), pytest.param("hotp", id="hotp")])
def test_twenty_concurrent_requests_with_one_code_are_accepted_once(store: Store, box: SecretBox, clock: Clock,
                                                                    service: OathTokens, kind: str) -> None:
    if kind == "totp":
        store.add_oath_token("X1", "totp", box.encrypt(SECRET), digits=6, period=60, now=START)
        code = pyotp.TOTP(SECRET, interval=60).at(START)
    else:
        store.add_oath_token("X1", "hotp", box.encrypt(SECRET), digits=6, counter=0, now=START)
        code = hotp_code(decode_base32(SECRET), 2)
    record = token(store, "X1")

    results = run_together(20, lambda: service.check(record, code).outcome)

    assert results.count(CodeCheck.ACCEPTED) == 1
    assert results.count(CodeCheck.REPLAYED) == 19
    assert service.check(token(store, "X1"), code).outcome is not CodeCheck.ACCEPTED


# -- the service's code checks ------------------------------------------------------------------------------------
def test_hotp_rfc_vectors_through_the_service(store: Store, box: SecretBox, service: OathTokens) -> None:
    store.add_oath_token("RFC", "hotp", box.encrypt(RFC_SECRET), digits=6, counter=0, now=START)

    outcomes = [service.check(token(store, "RFC"), code) for code in RFC4226]

    assert [(o.outcome, o.matched) for o in outcomes] == [(CodeCheck.ACCEPTED, c) for c in range(10)]
    assert token(store, "RFC").counter == 10
    assert service.check(token(store, "RFC"), RFC4226[9]).outcome is CodeCheck.REJECTED


def test_hotp_look_ahead_then_resync(store: Store, box: SecretBox, service: OathTokens) -> None:
    store.add_oath_token("H1", "hotp", box.encrypt(SECRET), digits=8, counter=0, now=START)
    key = decode_base32(SECRET)
    code = [hotp_code(key, c, 8) for c in range(120)]

    assert service.check(token(store, "H1"), code[9]).outcome is CodeCheck.ACCEPTED  # 10th press: in the window
    assert service.check(token(store, "H1"), code[30]).outcome is CodeCheck.REJECTED  # pressed 20 times idle
    assert service.resync(token(store, "H1"), code[30], code[32]).outcome is CodeCheck.REJECTED  # not consecutive
    resynced = service.resync(token(store, "H1"), code[30], code[31])
    assert (resynced.outcome, resynced.matched) == (CodeCheck.ACCEPTED, 31)
    assert token(store, "H1").counter == 32
    assert service.resync(token(store, "H1"), code[30], code[31]).outcome is CodeCheck.REJECTED
    assert service.check(token(store, "H1"), code[32]).outcome is CodeCheck.ACCEPTED


def test_a_stale_record_cannot_replay_a_resync(store: Store, box: SecretBox, service: OathTokens) -> None:
    store.add_oath_token("H1", "hotp", box.encrypt(SECRET), digits=6, counter=0, now=START)
    key = decode_base32(SECRET)
    stale = token(store, "H1")

    assert service.resync(stale, hotp_code(key, 40), hotp_code(key, 41)).outcome is CodeCheck.ACCEPTED
    assert service.resync(stale, hotp_code(key, 40), hotp_code(key, 41)).outcome is CodeCheck.REPLAYED
    assert service.check(stale, hotp_code(key, 5)).outcome is CodeCheck.REPLAYED  # skipped over by the resync


@pytest.mark.parametrize("period", [pytest.param(30, id="30s"), pytest.param(60, id="60s")])
def test_totp_through_the_service_with_drift(store: Store, box: SecretBox, clock: Clock, service: OathTokens,
                                             period: int) -> None:
    store.add_oath_token("T1", "totp", box.encrypt(SECRET), digits=6, period=period, now=START)
    totp = pyotp.TOTP(SECRET, interval=period)
    step = int(START // period)

    late = service.check(token(store, "T1"), totp.generate_otp(step - 1))
    assert (late.outcome, late.matched) == (CodeCheck.ACCEPTED, step - 1)
    assert service.check(token(store, "T1"), totp.generate_otp(step - 1)).outcome is CodeCheck.REPLAYED
    assert service.check(token(store, "T1"), totp.generate_otp(step + 2)).outcome is CodeCheck.REJECTED
    clock.advance(period)
    assert service.check(token(store, "T1"), totp.generate_otp(step + 1)).outcome is CodeCheck.ACCEPTED
    assert service.check(token(store, "T1"), totp.generate_otp(step)).outcome is CodeCheck.REPLAYED  # older


def test_the_secret_is_encrypted_at_rest(store: Store, service: OathTokens) -> None:
    report = service.import_file(f"serial number,secret key,time interval\nT1,{SECRET},30\n", actor=ACTOR)

    assert report.imported == ("T1",)
    stored = token(store, "T1").secret
    assert SECRET.encode() not in stored and decode_base32(SECRET) not in stored
    assert SecretBox((ENCRYPTION_KEY,)).decrypt(stored) == SECRET


# -- the service's inventory ------------------------------------------------------------------------------------
def test_import_checks_users_and_serials_in_the_store(store: Store, alice: UserRecord,
                                                      service: OathTokens) -> None:
    store.add_oath_token("OLD", "totp", b"enc", digits=6, period=30, now=START)
    data = ("upn,serial number,secret key,time interval,manufacturer,model\r\n"
            f"alice,A1,{SECRET},30,Maker,Model\r\n"
            f"ghost,G1,{SECRET},30,Maker,Model\r\n"
            f"Alice,OLD,{SECRET},60,Maker,Model\r\n"
            f",POOL,{SECRET},60,Maker,Model\r\n"
            f"alice,A1,{SECRET},30,Maker,Model\r\n")

    report = service.import_file(b"\xef\xbb\xbf" + data.encode(), actor=ACTOR)

    assert report.imported == ("A1", "POOL")
    assert [(r.line, r.serial, r.reason.value) for r in report.refused] == [
        (3, "G1", "unknown user"), (4, "OLD", "serial already imported"), (6, "A1", "duplicate serial in file")]
    assert token(store, "A1").username == "alice"
    assert token(store, "POOL").username is None
    rows = [e for e in store.list_audit(limit=100) if e.event.startswith("oath_")]
    assert {(e.event, e.username, e.detail.get("serial")) for e in rows} == {
        ("oath_token_import", "alice", "A1"), ("oath_token_import", None, "POOL"),
        ("oath_tokens_import", None, None)}
    assert all(e.actor == ACTOR for e in rows)
    assert SECRET not in str([e.detail for e in rows])

    again = service.import_file(data, actor=ACTOR)

    assert again.imported == ()
    assert [r.reason.value for r in again.refused] == ["serial already imported", "unknown user",
                                                      "serial already imported", "serial already imported",
                                                      "duplicate serial in file"]


def test_a_race_between_two_imports_refuses_instead_of_failing(store: Store, service: OathTokens) -> None:
    parsed = service.parse(f"serial number,secret key,time interval\nT1,{SECRET},30\n")
    store.add_oath_token("T1", "totp", b"enc", digits=6, period=30, now=START)  # after the pre-check would run

    real = store.oath_serials
    store.oath_serials = lambda serials: set()  # type: ignore[method-assign]  # as if read before the insert
    try:
        report = service.import_rows(parsed, actor=ACTOR)
    finally:
        store.oath_serials = real  # type: ignore[method-assign]

    assert report.imported == ()
    assert [r.reason.value for r in report.refused] == ["serial already imported"]


def test_service_assign_unassign_delete_audit_and_revoke(store: Store, alice: UserRecord,
                                                        service: OathTokens) -> None:
    bob = store.create_user("bob", now=START)
    service.import_file(f"serial number,secret key,time interval\nT1,{SECRET},30\nT2,{SECRET},60\n", actor=ACTOR)

    assert service.assign("T1", "Alice", actor=ACTOR).username == "alice"
    with pytest.raises(TokenError, match="assigned to alice; unassign it first"):
        service.assign("T1", "bob", actor=ACTOR)
    with pytest.raises(TokenError, match="no user named 'ghost'"):
        service.assign("T2", "ghost", actor=ACTOR)
    with pytest.raises(TokenError, match="no token with serial number 'T9'"):
        service.assign("T9", "bob", actor=ACTOR)

    method = store.add_method(alice.id, "oath", "Token T1", None, now=START, confirmed=True)
    assert store.link_oath_token(token(store, "T1").id, alice.id, method)
    revoked_before = store.last_revocation_id()

    before = service.unassign("T1", actor=ACTOR)

    assert (before.username, before.activated) == ("alice", True)
    assert store.get_method(method) is None
    assert [r.username for r in store.revocations_since(revoked_before, newer_than=0)] == ["alice"]
    assert service.assign("T1", "bob", actor=ACTOR).username == "bob"
    assert service.delete("T1", actor=ACTOR).username == "bob"
    assert store.get_oath_token("T1") is None
    assert [r.username for r in store.revocations_since(revoked_before, newer_than=0)] == ["alice"]  # not activated
    events = [(e.event, e.username, e.detail.get("serial")) for e in store.list_audit(limit=100)
              if e.event in ("oath_token_assign", "oath_token_unassign", "oath_token_delete")]
    assert events == [("oath_token_delete", "bob", "T1"), ("oath_token_assign", "bob", "T1"),
                      ("oath_token_unassign", "alice", "T1"), ("oath_token_assign", "alice", "T1")]
    assert [t.serial for t in service.list()] == ["T2"]
    assert service.list("bob") == [] and bob.id


# -- processes ---------------------------------------------------------------------------------------------------
def check_in_process(url: str, key: str, serial: str, code: str, attempts: int, barrier: Any,
                     results: Any) -> None:
    """Worker (spawned process): its own store and service; checks ``code`` ``attempts`` times after the barrier.
    Puts ``(accepted, errors)`` on ``results`` (formatted tracebacks, never raised)."""
    accepted = 0
    errors: list[str] = []
    store = Store(url)
    try:
        service = OathTokens(store, SecretBox((key,)), AuditLog(store), Clock())
        record = store.get_oath_token(serial)
        assert record is not None
        barrier.wait(timeout=BARRIER_TIMEOUT)
        for _ in range(attempts):
            try:
                if service.check(record, code).outcome is CodeCheck.ACCEPTED:
                    accepted += 1
            except Exception:
                errors.append(traceback.format_exc())
    except Exception:
        errors.append(traceback.format_exc())
    finally:
        store.close()
        results.put((accepted, errors))


def test_four_processes_times_five_requests_accept_one_hotp_code_once(database_url: str, store: Store,
                                                                       box: SecretBox) -> None:
    store.add_oath_token("P1", "hotp", box.encrypt(SECRET), digits=6, counter=0, now=START)
    code = hotp_code(decode_base32(SECRET), 4)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    workers = [ctx.Process(target=check_in_process, args=(database_url, ENCRYPTION_KEY, "P1", code, 5, barrier,
                                                             results))
               for _ in range(4)]
    for w in workers:
        w.start()
    try:
        outcomes = [results.get(timeout=120) for _ in workers]
    finally:
        for w in workers:
            w.join(timeout=60)
        results.close()
        results.join_thread()

    assert [w.exitcode for w in workers] == [0] * 4
    assert [e for _, errs in outcomes for e in errs] == []
    assert sum(accepted for accepted, _ in outcomes) == 1
    assert token(store, "P1").counter == 5


def test_the_migration_matches_the_table_definition(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from mfa_middleware.store.schema import metadata

    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)

    assert [d for d in diffs if "mfa_oath_tokens" in repr(d)] == []
