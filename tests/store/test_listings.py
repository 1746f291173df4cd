"""Paged, filtered listings in the store (what `mfa-admin ... list` and the admin portal read): users by search,
state, group, method, blocked and locked, with keyset pagination; audit events by user, event, result and time;
audit pruning in batches. Every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations


import pytest
from sqlalchemy import update

from mfa_middleware.listing import paged
from mfa_middleware.store import Store
from mfa_middleware.store.schema import users
from mfa_middleware.store.sql import UserFilter
from tests.support.mfa import START

NOW = START


@pytest.fixture
def people(store: Store) -> Store:
    alice = store.create_user("alice", now=NOW, email="alice@example.org", display_name="Alice Liddell",
                              groups=("finance", "admins"), state="enforced")
    store.create_user("bob", now=NOW, email="BOB@Example.org", groups=("fin",), state="enabled")
    carol = store.create_user("carol", now=NOW, display_name="Carol 100%_sure", groups=("Finance",),
                              state="disabled")
    store.create_user("dave", now=NOW, groups=(), state="enabled", is_admin=True)
    store.create_user("émile", now=NOW, display_name="Émile Zola", state="enforced")
    store.add_method(alice.id, "totp", "Phone", b"x", now=NOW, confirmed=True)
    store.add_method(alice.id, "push", "Phone", None, now=NOW, confirmed=True)
    store.add_method(carol.id, "push", "Tablet", None, now=NOW, confirmed=False)  # not confirmed: not counted
    store.set_block(carol.id, now=NOW, until=NOW + 3600, reason="fraud")
    store._run(lambda c: c.execute(update(users).where(users.c.username == "bob").values(locked_until=NOW + 60)))
    store.create_user("erin", now=NOW)
    store._run(lambda c: c.execute(update(users).where(users.c.username == "erin").values(
        locked_until=NOW - 1, blocked_until=NOW - 1)))  # both over: neither locked nor blocked now
    return store


def names(store: Store, filters: UserFilter, **kw: object) -> list[str]:
    return [u.username for u, _ in store.page_users(filters, now=NOW, **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("filters", "expected"), [
    pytest.param(UserFilter(), ["alice", "bob", "carol", "dave", "erin", "émile"], id="everyone"),
    pytest.param(UserFilter(search="ALI"), ["alice"], id="search-username-any-case"),
    pytest.param(UserFilter(search="example.org"), ["alice", "bob"], id="search-email"),
    pytest.param(UserFilter(search="zola"), ["émile"], id="search-display-name"),
    pytest.param(UserFilter(search="%"), ["carol"], id="percent-is-literal"),
    pytest.param(UserFilter(search="0%_"), ["carol"], id="underscore-is-literal"),
    pytest.param(UserFilter(search="_"), ["carol"], id="lone-underscore-is-literal"),
    pytest.param(UserFilter(search="nobody"), [], id="search-no-match"),
    pytest.param(UserFilter(state="enforced"), ["alice", "émile"], id="state"),
    pytest.param(UserFilter(group="finance"), ["alice", "carol"], id="group-whole-name-any-case"),
    pytest.param(UserFilter(group="fin"), ["bob"], id="group-never-a-prefix"),
    pytest.param(UserFilter(group="finance,admins"), [], id="group-with-comma-matches-nothing"),
    pytest.param(UserFilter(group="%"), [], id="group-wildcard-literal"),
    pytest.param(UserFilter(method="push"), ["alice"], id="method-confirmed-only"),
    pytest.param(UserFilter(method="sms"), [], id="method-none"),
    pytest.param(UserFilter(blocked=True), ["carol"], id="blocked-now"),
    pytest.param(UserFilter(blocked=False), ["alice", "bob", "dave", "erin", "émile"], id="not-blocked"),
    pytest.param(UserFilter(locked=True), ["bob"], id="locked-now"),
    pytest.param(UserFilter(locked=False, state="enabled"), ["dave", "erin"], id="not-locked-and-state"),
    pytest.param(UserFilter(admin=True), ["dave"], id="admins"),
])
def test_user_filters(people: Store, filters: UserFilter, expected: list[str]) -> None:
    assert names(people, filters) == expected
    assert people.count_users_matching(filters, now=NOW) == len(expected)


def test_method_counts_come_with_the_page(people: Store) -> None:
    counts = {u.username: n for u, n in people.page_users(UserFilter(), now=NOW)}
    assert counts == {"alice": 2, "bob": 0, "carol": 0, "dave": 0, "erin": 0, "émile": 0}


@pytest.mark.parametrize("size", [1, 2, 4, 100])
def test_keyset_pages_cover_everyone_once(people: Store, size: int) -> None:
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        page = names(people, UserFilter(), after=after, limit=size)
        if not page:
            break
        pages.append(page)
        after = page[-1]
    flat = [n for p in pages for n in p]
    assert flat == names(people, UserFilter()) and len(set(flat)) == len(flat)
    assert all(len(p) <= size for p in pages)


def test_paged_streams_in_batches_and_stops_at_the_limit(people: Store) -> None:
    calls: list[tuple[str | None, int]] = []

    def fetch(after: str | None, n: int) -> list[str]:
        calls.append((after, n))
        return names(people, UserFilter(), after=after, limit=n)

    assert list(paged(fetch, lambda name: name, batch=2)) == names(people, UserFilter())
    assert calls == [(None, 2), ("bob", 2), ("dave", 2), ("émile", 2)]
    calls.clear()
    assert list(paged(fetch, lambda name: name, batch=2, limit=3)) == ["alice", "bob", "carol"]
    assert calls == [(None, 2), ("bob", 1)]


def test_after_an_unknown_or_odd_name(people: Store) -> None:
    assert names(people, UserFilter(), after="b") == ["bob", "carol", "dave", "erin", "émile"]
    assert names(people, UserFilter(), after="\U0010ffff" * 3) == []
    assert names(people, UserFilter(), after="") == names(people, UserFilter())


def test_audit_filters_and_keyset(store: Store) -> None:
    for i in range(30):
        store.write_audit(at=NOW + i, actor="x", username="alice" if i % 2 else "bob",
                        event="signin" if i % 3 else "basic", result="success" if i % 5 else "failure",
                        client_ip=None, user_agent=None, detail={"n": i})

    def ns(**kw: object) -> list[int]:
        return [e.detail["n"] for e in store.list_audit(limit=100, **kw)]  # type: ignore[arg-type]

    assert ns() == list(range(29, -1, -1))
    assert ns(username="alice") == [i for i in range(29, -1, -1) if i % 2]
    assert ns(event="basic") == [i for i in range(29, -1, -1) if i % 3 == 0]
    assert ns(result="failure", event="signin") == [i for i in range(29, -1, -1) if i % 5 == 0 and i % 3]
    assert ns(since=NOW + 25) == [29, 28, 27, 26, 25]
    assert ns(until=NOW + 3) == [2, 1, 0]
    newest = store.list_audit(limit=10)
    assert [e.detail["n"] for e in store.list_audit(limit=10, before_id=newest[-1].id)] == list(range(19, 9, -1))


def test_audit_prune_in_batches(store: Store) -> None:
    for i in range(25):
        store.write_audit(at=NOW + i, actor="x", username="u", event="signin", result="success", client_ip=None,
                        user_agent=None, detail={"n": i})
    assert store.count_audit_before(NOW + 20) == 20
    assert store.prune_audit(before=NOW + 20, batch=8) == 8
    assert store.prune_audit(before=NOW + 20, batch=8) == 8
    assert store.prune_audit(before=NOW + 20, batch=8) == 4
    assert store.prune_audit(before=NOW + 20, batch=8) == 0
    assert sorted(e.detail["n"] for e in store.list_audit(limit=100)) == list(range(20, 25))
