"""IIS path folding (issue 12): with ``[paths] windows = true`` a rule means what IIS and NTFS mean.

IIS serves ``/Admin/x``, ``/admin./x``, ``/admin%20/x``, ``/admin::$DATA/x`` and the 8.3 short name
``/ADMINI~1/x`` as ``/admin/x``. Each row is such a form of a path under a rule that refuses ``alice`` (signed in
with two factors, not an admin): ``/admin/*`` (admins only) or ``/blocked/*`` (denied). Through WSGI, ASGI and
forward auth, it must never reach the app as ``alice`` nor answer 500: it is matched case-insensitively (403)
or refused (400; forward auth 403). The rules of Windows mode and the decision for each neighbouring trick are in
the docstring of :mod:`mfa_middleware.core.paths`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mfa_middleware.config import ConfigError, load_config
from mfa_middleware.core.paths import normalize_path
from tests.support.adapters import VIAS, Trio, Via
from tests.support.mfa import ENCRYPTION_KEY, SECRET_KEY, make_config
from tests.support.paths import session_cookie

IIS_SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "iis" / "mfa.toml"

#: (raw request target, what it means to IIS, source)
WINDOWS_FORMS: list[tuple[str, bytes, str]] = [
    ("case-first-letter", b"/Admin/x", "IIS and NTFS are case-insensitive"),
    ("case-all", b"/ADMIN/X", "IIS and NTFS are case-insensitive"),
    ("case-mixed-deny", b"/bLoCkEd/x", "IIS and NTFS are case-insensitive"),
    ("case-encoded", b"/%41dmin/x", "IIS and NTFS are case-insensitive"),
    ("trailing-dot", b"/admin./x", "Win32 path normalisation drops trailing dots"),
    ("trailing-dots", b"/admin.../x", "Win32 path normalisation drops trailing dots"),
    ("trailing-space", b"/admin%20/x", "Win32 path normalisation drops trailing spaces"),
    ("trailing-dot-space", b"/admin.%20./x", "Win32 path normalisation"),
    ("trailing-dot-last", b"/blocked/x.", "Win32 path normalisation"),
    ("ads-data", b"/admin::$DATA/x", "MS98-003 (::$DATA source disclosure)"),
    ("ads-data-last", b"/blocked/x.aspx::$DATA", "MS98-003 (::$DATA source disclosure)"),
    ("ads-data-encoded", b"/admin%3A%3A$DATA/x", "MS98-003"),
    ("ads-named-stream", b"/admin:stream/x", "NTFS alternate data streams"),
    ("ads-index-allocation", b"/admin:$I30:$INDEX_ALLOCATION/x", "CVE-2010-2731 (IIS :$I30 auth bypass)"),
    ("short-name", b"/ADMINI~1/x", "8.3 short names; IIS tilde enumeration (Soroush Dalili, 2012)"),
    ("short-name-lower", b"/admini~1/x", "8.3 short names"),
    ("short-name-last", b"/blocked/SECRET~1.TXT", "8.3 short names"),
    ("short-name-encoded-tilde", b"/ADMINI%7E1/x", "8.3 short names"),
    ("wildcard-star", b"/adm*/x", "IIS tilde enumeration used *~1*"),
    ("wildcard-dos-star", b"/adm%3C/x", "FindFirstFile DOS_STAR"),
    ("wildcard-dos-qm", b"/admi%3E/x", "FindFirstFile DOS_QM"),
    ("wildcard-dos-dot", b"/admin%22/x", "FindFirstFile DOS_DOT"),
    ("dotless-i", b"/adm%C4%B1n/x", "Turkish dotless i upper-cases to I"),
    ("dotted-capital-i", b"/adm%C4%B0n/x", "Turkish dotted capital I lower-cases to i"),
    ("soft-hyphen", b"/blocked/x%C2%ADy", "CVE-2024-4577 (best-fit soft hyphen)"),
    ("zero-width-space", b"/blo%E2%80%8Bcked/x", "format characters"),
    ("kelvin-sign", b"/bloc%E2%84%AAed/x", "NFKC and case folding of the Kelvin sign"),
    ("fullwidth-letter", b"/%EF%BD%81dmin/x", "NFKC compatibility forms"),
    ("backslash-encoded", b"/public%5C..%5Cadmin/x", "IIS reads \\ as /"),
    ("backslash", b"/public\\..\\admin\\x", "IIS reads \\ as /"),
    ("overlong-slash", b"/public/..%C0%AF../admin/x", "CVE-2000-0884 (IIS Unicode traversal)"),
    ("double-encoded-backslash", b"/public/..%255c../admin/x", "CVE-2001-0333 (IIS double decode)"),
    ("double-encoded-letter", b"/%2561dmin/x", "CVE-2001-0333 (IIS double decode)"),
    ("iis-u-encoding", b"/%u0061dmin/x", "IIS %u encoding (CVE-2000-0778 family)"),
    ("semicolon-then-dot", b"/admin.;x/y", "IIS keeps ;, Win32 drops the dot"),
    ("semicolon-asp", b"/blocked/x.asp;.jpg", "CVE-2009-4444 (IIS semicolon extension)"),
]
ROWS = [pytest.param(target, id=name) for name, target, _ in WINDOWS_FORMS]


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    database = f"sqlite:///{tmp_path_factory.mktemp('iis') / 'mfa.db'}"
    trio = Trio(database, paths={"windows": True})
    yield trio
    trio.close()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    """The same rules without Windows mode (to show which rows the switch is for)."""
    database = f"sqlite:///{tmp_path_factory.mktemp('plain') / 'mfa.db'}"
    trio = Trio(database, case_sensitive_paths=True)
    yield trio
    trio.close()


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("target", ROWS)
def test_a_windows_form_of_a_stricter_path_never_passes(trio: Trio, target: bytes, via: Via) -> None:
    cookie = session_cookie(trio.runtime)
    for headers in ({}, {"Cookie": cookie}, {"Cookie": cookie, "Accept": "text/html"}):
        outcome = trio.send(via, target, headers=headers)
        assert outcome.status != 500, (target, outcome.text)
        assert not outcome.reached, (target, via, outcome.status, outcome.path)
        assert outcome.status in (302, 400, 401, 403), (target, via, outcome.status)


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("target", [pytest.param(t, id=name) for name, t, _ in WINDOWS_FORMS
                                    if name.startswith(("ads", "short", "wildcard", "dotless", "dotted"))])
def test_refused_forms_get_a_clear_400(trio: Trio, target: bytes, via: Via) -> None:
    outcome = trio.send(via, target, headers={"Cookie": session_cookie(trio.runtime), "Accept": "text/html"})
    assert outcome.status == (403 if via == "forward" else 400), (target, outcome.status)
    assert "short names (NAME~1)" in outcome.text or via == "forward"
    assert "not in canonical form" in outcome.text or "short names" in outcome.text


@pytest.mark.parametrize("via", VIAS)
def test_an_admin_still_gets_in_by_the_plain_name(trio: Trio, via: Via) -> None:
    """Control: the rule itself works for someone it admits, under the name IIS means."""
    admin = session_cookie(trio.runtime, "root", ("admins",))
    assert trio.send(via, b"/admin/x", headers={"Cookie": admin}).reached
    assert trio.send(via, b"/ADMIN/x", headers={"Cookie": admin}).reached  # one file to IIS, one rule to us


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("target", [
    pytest.param(b"/docs/Report.PDF", id="mixed-case"),
    pytest.param(b"/docs/caf%C3%A9/x", id="accented-letter"),
    pytest.param(b"/docs/%E7%94%A8", id="cjk"),
    pytest.param(b"/docs/a%20b/c.txt", id="inner-space"),
    pytest.param(b"/docs/x~y", id="tilde-without-digit"),
    pytest.param(b"/docs/.well-known", id="leading-dot"),
    pytest.param(b"/docs/v1.2/x", id="dot-inside"),
])
def test_ordinary_windows_names_pass(trio: Trio, target: bytes, via: Via) -> None:
    outcome = trio.send(via, target, headers={"Cookie": session_cookie(trio.runtime)})
    assert outcome.reached and outcome.user == "alice", (target, outcome.status, outcome.text)


@pytest.mark.parametrize("target", [pytest.param(b"/ADMINI~1/x", id="short-name"),
                                    pytest.param(b"/admin::$DATA/x", id="ads"),
                                    pytest.param(b"/Admin/x", id="case")])
def test_without_the_switch_these_forms_pass_a_case_sensitive_rule(plain: Trio, target: bytes) -> None:
    """Why the switch exists: a case-sensitive rule set, not in Windows mode, lets them through to the app."""
    outcome = plain.send("wsgi", target, headers={"Cookie": session_cookie(plain.runtime)})
    assert outcome.reached, outcome.status


@pytest.mark.parametrize(("raw", "windows", "expected"), [
    pytest.param("/Admin/x", True, "/Admin/x", id="case-kept-for-the-app"),
    pytest.param("/admin::$DATA", True, None, id="ads"),
    pytest.param("/admin::$DATA", False, "/admin::$DATA", id="ads-without-windows"),
    pytest.param("/ADMINI~1/x", True, None, id="short"),
    pytest.param("/ADMINI~1/x", False, "/ADMINI~1/x", id="short-without-windows"),
    pytest.param("/x~y", True, "/x~y", id="tilde-letter"),
    pytest.param("/a;~1/b", True, None, id="short-in-a-param"),
    pytest.param("/a|b", True, None, id="pipe"),
    pytest.param("/a\u00c4\u00b1b", True, None, id="dotless-i-wsgi-form"),
    pytest.param("/caf\u00c3\u00a9", True, "/caf\u00e9", id="accent-kept"),
    pytest.param("/admin./x", False, None, id="trailing-dot-always"),
])
def test_normalize_path_in_windows_mode(raw: str, windows: bool, expected: str | None) -> None:
    assert normalize_path(raw, windows) == expected


def test_windows_mode_and_case_sensitive_rules_cannot_be_combined(sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match=r"paths\.windows: .*case_sensitive_paths"):
        make_config(sqlite_url, paths={"windows": True}, case_sensitive_paths=True)
    with pytest.raises(ConfigError, match=r"paths\.bogus: unknown key"):
        make_config(sqlite_url, paths={"bogus": True})
    assert make_config(sqlite_url).paths.windows is False


def test_the_iis_sample_turns_windows_mode_on() -> None:
    config = load_config(IIS_SAMPLE, environ={"MFA_SECRET_KEY": SECRET_KEY, "MFA_ENCRYPTION_KEY": ENCRYPTION_KEY})
    assert config.paths.windows is True and config.case_sensitive_paths is False
