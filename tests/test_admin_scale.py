"""The admin user list at 100,000 users: one page costs a bounded number of SQL statements, whatever the page number
and the filter (keyset pagination; the method counts come in the page's own query)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import event, insert

from mfa_middleware import MFAMiddleware
from mfa_middleware.store.schema import users
from tests.admin_support import PASSWORD, Admin
from tests.support.mfa import Clock, make_middleware

SCALE = 100_000
#: session check and admin record, the page, the count (and a revocation refresh when one is due)
MAX_STATEMENTS = 6


def seed(mw: MFAMiddleware, count: int, now: float) -> None:
    """``count`` users in one bulk insert: every tenth in group ``ops``, every seventh disabled, every 1000th locked."""
    rows = [dict(username=f"u{i:06d}", email=f"u{i}@example.org", display_name=f"User {i}",
                 groups="staff,ops" if i % 10 == 0 else "staff", is_admin=False,
                 state="disabled" if i % 7 == 0 else "enabled", password_hash=None, failed_count=0,
                 consecutive_failures=0, created_at=now, updated_at=now,
                 locked_until=now + 3600 if i % 1000 == 0 else None) for i in range(count)]
    mw.runtime.store._run(lambda c: c.execute(insert(users), rows))


@pytest.fixture(scope="module")
def crowd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MFAMiddleware, Admin]]:
    clock = Clock()
    url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'mfa.db'}"
    mw = make_middleware(url, clock)
    mw.runtime.accounts.add("root", actor="test", password=PASSWORD, is_admin=True)
    seed(mw, SCALE, clock.now)
    admin = Admin(mw, clock)
    mw.runtime.revocations.wait_idle()  # the hourly pruning started by the sign-in runs in the background
    yield mw, admin
    mw.runtime.close()


class Statements:
    def __init__(self, mw: MFAMiddleware) -> None:
        self.engine = mw.runtime.store.engine
        self.seen: list[str] = []

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self.count)
        return self

    def count(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        self.seen.append(statement)

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self.count)


@pytest.mark.parametrize("query", [
    pytest.param("", id="first-page"),
    pytest.param("after=u050000", id="middle-page"),
    pytest.param("last=1", id="last-page"),
    pytest.param("before=u099950", id="previous-of-last"),
    pytest.param("q=u0999", id="search"),
    pytest.param("q=example.org&after=u090000", id="search-deep"),
    pytest.param("group=ops&state=enabled&after=u070000", id="group-and-state-deep"),
    pytest.param("locked=yes&last=1", id="locked-last"),
    pytest.param("method=totp", id="method"),
    pytest.param("blocked=no&after=u099990", id="near-the-end"),
])
def test_one_page_costs_a_bounded_number_of_statements(crowd: tuple[MFAMiddleware, Admin], query: str) -> None:
    mw, admin = crowd
    with Statements(mw) as statements:
        page = admin.get("?" + query)
    assert page.status_code == 200, page.text
    shown = re.findall(r'name="user" value="([^"]+)"', page.text)
    assert shown == sorted(shown)
    assert len(statements.seen) <= MAX_STATEMENTS, statements.seen
    # Every read of user rows is bounded: the page (LIMIT 51) or one user by name (the administrator).
    reads = [s for s in statements.seen if "FROM mfa_users" in s and not s.lower().startswith("select count(")]
    assert all("LIMIT" in s or "WHERE mfa_users.username = ?" in s for s in reads), reads
    assert sum("LIMIT" in s for s in reads) == 1, reads


def test_the_count_and_the_ends(crowd: tuple[MFAMiddleware, Admin]) -> None:
    _, admin = crowd
    first = admin.get("")
    assert "100,001 users." in first.text
    last = admin.get("?last=1")
    assert re.findall(r'name="user" value="([^"]+)"', last.text)[-1] == "u099999"
    assert "Previous" in last.text and 'rel="next"' not in last.text
    search = admin.get("?q=u09999")
    assert "10 users match." in search.text
