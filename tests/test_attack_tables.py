"""Attack tables (issue 12): one row per attack, naming its source advisory where there is one.

Every row runs through the WSGI adapter, the ASGI adapter and forward auth (``tests.support.adapters``), and
asserts the two things that matter: no pass where the rules say otherwise, and no 500. The rules are
``tests.support.mfa.DEFAULT_RULES`` (``/public/*`` bypass, ``/admin/*`` admins only, ``/blocked/*`` denied,
everything else two factors); ``alice`` is signed in with two factors and is not an admin.

Tables: path normalisation (the issue 7 corpus in ``tests.support.paths`` plus advisories), ``next=`` targets,
cookies, spoofed headers, usernames, oversized bodies and headers. IIS forms are in ``test_iis_folding.py``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

import pytest
from itsdangerous import URLSafeSerializer

from mfa_middleware.core.tokens import SALT_SESSION, Session
from tests.support.adapters import VIAS, Outcome, Trio, Via
from tests.support.mfa import DEFAULT_RULES, csrf_of
from tests.support.paths import DOUBLE_ENCODED_CASES, NON_CANONICAL_CASES, readings, session_cookie

STRICTER = ("/admin", "/blocked")
PASSWORD = "correct horse battery"


def under_stricter_rule(path: str) -> bool:
    return any(r.lower() == s or r.lower().startswith(s + "/") for r in readings(path) for s in STRICTER)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    trio = Trio(f"sqlite:///{tmp_path_factory.mktemp('attacks') / 'mfa.db'}",
                rules=[{"path": "/dav/*", "policy": "two_factor", "basic": True}, *DEFAULT_RULES],
                metrics={"enabled": True, "path": "/_mfa/metrics"})
    yield trio
    trio.close()


def assert_no_500(outcome: Outcome, what: object) -> None:
    assert outcome.status < 500 or outcome.status == 503, (what, outcome.status, outcome.text[:300])
    assert outcome.status != 503, (what, "the store is up: 503 means something broke")


# -- path normalisation --------------------------------------------------------------------------------------------

#: (target, source); the issue 7 corpus (sources in tests/support/paths.py) plus these
PATH_ROWS: dict[str, tuple[bytes, str]] = {
    **{f"issue7-{k}": (v, "issue 7 corpus") for k, v in NON_CANONICAL_CASES.items()},
    **{f"issue7-double-{k}": (v, "CVE-2001-0333 (double decoding)") for k, v in DOUBLE_ENCODED_CASES.items()},
    "tomcat-dotdot-semicolon": (b"/public/..;/admin/x", "Orange Tsai, Breaking Parser Logic (Black Hat 2018)"),
    "apache-encoded-dot": (b"/public/.%2e/admin/x", "CVE-2021-41773 (Apache .%2e traversal)"),
    "apache-double-encoded-dot": (b"/public/.%%32%65/admin/x", "CVE-2021-42013 (Apache %%32%65)"),
    "iis-unicode-traversal": (b"/public/..%c0%af../admin/x", "CVE-2000-0884 (IIS overlong UTF-8)"),
    "iis-double-decode": (b"/public/..%255c../admin/x", "CVE-2001-0333 (IIS double decode)"),
    "spring-trailing-slash-case": (b"/ADMIN/", "CVE-2016-5007 (Spring case and suffix mismatch)"),
    "nginx-merge-slashes": (b"//admin/x", "nginx merge_slashes off (path confusion)"),
    "nginx-alias-traversal": (b"/public../admin/x", "nginx alias off-by-slash (Orange Tsai 2018)"),
    "encoded-nul-truncation": (b"/admin/x%00.css", "CWE-158 (NUL byte truncation)"),
    "path-param-hides-segment": (b"/admin;/x", "CVE-2020-1957 (Apache Shiro ;/ bypass)"),
    "shiro-encoded-semicolon": (b"/public/%3b/../admin/x", "CVE-2020-11989 (Apache Shiro %3b)"),
    "fullwidth-dotdot": (b"/public/%EF%BC%8E%EF%BC%8E/admin", "NFKC compatibility folding"),
    "utf8-bom": (b"/%EF%BB%BFadmin/x", "invisible prefix (format character)"),
    "case-only": (b"/Admin/x", "case-insensitive routing (Flask strict_slashes off, IIS)"),
    "dotless-i-takes-bypass": (b"/publ%C4%B1c/x", "Unicode case folding: U+0131 folds to i (CWE-178)"),
    "dotted-capital-i-takes-bypass": (b"/PUBL%C4%B0C/x", "Unicode case folding: U+0130 folds to i (CWE-178)"),
    "long-s": (b"/admin/%C5%BF/../x", "Unicode case folding: U+017F folds to s (CWE-178)"),
    "kelvin-sign": (b"/bloc%E2%84%AAed/x", "Unicode case folding: U+212A folds to k (CWE-178)"),
}


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("target", [pytest.param(t, id=k) for k, (t, _) in PATH_ROWS.items()])
def test_path_normalisation(trio: Trio, via: Via, target: bytes) -> None:
    for headers in ({}, {"Cookie": session_cookie(trio.runtime)}):
        outcome = trio.send(via, target, headers=headers)
        assert_no_500(outcome, target)
        if outcome.reached and via != "forward":
            assert outcome.path is not None
            assert not under_stricter_rule(outcome.path), (target, outcome.path)
            assert headers or any(r.lower().startswith("/public") for r in readings(outcome.path)), target
        elif outcome.reached:
            raw = unquote(target.decode("latin-1"), errors="replace")
            assert not under_stricter_rule(raw), (target, outcome.status)
            assert headers, target


# -- next= targets ---------------------------------------------------------------------------------------------

NEXT_ROWS: dict[str, tuple[str, str]] = {
    "scheme-relative": ("//evil.example/", "CVE-2018-14574 (Django CommonMiddleware //)"),
    "triple-slash": ("///evil.example/", "CWE-601"),
    "slash-backslash": ("/\\evil.example", "CVE-2021-32618 (Flask-Security-Too /\\)"),
    "backslash-backslash": ("\\\\evil.example", "CWE-601 (browsers read \\ as /)"),
    "slash-backslash-slash": ("/\\/evil.example", "CWE-601"),
    "scheme-no-slashes": ("https:evil.example", "CVE-2017-7233 (Django is_safe_url https:)"),
    "absolute": ("https://evil.example/", "CWE-601"),
    "javascript": ("javascript:alert(1)", "CVE-2015-2317 (Django is_safe_url javascript:)"),
    "leading-newline-javascript": ("\njavascript:alert(1)", "CVE-2015-2317"),
    "encoded-slashes": ("%2f%2fevil.example", "CWE-601 (decoded again)"),
    "slash-encoded-slash": ("/%2f/evil.example", "CWE-601 (decoded again)"),
    "slash-encoded-backslash": ("/%5cevil.example", "CWE-601 (decoded again)"),
    "tab-inside": ("/\t/evil.example", "WHATWG URL strips tab and newline"),
    "newline-inside": ("/\n/evil.example", "WHATWG URL strips tab and newline"),
    "cr-inside": ("/\r/evil.example", "WHATWG URL strips tab and newline"),
    "encoded-tab": ("/%09/evil.example", "WHATWG URL strips tab and newline (decoded again)"),
    "leading-space": (" //evil.example", "CVE-2015-2317 (leading whitespace)"),
    "userinfo": ("//localhost@evil.example", "CVE-2016-2512 (Django is_safe_url userinfo)"),
    "userinfo-absolute": ("https://localhost\\@evil.example", "CVE-2016-2512"),
    "fullwidth-solidus": ("\uff0f\uff0fevil.example", "Unicode lookalike of //"),
    "slash-fullwidth-solidus": ("/\uff0fevil.example", "Unicode lookalike of //"),
    "ideographic-full-stop-host": ("//evil\u3002example", "IDNA maps U+3002 to ."),
    "division-slash": ("/\u2215evil.example", "Unicode lookalike of /"),
    "data-url": ("data:text/html,<script>alert(1)</script>", "CWE-601"),
    "dot-segments-to-double-slash": ("/x/..//evil.example", "CWE-601 (dot segments)"),
    "very-long": ("/" + "a" * 10_000, "CWE-400"),
}


def lands_here(location: str) -> bool:
    """Whether a browser (and an app that decodes the target again) stays on our host."""
    for candidate in (location, unquote(location)):
        cleaned = re.sub(r"[\t\n\r]", "", candidate).replace("\\", "/").strip()
        parts = urlsplit(urljoin("http://localhost/_mfa/login", cleaned))
        if parts.scheme != "http" or parts.netloc != "localhost":
            return False
    return True


@pytest.fixture(scope="module")
def exempt_user(trio: Trio) -> str:
    trio.runtime.accounts.add("carol", actor="test", password=PASSWORD, state="disabled")  # one factor suffices
    return "carol"


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("target", [pytest.param(t, id=k) for k, (t, _) in NEXT_ROWS.items()])
def test_next_targets_stay_on_this_site(trio: Trio, exempt_user: str, via: Via, target: str) -> None:
    query = b"/_mfa/login?next=" + quote(target, safe="").encode("ascii")
    signed_in = trio.send(via, query, headers={"Cookie": session_cookie(trio.runtime), "Accept": "text/html"})
    assert_no_500(signed_in, target)
    assert signed_in.status == 303 and lands_here(signed_in.headers["location"]), signed_in.headers.get("location")
    done = login(trio, via, exempt_user, PASSWORD, next_target=target)
    assert done.status == 303, (done.status, done.text[:300])
    assert lands_here(done.headers["location"]), done.headers["location"]


def login(trio: Trio, via: Via, username: str, password: str, next_target: str = "/") -> Outcome:
    """The password form, as a browser fills it in: GET (anonymous cookie, CSRF token), then POST."""
    page = trio.send(via, b"/_mfa/login", headers={"Accept": "text/html"})
    assert page.status == 200, page.status
    anon = page.headers["set-cookie"].split(";", 1)[0]
    body = urlencode({"username": username, "password": password, "csrf_token": csrf_of(page.text),
                      "next": next_target}).encode()
    return trio.send(via, b"/_mfa/login", method="POST", body=body,
                     headers={"Cookie": anon, "Accept": "text/html",
                              "Content-Type": "application/x-www-form-urlencoded"})


# -- cookies -----------------------------------------------------------------------------------------------------

def _cookie_rows(trio: Trio) -> dict[str, str]:
    valid = session_cookie(trio.runtime).partition("=")[2]
    other_site = URLSafeSerializer("another site's key " * 3, salt=SALT_SESSION).dumps(["alice"])
    pending = trio.runtime.codec.make_csrf("x")  # another purpose's salt
    now = trio.clock()
    one_factor = trio.runtime.codec.dump_session(Session("sid-1f", "alice", (), 1, ("forms",), now, now, now, now,
                                                         False))
    return {
        "forged-then-valid": f"mfa_session=forged; mfa_session={valid}",
        "empty-then-valid": f"mfa_session=; mfa_session={valid}",
        "other-site-key": f"mfa_session={other_site}",
        "another-purpose-salt": f"mfa_session={pending}",
        "unsigned-json": "mfa_session=" + base64.urlsafe_b64encode(b'["alice",2]').decode(),
        "tampered-signature": f"mfa_session={valid[:-2]}xx",
        "truncated": f"mfa_session={valid[: len(valid) // 2]}",
        "quoted": f'mfa_session="{valid[:-1]}"',
        "host-prefixed-over-http": f"__Host-mfa_session={valid[:-1]}X",
        "no-equals": "mfa_session",
        "only-semicolons": ";;;;",
        "nul-byte": "mfa_session=\x00",
        "latin-1-bytes": "mfa_session=\xe9\xff",
        "oversized-value": "mfa_session=" + "A" * 65_536,
        "ten-thousand-cookies": "; ".join(f"c{i}=v" for i in range(10_000)),
        "one-factor-session": f"mfa_session={one_factor}",
        "pending-cookie-as-session": f"mfa_session={trio.runtime.codec.make_csrf('sid')}",
    }


COOKIE_SOURCES = {
    "forged-then-valid": "cookie tossing (GitHub pages, 2013; RFC 6265 duplicate names)",
    "other-site-key": "CWE-565 (cookie signed by another deployment)",
    "another-purpose-salt": "itsdangerous salt confusion",
    "one-factor-session": "step-up bypass",
}
COOKIE_IDS = ["forged-then-valid", "empty-then-valid", "other-site-key", "another-purpose-salt", "unsigned-json",
              "tampered-signature", "truncated", "quoted", "host-prefixed-over-http", "no-equals", "only-semicolons",
              "nul-byte", "latin-1-bytes", "oversized-value", "ten-thousand-cookies", "one-factor-session",
              "pending-cookie-as-session"]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("row", COOKIE_IDS)
def test_cookies(trio: Trio, via: Via, row: str) -> None:
    cookie = _cookie_rows(trio)[row]
    for target in (b"/docs/x", b"/admin/x", b"/_mfa/", b"/_mfa/app-passwords"):
        outcome = trio.send(via, target, headers={"Cookie": cookie, "Accept": "text/html"})
        assert_no_500(outcome, (row, target))
        assert not outcome.reached, (row, target, outcome.status)
        if target.startswith(b"/_mfa") and outcome.status == 200 and row != "one-factor-session":
            assert "alice" not in outcome.text, (row, target)


# -- spoofed headers ---------------------------------------------------------------------------------------------

SPOOF_ROWS: dict[str, tuple[bytes, dict[str, str], str]] = {
    "remote-user-header": (b"/docs/x", {"Remote-User": "alice"}, "Django RemoteUserMiddleware header spoofing"),
    "x-remote-user-header": (b"/docs/x", {"X-Remote-User": "alice"}, "header spoofing"),
    "remote-user-underscore": (b"/docs/x", {"Remote_User": "alice"}, "nginx underscores_in_headers"),
    "x-original-url": (b"/admin/x", {"X-Original-URL": "/public/x"}, "CVE-2018-14773 (Symfony X-Original-URL)"),
    "x-rewrite-url": (b"/admin/x", {"X-Rewrite-URL": "/public/x"}, "CVE-2018-14773 (Symfony X-Rewrite-URL)"),
    "x-forwarded-uri-from-client": (b"/admin/x", {"X-Forwarded-Uri": "/public/x"}, "forward-auth header spoofing"),
    "x-forwarded-prefix": (b"/admin/x", {"X-Forwarded-Prefix": "/public"}, "header spoofing"),
    "x-forwarded-for-localhost": (b"/_mfa/metrics", {"X-Forwarded-For": "127.0.0.1"}, "CWE-290 (IP spoofing)"),
    "x-real-ip-localhost": (b"/_mfa/metrics", {"X-Real-IP": "127.0.0.1"}, "CWE-290"),
    "forwarded-localhost": (b"/_mfa/metrics", {"Forwarded": "for=127.0.0.1"}, "RFC 7239 spoofing"),
    "x-forwarded-host": (b"/docs/x", {"X-Forwarded-Host": "evil.example"},
                         "Practical HTTP Host header attacks (Kettle, 2013)"),
    "host-header": (b"/docs/x", {"Host": "evil.example"}, "Practical HTTP Host header attacks (Kettle, 2013)"),
    "x-forwarded-proto": (b"/docs/x", {"X-Forwarded-Proto": "https"}, "scheme spoofing (__Host- cookies)"),
    "x-http-method-override": (b"/blocked/x", {"X-HTTP-Method-Override": "GET"}, "method override"),
    "authorization-on-a-cookie-rule": (b"/docs/x", {"Authorization": "Basic YWxpY2U6eA=="}, "Basic where not allowed"),
    "remote-groups-header": (b"/admin/x", {"Remote-Groups": "admins"}, "forward-auth header spoofing"),
}


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("row", list(SPOOF_ROWS))
def test_spoofed_headers(trio: Trio, via: Via, row: str) -> None:
    target, headers, _ = SPOOF_ROWS[row]
    for cookie in (None, session_cookie(trio.runtime)):
        sent = {**headers, "Accept": "text/html", **({"Cookie": cookie} if cookie else {})}
        outcome = trio.send(via, target, headers=sent)
        assert_no_500(outcome, row)
        if target == b"/_mfa/metrics":
            assert outcome.status == 403, (row, outcome.status)
            continue
        if cookie is None:
            assert not outcome.reached, (row, outcome.status)
        else:
            assert not (outcome.reached and target.startswith((b"/admin", b"/blocked"))), (row, outcome.status)
            if outcome.reached:
                assert outcome.user == "alice", (row, outcome.user)
        location = outcome.headers.get("location", "")
        assert "evil.example" not in location, (row, location)


# -- usernames -----------------------------------------------------------------------------------------------------

#: (what is typed, whether it is the same account as "admin", source)
USERNAME_ROWS: dict[str, tuple[str, bool, str]] = {
    "exact": ("admin", True, "control"),
    "upper-case": ("ADMIN", True, "case"),
    "mixed-case": ("Admin", True, "case"),
    "trailing-space": ("admin ", True, "trailing space (CWE-178)"),
    "leading-space": (" admin", True, "leading space"),
    "fullwidth": ("\uff41\uff44\uff4d\uff49\uff4e", False, "NFKC collision (Spotify, 2013 'Creative usernames')"),
    "dotless-i": ("adm\u0131n", False, "case folding collision (GitHub, 2019 'Hacking GitHub with Unicode')"),
    "dotted-capital-i": ("ADM\u0130N", False, "case folding collision"),
    "kelvin-sign": ("\u212aevin", False, "NFKC and lower-case collision (U+212A lowers to k)"),
    "zero-width-space": ("ad\u200bmin", False, "invisible character"),
    "domain-backslash": ("CONTOSO\\admin", False, "DOMAIN\\user down-level logon name"),
    "upn": ("admin@contoso.example", False, "user@domain (UPN)"),
    "nul": ("admin\x00", False, "CWE-158 (NUL truncation)"),
    "tab": ("admin\t", True, "whitespace trimmed"),
    "ten-thousand": ("admin" + "a" * 9_995, False, "CWE-400 (10,000 characters)"),
    "ten-thousand-prefix": ("a" * 10_000, False, "CWE-400"),
}


@pytest.fixture
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    """A fresh store per row: the failures of one row never lock the next out."""
    trio = Trio(f"sqlite:///{tmp_path_factory.mktemp('users') / 'mfa.db'}")
    trio.runtime.accounts.add("admin", actor="test", password=PASSWORD, groups=["admins"])
    trio.runtime.accounts.add("kevin", actor="test", password=PASSWORD)
    yield trio
    trio.close()


@pytest.mark.parametrize("row", list(USERNAME_ROWS))
def test_usernames(users: Trio, row: str) -> None:
    typed, same, _ = USERNAME_ROWS[row]
    for via in VIAS:
        outcome = login(users, via, typed, PASSWORD)
        assert_no_500(outcome, (row, via))
        progressed = outcome.status == 303 and "pending=" in outcome.headers.get("set-cookie", "")
        if not same:
            assert not progressed, (row, via, outcome.status, outcome.headers.get("location"))
            assert outcome.status in (400, 401), (row, via, outcome.status)
        else:
            assert progressed, (row, via, outcome.status, outcome.text[:200])
            pending = outcome.headers["set-cookie"].split(";", 1)[0].partition("=")[2]
            loaded = users.runtime.codec.load_pending(pending)
            assert loaded is not None and loaded.username == "admin", (row, via)


# -- oversized bodies and headers ------------------------------------------------------------------------------------

BIG_ROWS: dict[str, tuple[str, bytes, dict[str, str], bytes, str]] = {
    "login-body-1mb": ("POST", b"/_mfa/login", {"Content-Type": "application/x-www-form-urlencoded"},
                       b"username=" + b"a" * 1_048_576, "CWE-400 (form body)"),
    "login-multipart-1mb": ("POST", b"/_mfa/login", {"Content-Type": "multipart/form-data; boundary=x"},
                            b"--x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n"
                            + b"a" * 1_048_576 + b"\r\n--x--\r\n", "CVE-2023-25577 (werkzeug multipart)"),
    "device-api-1mb": ("POST", b"/_mfa/device/v1/answer", {"Content-Type": "application/json"},
                       b"[" * 100_000, "CWE-674 (deep JSON)"),
    "cookie-header-256kb": ("GET", b"/docs/x", {"Cookie": "mfa_session=" + "A" * 262_144}, b"", "CWE-400"),
    "authorization-100kb": ("GET", b"/dav/x", {"Authorization": "Basic " + "QUFB" * 25_000}, b"", "CWE-400"),
    "x-forwarded-for-10k-hops": ("GET", b"/docs/x", {"X-Forwarded-For": ", ".join(["10.0.0.1"] * 10_000)}, b"",
                                 "CWE-400"),
    "path-100kb": ("GET", b"/docs/" + b"a/" * 50_000, {}, b"", "CWE-400"),
    "dot-segments-50k": ("GET", b"/docs/" + b"../" * 50_000, {}, b"", "CWE-400"),
    "query-100kb": ("GET", b"/_mfa/login?next=" + b"%2F" * 30_000, {}, b"", "CWE-400"),
    "accept-100kb": ("GET", b"/docs/x", {"Accept": "text/html," * 10_000}, b"", "CWE-400"),
}


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("row", list(BIG_ROWS))
def test_oversized_bodies_and_headers(trio: Trio, via: Via, row: str) -> None:
    method, target, headers, body, _ = BIG_ROWS[row]
    outcome = trio.send(via, target, method=method, headers=headers, body=body)
    assert_no_500(outcome, row)
    assert not outcome.reached, (row, outcome.status)
    if row.startswith("login-"):
        assert outcome.status in (400, 413), (row, outcome.status)


def test_every_row_names_its_source() -> None:
    for table in (PATH_ROWS, NEXT_ROWS, SPOOF_ROWS, USERNAME_ROWS, BIG_ROWS):
        for name, row in table.items():
            assert row[-1], name
    assert set(COOKIE_SOURCES) <= set(COOKIE_IDS)
