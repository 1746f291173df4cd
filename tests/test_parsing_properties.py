"""Properties (issue 12) of cookie parsing and HTTP Basic parsing: whatever the header holds, never a 500, and never
a pass the rules do not allow. Through the WSGI adapter, the ASGI adapter and forward auth.

- Cookie headers are built from the tokens that matter (our cookie names in several spellings, alice's valid
  session, its mutations, quotes, separators) and arbitrary text. A request passes only when the first
  ``mfa_session`` value is a session our keys signed, for ``alice``; ``/admin/*`` (admins only) and
  ``/blocked/*`` (denied) never pass.
- Authorization headers are alice's valid ``Basic`` app-password header, its mutations (scheme case, spaces,
  padding, base64url, appended bytes, other user-ids) and arbitrary text. A request passes only when
  :func:`~mfa_middleware.core.basic.parse_basic` reads alice's user-id and her exact app password.

Derandomized, with a fixed number of examples, so the run costs the same every time.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mfa_middleware.core.basic import parse_basic
from mfa_middleware.primary.usernames import canonical_username
from mfa_middleware.web.cookies import read_cookie
from tests.support.adapters import VIAS, Trio
from tests.support.mfa import DEFAULT_RULES
from tests.support.paths import session_cookie

SETTINGS = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TARGETS = (b"/docs/x", b"/admin/x", b"/blocked/x")
BASIC_TARGETS = (b"/dav/x", b"/dav/admin/x")


@dataclass
class World:
    trio: Trio
    session: str  # alice's valid session cookie value
    app_password: str  # alice's app password
    basic: str  # her valid Authorization header


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    trio = Trio(f"sqlite:///{tmp_path_factory.mktemp('props') / 'mfa.db'}",
                rules=[{"path": "/dav/admin/*", "policy": "two_factor", "groups": ["admins"], "basic": True},
                       {"path": "/dav/*", "policy": "two_factor", "basic": True}, *DEFAULT_RULES],
                lockout={"max_failures": 100, "max_failures_per_client": 0})
    user = trio.runtime.accounts.add("alice", actor="test", password="primary password", state="enforced")
    _, app_password = trio.runtime.app_passwords.create(user, "laptop", actor="test")
    basic = "Basic " + base64.b64encode(f"alice:{app_password}".encode()).decode("ascii")
    yield World(trio, session_cookie(trio.runtime).partition("=")[2], app_password, basic)
    trio.close()


# -- cookies ---------------------------------------------------------------------------------------------------------

def _mutate(value: str, index: int, char: str) -> str:
    if not value:
        return char
    i = index % len(value)
    return value[:i] + char + value[i + 1:]


@st.composite
def cookie_headers(draw: st.DrawFn, valid: str) -> str:
    names = st.sampled_from(["mfa_session", "MFA_SESSION", " mfa_session", "mfa_session ", "__Host-mfa_session",
                             "mfa_session_pending", "mfa_session_anon", "mfa", "x", ""])
    values = st.one_of(
        st.just(valid), st.just(f'"{valid}"'), st.just(valid + "x"), st.just(valid[:-1]), st.just(""),
        st.builds(_mutate, st.just(valid), st.integers(0, 500), st.sampled_from(list("A_-.0=\"; \\"))),
        st.text(max_size=40))
    pairs = draw(st.lists(st.tuples(names, st.sampled_from(["=", "", "==", " = "]), values), max_size=5))
    separators = st.sampled_from(["; ", ";", ", ", " ; ", ";;"])
    out = ""
    for i, (name, eq, value) in enumerate(pairs):
        out += (draw(separators) if i else "") + name + eq + value
    return out


def latin1(text: str) -> str:
    """Header values travel as bytes: keep what latin-1 can carry (anything else cannot arrive)."""
    return text.encode("latin-1", "replace").decode("latin-1")


def test_the_valid_cookie_passes_everywhere(world: World) -> None:
    """Control for the property below: the oracle's 'may pass' case happens."""
    for via in VIAS:
        outcome = world.trio.send(via, b"/docs/x", headers={"Cookie": f"mfa_session={world.session}"})
        assert outcome.reached and outcome.user == "alice", via


