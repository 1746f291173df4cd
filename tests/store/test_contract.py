"""The store contract (DESIGN.md section 2): every test runs once on SQLite and once on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import inspect, select

from mfa_middleware.runtime import Runtime
from mfa_middleware.services.lockout import Client
from mfa_middleware.store import SchemaOutOfDate, Store
from mfa_middleware.store.schema import methods
from mfa_middleware.store.sql import HARD_FAILURE_LIMIT, LOCKED_FOR_GOOD, UserExists, UserRecord
from tests.support.mfa import FAST_HASHER, START, Clock, make_config

TABLES = {"mfa_users", "mfa_methods", "mfa_revocations", "mfa_audit"}


@pytest.fixture
def empty_store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(empty_store: Store) -> Store:
    empty_store.upgrade()
    return empty_store


@pytest.fixture
def alice(store: Store) -> UserRecord:
    return store.create_user("alice", now=START)


def _table_names(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


# -- schema ---------------------------------------------------------------------------------------------------
def test_upgrade_from_empty_creates_the_tables_and_reaches_head(empty_store: Store) -> None:
    assert not TABLES & _table_names(empty_store)

    applied = empty_store.upgrade()

    current, head = empty_store.schema_revision()
    assert applied == [head]
    assert current == head
    assert TABLES <= _table_names(empty_store)
    empty_store.check_schema()  # does not raise


def test_upgrade_is_idempotent(empty_store: Store) -> None:
    empty_store.upgrade()
    empty_store.create_user("alice", now=START)

    assert empty_store.upgrade() == []
    assert empty_store.upgrade() == []

    current, head = empty_store.schema_revision()
    assert current == head
    assert [u.username for u in empty_store.list_users()] == ["alice"]


def test_schema_revision_of_an_empty_database_is_none(empty_store: Store) -> None:
    current, head = empty_store.schema_revision()
    assert current is None
    assert head  # the package knows its newest revision


def test_check_schema_refuses_an_empty_database(empty_store: Store) -> None:
    with pytest.raises(SchemaOutOfDate, match=r"mfa-admin db upgrade"):
        empty_store.check_schema()


# -- users ----------------------------------------------------------------------------------------------------
def test_create_and_get_user(store: Store) -> None:
    created = store.create_user("alice", now=START, email="alice@example.org", display_name="Alice A.",
                                groups=("admins", "finance"), is_admin=True, state="enforced",
                                password_hash="$argon2id$fake")

    fetched = store.get_user("alice")

    assert fetched == created
    assert fetched is not None
    assert (fetched.username, fetched.email, fetched.display_name) == ("alice", "alice@example.org", "Alice A.")
    assert fetched.groups == ("admins", "finance")
    assert fetched.is_admin is True
    assert fetched.state == "enforced"
    assert fetched.password_hash == "$argon2id$fake"
    assert (fetched.failed_count, fetched.consecutive_failures) == (0, 0)
    assert (fetched.last_failed_at, fetched.locked_until) == (None, None)
    assert fetched.created_at == fetched.updated_at == START
    assert not fetched.locked(START)


def test_create_user_defaults(store: Store) -> None:
    user = store.create_user("bob", now=START)
    assert (user.email, user.display_name, user.groups, user.is_admin, user.state, user.password_hash) == (
        None, None, (), False, "enabled", None)


def test_get_unknown_user_is_none(store: Store) -> None:
    assert store.get_user("nobody") is None


def test_duplicate_username_raises_user_exists(store: Store, alice: UserRecord) -> None:
    with pytest.raises(UserExists, match="alice"):
        store.create_user("alice", now=START + 1)
    assert store.count_users() == 1
    assert store.get_user("alice") == alice


def test_list_users_is_ordered_by_username(store: Store) -> None:
    for name in ("carol", "alice", "bob"):
        store.create_user(name, now=START)

    assert [u.username for u in store.list_users()] == ["alice", "bob", "carol"]
    assert store.count_users() == 3


def test_list_users_of_an_empty_store(store: Store) -> None:
    assert store.list_users() == []
    assert store.count_users() == 0


def test_update_user(store: Store, alice: UserRecord) -> None:
    changed = store.update_user(alice.id, now=START + 60, email="a@example.org", display_name="Alice",
                                groups=("staff",), is_admin=True, state="enforced", password_hash="h2")

    assert changed is True
    user = store.get_user("alice")
    assert user is not None
    assert (user.email, user.display_name, user.groups, user.is_admin, user.state, user.password_hash) == (
        "a@example.org", "Alice", ("staff",), True, "enforced", "h2")
    assert user.updated_at == START + 60
    assert user.created_at == START


def test_update_unknown_user_is_false(store: Store) -> None:
    assert store.update_user(999_999, now=START, state="enforced") is False


@pytest.mark.parametrize("field", [
    pytest.param("username", id="username"),
    pytest.param("failed_count", id="failed_count"),
    pytest.param("locked_until", id="locked_until"),
])
def test_update_user_refuses_other_columns(store: Store, alice: UserRecord, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        store.update_user(alice.id, now=START, **{field: 1})


def test_delete_user_removes_the_user_and_their_methods(store: Store, alice: UserRecord) -> None:
    bob = store.create_user("bob", now=START)
    store.add_method(alice.id, "totp", "app", b"x", now=START, confirmed=True)
    bob_method = store.add_method(bob.id, "totp", "app", b"y", now=START, confirmed=True)

    assert store.delete_user(alice.id) is True

    assert store.get_user("alice") is None
    assert store.list_methods(alice.id, confirmed_only=False) == []
    assert [m.id for m in store.list_methods(bob.id)] == [bob_method]
    assert store.delete_user(alice.id) is False


# -- methods --------------------------------------------------------------------------------------------------
def test_add_and_list_methods(store: Store, alice: UserRecord) -> None:
    pending = store.add_method(alice.id, "totp", "Authenticator app", b"secret-1", now=START)
    confirmed = store.add_method(alice.id, "totp", "Phone", b"secret-2", now=START + 1, confirmed=True)

    assert [m.id for m in store.list_methods(alice.id)] == [confirmed]
    assert [m.id for m in store.list_methods(alice.id, confirmed_only=False)] == [pending, confirmed]
    method = store.get_method(pending)
    assert method is not None
    assert (method.user_id, method.kind, method.label, method.secret) == (
        alice.id, "totp", "Authenticator app", b"secret-1")
    assert (method.confirmed, method.last_step, method.created_at, method.last_used_at) == (
        False, None, START, None)


def test_get_unknown_method_is_none(store: Store) -> None:
    assert store.get_method(999_999) is None


def test_confirm_method_once(store: Store, alice: UserRecord) -> None:
    method_id = store.add_method(alice.id, "totp", "app", b"s", now=START)

    assert store.confirm_method(method_id, alice.id, step=100, now=START + 5) is True
    assert store.confirm_method(method_id, alice.id, step=101, now=START + 6) is False

    method = store.get_method(method_id)
    assert method is not None
    assert (method.confirmed, method.last_step, method.last_used_at) == (True, 100, START + 5)
    assert [m.id for m in store.list_methods(alice.id)] == [method_id]


def test_confirm_method_of_another_user_is_refused(store: Store, alice: UserRecord) -> None:
    bob = store.create_user("bob", now=START)
    method_id = store.add_method(alice.id, "totp", "app", b"s", now=START)

    assert store.confirm_method(method_id, bob.id, step=100, now=START) is False
    method = store.get_method(method_id)
    assert method is not None and not method.confirmed


def test_delete_unconfirmed_methods_only(store: Store, alice: UserRecord) -> None:
    store.add_method(alice.id, "totp", "pending 1", b"a", now=START)
    store.add_method(alice.id, "totp", "pending 2", b"b", now=START)
    kept = store.add_method(alice.id, "totp", "confirmed", b"c", now=START, confirmed=True)

    assert store.delete_methods(alice.id, unconfirmed_only=True) == 2

    assert [m.id for m in store.list_methods(alice.id, confirmed_only=False)] == [kept]
    assert store.delete_methods(alice.id) == 1
    assert store.list_methods(alice.id, confirmed_only=False) == []


# -- consume_step ---------------------------------------------------------------------------------------------
@pytest.fixture
def method_id(store: Store, alice: UserRecord) -> int:
    return store.add_method(alice.id, "totp", "app", b"s", now=START, confirmed=True)


def test_consume_step_accepts_a_newer_step_once(store: Store, method_id: int) -> None:
    assert store.consume_step(method_id, 1000, now=START) is True
    assert store.consume_step(method_id, 1000, now=START + 1) is False

    method = store.get_method(method_id)
    assert method is not None
    assert (method.last_step, method.last_used_at) == (1000, START)


@pytest.mark.parametrize(("later_step", "accepted"), [
    pytest.param(999, False, id="older"),
    pytest.param(1000, False, id="same"),
    pytest.param(1001, True, id="newer"),
    pytest.param(5000, True, id="much-newer"),
])
def test_consume_step_after_an_accepted_step(store: Store, method_id: int, later_step: int,
                                             accepted: bool) -> None:
    assert store.consume_step(method_id, 1000, now=START)

    assert store.consume_step(method_id, later_step, now=START + 30) is accepted

    method = store.get_method(method_id)
    assert method is not None
    assert method.last_step == (later_step if accepted else 1000)


def test_consume_step_holds_large_steps(store: Store, method_id: int) -> None:
    big = 2**40  # BigInteger: a step far beyond 32 bits
    assert store.consume_step(method_id, big, now=START)
    assert not store.consume_step(method_id, big, now=START)
    method = store.get_method(method_id)
    assert method is not None and method.last_step == big


def test_consume_step_refuses_an_unconfirmed_method(store: Store, alice: UserRecord) -> None:
    pending = store.add_method(alice.id, "totp", "app", b"s", now=START)
    assert store.consume_step(pending, 1000, now=START) is False


def test_consume_step_after_confirmation_refuses_the_confirming_step(store: Store, alice: UserRecord) -> None:
    pending = store.add_method(alice.id, "totp", "app", b"s", now=START)
    assert store.confirm_method(pending, alice.id, step=1000, now=START)

    assert store.consume_step(pending, 1000, now=START) is False
    assert store.consume_step(pending, 1001, now=START + 30) is True


def test_consume_step_of_an_unknown_method_is_refused(store: Store) -> None:
    assert store.consume_step(999_999, 1000, now=START) is False


# -- failed attempts ------------------------------------------------------------------------------------------
def fail(store: Store, user_id: int, now: float, *, max_failures: int = 3, reset_after: float = 60.0,
         lock_for: float = 300.0) -> tuple[int, float | None]:
    """One failed attempt; by default at most 3 in a 60 s window, then a 300 s lock."""
    return store.record_failure(user_id, now=now, max_failures=max_failures, reset_after=reset_after,
                                lock_for=lock_for)


def _user(store: Store, name: str = "alice") -> UserRecord:
    user = store.get_user(name)
    assert user is not None
    return user


def test_record_failure_counts_and_locks_at_max_failures(store: Store, alice: UserRecord) -> None:
    assert fail(store, alice.id, START) == (1, None)
    assert fail(store, alice.id, START + 10) == (2, None)
    assert not _user(store).locked(START + 10)

    assert fail(store, alice.id, START + 20) == (3, START + 20 + 300)

    user = _user(store)
    assert (user.failed_count, user.consecutive_failures, user.last_failed_at) == (3, 3, START + 20)
    assert user.locked_until == START + 320
    assert user.locked(START + 319)
    assert not user.locked(START + 320)


def test_failures_while_locked_are_not_counted(store: Store, alice: UserRecord) -> None:
    for i in range(3):
        fail(store, alice.id, START + i)
    lock = _user(store).locked_until

    count, locked_until = fail(store, alice.id, START + 50)

    assert (count, locked_until) == (3, lock)
    assert _user(store).consecutive_failures == 3
    # Once the lock has passed, counting resumes (a new window: the last failure is long ago).
    assert fail(store, alice.id, (lock or 0) + 1) == (1, lock)


@pytest.mark.parametrize(("gap", "count"), [
    pytest.param(59.0, 2, id="inside-window"),
    pytest.param(60.0, 2, id="at-the-edge"),
    pytest.param(60.5, 1, id="just-after"),
    pytest.param(3600.0, 1, id="long-after"),
])
def test_the_window_starts_again_after_reset_after(store: Store, alice: UserRecord, gap: float,
                                                   count: int) -> None:
    fail(store, alice.id, START)

    assert fail(store, alice.id, START + gap) == (count, None)

    user = _user(store)
    assert user.failed_count == count
    assert user.consecutive_failures == 2  # never reset by time


def test_a_failure_during_the_lock_keeps_the_lock(store: Store, alice: UserRecord) -> None:
    for i in range(3):
        fail(store, alice.id, START + i)
    lock = _user(store).locked_until

    count, locked_until = fail(store, alice.id, START + 100)  # past the 60 s window, still inside the lock

    assert (count, locked_until) == (3, lock)


def test_the_consecutive_limit_locks_for_good_even_when_the_window_keeps_resetting(
        store: Store, alice: UserRecord) -> None:
    now = START
    for i in range(1, HARD_FAILURE_LIMIT):
        now += 61  # every failure starts a new window: the windowed limit is never reached
        assert fail(store, alice.id, now, max_failures=10) == (1, None), f"failure {i}"
    user = _user(store)
    assert user.consecutive_failures == HARD_FAILURE_LIMIT - 1
    assert not user.locked(now)

    now += 61
    count, locked_until = fail(store, alice.id, now, max_failures=10)

    assert (count, locked_until) == (1, LOCKED_FOR_GOOD)
    user = _user(store)
    assert user.consecutive_failures == HARD_FAILURE_LIMIT
    assert user.locked_until == LOCKED_FOR_GOOD
    assert user.locked(now + 10 * 365 * 86400)
    # A later window never shortens a lock for good.
    assert fail(store, alice.id, now + 10_000, max_failures=10) == (1, LOCKED_FOR_GOOD)


def test_record_failure_for_an_unknown_user(store: Store) -> None:
    assert fail(store, 999_999, START) == (0, None)


def test_reset_failures_clears_counters_and_lock(store: Store, alice: UserRecord) -> None:
    bob = store.create_user("bob", now=START)
    for i in range(3):
        fail(store, alice.id, START + i)
        fail(store, bob.id, START + i)

    store.reset_failures(alice.id)

    user = _user(store)
    assert (user.failed_count, user.consecutive_failures, user.last_failed_at, user.locked_until) == (
        0, 0, None, None)
    assert not user.locked(START)
    assert _user(store, "bob").locked(START + 10)  # other users are untouched
    store.reset_failures(alice.id)  # nothing to reset: harmless
    assert fail(store, alice.id, START + 10) == (1, None)


# -- revocations ----------------------------------------------------------------------------------------------
def test_revocations_are_read_incrementally(store: Store) -> None:
    assert store.last_revocation_id() == 0
    assert store.revocations_since(0, newer_than=0) == []

    store.add_revocation("alice", now=START)
    store.add_revocation("bob", now=START + 1, session_id="sid-1")
    first = store.revocations_since(0, newer_than=0)
    last_seen = store.last_revocation_id()
    store.add_revocation("carol", now=START + 2)

    assert [(r.username, r.session_id, r.not_before) for r in first] == [
        ("alice", None, START), ("bob", "sid-1", START + 1)]
    assert last_seen == first[-1].id
    newer = store.revocations_since(last_seen, newer_than=0)
    assert [(r.username, r.session_id, r.not_before) for r in newer] == [("carol", None, START + 2)]
    assert newer[0].id > last_seen
    assert store.last_revocation_id() == newer[0].id
    assert store.revocations_since(newer[0].id, newer_than=0) == []


def test_revocations_since_skips_old_rows(store: Store) -> None:
    store.add_revocation("old", now=START - 86_400)
    store.add_revocation("new", now=START)

    assert [r.username for r in store.revocations_since(0, newer_than=START - 3600)] == ["new"]


def test_prune_revocations(store: Store) -> None:
    store.add_revocation("a", now=START - 200)
    store.add_revocation("b", now=START - 100)
    store.add_revocation("c", now=START)

    assert store.prune_revocations(older_than=START - 50) == 2

    assert [r.username for r in store.revocations_since(0, newer_than=0)] == ["c"]
    assert store.prune_revocations(older_than=START - 50) == 0


# -- audit ----------------------------------------------------------------------------------------------------
def test_audit_write_and_list(store: Store) -> None:
    store.write_audit(at=START, actor="cli:root", username="alice", event="user_add", result="success",
                      detail={"state": "enabled", "admin": False})
    store.write_audit(at=START + 1, actor="alice", username="alice", event="primary", result="failure",
                      client_ip="192.0.2.7", user_agent="Mozilla/5.0", detail={"count": 1})
    store.write_audit(at=START + 2, actor="anonymous", username=None, event="primary", result="failure")

    rows = store.list_audit()

    assert [(r.event, r.result, r.username) for r in rows] == [
        ("primary", "failure", None), ("primary", "failure", "alice"), ("user_add", "success", "alice")]
    newest, middle, oldest = rows
    assert newest.id > middle.id > oldest.id
    assert (newest.actor, newest.detail, newest.client_ip, newest.user_agent) == ("anonymous", {}, None, None)
    assert (middle.at, middle.client_ip, middle.user_agent, middle.detail) == (
        START + 1, "192.0.2.7", "Mozilla/5.0", {"count": 1})
    assert (oldest.actor, oldest.detail) == ("cli:root", {"admin": False, "state": "enabled"})


def test_audit_list_filters(store: Store) -> None:
    for i in range(5):
        store.write_audit(at=START + i, actor="x", username="alice", event=f"e{i}", result="success")
        store.write_audit(at=START + i, actor="x", username="bob", event=f"e{i}", result="success")

    assert [r.event for r in store.list_audit(username="alice")] == ["e4", "e3", "e2", "e1", "e0"]
    assert {r.username for r in store.list_audit(username="bob")} == {"bob"}
    assert [r.event for r in store.list_audit(username="alice", limit=2)] == ["e4", "e3"]
    assert len(store.list_audit(limit=3)) == 3
    assert len(store.list_audit()) == 10
    assert store.list_audit(username="nobody") == []


def test_audit_truncates_long_actor_and_user_agent(store: Store) -> None:
    store.write_audit(at=START, actor="a" * 500, username=None, event="primary", result="failure",
                      user_agent="u" * 1000)

    (row,) = store.list_audit()
    assert row.actor == "a" * 128
    assert row.user_agent == "u" * 300


# -- secrets at rest ------------------------------------------------------------------------------------------
@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime(make_config(database_url), clock=Clock(), password_hasher=FAST_HASHER)
    try:
        rt.store.upgrade()
        yield rt
    finally:
        rt.close()


def test_totp_seeds_are_stored_encrypted(runtime: Runtime) -> None:
    user = runtime.accounts.add("alice", actor="test", password="correct horse battery")
    view = runtime.signin.enroll_begin(user, "totp", Client("192.0.2.1", "pytest"), START)
    seed = view.fields["secret"].replace(" ", "")
    assert len(seed) == 32

    with runtime.store.engine.connect() as conn:
        raw = conn.execute(select(methods.c.secret).where(methods.c.id == view.method_id)).scalar_one()

    stored = bytes(raw)
    assert seed.encode() not in stored
    assert seed.lower().encode() not in stored
    assert view.fields["secret"].encode() not in stored
    assert runtime.box.decrypt(stored) == seed
    method = runtime.store.get_method(view.method_id)
    assert method is not None and method.secret is not None
    assert runtime.box.decrypt(method.secret) == seed
    assert all(seed not in str(row.detail) for row in runtime.store.list_audit())


def test_client_failures_count_lock_and_window(store: Store) -> None:
    kw = {"max_failures": 3, "reset_after": 60.0, "lock_for": 300.0}
    assert store.record_client_failure("192.0.2.7", now=START, **kw) == (1, None)
    assert store.record_client_failure("192.0.2.7", now=START + 1, **kw) == (2, None)
    assert store.record_client_failure("192.0.2.7", now=START + 2, **kw) == (3, START + 302)
    assert store.client_locked_until("192.0.2.7", START + 3) == START + 302
    assert store.client_locked_until("192.0.2.8", START + 3) is None  # another address is not affected
    assert store.record_client_failure("192.0.2.7", now=START + 10, **kw) == (3, START + 302)  # not counted
    assert store.client_locked_until("192.0.2.7", START + 303) is None  # the lock passes
    assert store.record_client_failure("192.0.2.7", now=START + 400, **kw)[0] == 1  # a new window


def test_concurrent_client_failures_stop_at_the_limit(store: Store) -> None:
    import threading

    barrier = threading.Barrier(20)

    def attempt() -> None:
        barrier.wait()
        store.record_client_failure("198.51.100.1", now=START, max_failures=5, reset_after=60, lock_for=300)

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.record_client_failure("198.51.100.1", now=START, max_failures=5, reset_after=60,
                                       lock_for=300) == (5, START + 300)


def test_count_methods_in_one_query(store: Store, alice: UserRecord) -> None:
    store.add_method(alice.id, "totp", "phone", b"x", now=START, confirmed=True)
    store.add_method(alice.id, "totp", "tablet", b"y", now=START, confirmed=True)
    store.add_method(alice.id, "totp", "pending", b"z", now=START)
    assert store.count_methods() == {alice.id: 2}


def test_prune_expired_deletes_only_rows_expired_before_the_cutoff(store: Store) -> None:
    """Housekeeping of one-time rows: codes and calls that expired before the cut-off go; live ones, and ones that
    expired after it, stay (and still answer as before)."""
    user = store.create_user("alice", now=START)
    method = store.add_method(user.id, "sms", "Mobile", None, now=START)
    old_code = store.add_challenge(user.id, method, "a1", "h1", now=START - 200, expires_at=START - 100)
    live_code = store.add_challenge(user.id, method, "a2", "h2", now=START, expires_at=START + 300)
    store.add_call(user.id, method, "a1", "t" * 64, now=START - 200, expires_at=START - 100)
    store.add_call(user.id, method, "a2", "u" * 64, now=START, expires_at=START + 300)
    assert store.prune_expired(START - 50) == 2
    assert store.prune_expired(START - 50) == 0
    assert [c[0] for c in store.live_challenges(method, "a2", now=START)] == [live_code]
    assert store.call_of_attempt(method, "a2") is not None and store.call_of_attempt(method, "a1") is None
    assert old_code != live_code