@SETTINGS
@given(data=st.data())
@example(data=None)
def test_no_cookie_header_is_a_500_or_a_pass_the_rules_refuse(world: World, data: st.DataObject | None) -> None:
    header = f"mfa_session=x; mfa_session={world.session}" if data is None else \
        latin1(data.draw(cookie_headers(world.session), label="cookie"))
    first = read_cookie(header, "mfa_session")
    signed = first is not None and world.trio.runtime.codec.load_session(first) is not None
    for via in VIAS:
        for target in TARGETS:
            outcome = world.trio.send(via, target, headers={"Cookie": header, "Accept": "text/html"})
            assert outcome.status < 500, (via, target, header, outcome.status)
            if outcome.reached:
                assert target == b"/docs/x" and signed and outcome.user == "alice", (via, target, header)


# -- HTTP Basic ------------------------------------------------------------------------------------------------------

@st.composite
def authorization_headers(draw: st.DrawFn, valid: str, app_password: str) -> str:
    token = valid.partition(" ")[2]
    user_ids = st.sampled_from(["alice", "ALICE", " alice", "alice ", "alice\x00", "\u212alice", "admin", "",
                                "alice:x", "CONTOSO\\alice", "alice@contoso.example"])
    passwords = st.one_of(st.just(app_password), st.just(app_password + " "), st.just(app_password[:-1]),
                          st.just(app_password.upper()), st.just(app_password.replace(" ", "")),
                          st.just("primary password"), st.text(max_size=20))
    encoded = st.builds(lambda u, p: base64.b64encode(f"{u}:{p}".encode("utf-8", "surrogatepass")).decode(),
                        user_ids, passwords)
    tokens = st.one_of(
        st.just(token), encoded, st.just(token.rstrip("=")), st.just(token + "="), st.just(token + "\x00"),
        st.just(token.replace("+", "-").replace("/", "_")), st.just(" " + token),
        st.builds(_mutate, st.just(token), st.integers(0, 200), st.sampled_from(list("A/+=_-. \t"))),
        st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=40))
    scheme: str = draw(st.sampled_from(["Basic", "basic", "BASIC", "Basic ", "Bearer", "Basic\t", "Digest", ""]))
    space: str = draw(st.sampled_from([" ", "  ", ""]))
    body: str = draw(tokens)
    return scheme + space + body


def test_the_valid_app_password_passes_everywhere(world: World) -> None:
    for via in VIAS:
        outcome = world.trio.send(via, b"/dav/x", headers={"Authorization": world.basic})
        assert outcome.reached and outcome.user == "alice", (via, outcome.status)
        assert not world.trio.send(via, b"/dav/admin/x", headers={"Authorization": world.basic}).reached


@SETTINGS
@given(data=st.data())
def test_no_authorization_header_is_a_500_or_a_pass_the_rules_refuse(world: World, data: st.DataObject) -> None:
    header = latin1(data.draw(authorization_headers(world.basic, world.app_password), label="authorization"))
    creds = parse_basic(header)
    allowed = creds is not None and canonical_username(creds.username) == "alice" \
        and creds.password == world.app_password
    for via in VIAS:
        for target in BASIC_TARGETS:
            outcome = world.trio.send(via, target, headers={"Authorization": header})
            assert outcome.status < 500, (via, target, header, outcome.status)
            if outcome.reached:
                assert target == b"/dav/x" and allowed and outcome.user == "alice", (via, target, header)


@SETTINGS
@given(header=st.text(max_size=200))
def test_parse_basic_never_raises_and_returns_clean_values(header: str) -> None:
    creds = parse_basic(header)
    if creds is not None:
        assert creds.username and creds.password and ":" not in creds.username
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in creds.username + creds.password)


@SETTINGS
@given(header=st.text(max_size=200), name=st.sampled_from(["mfa_session", "__Host-mfa_session", "x"]))
def test_read_cookie_never_raises_and_only_returns_that_name(header: str, name: str) -> None:
    value = read_cookie(header, name)
    if value is not None:
        assert any(p.strip().partition("=")[0] == name for p in header.split(";"))
