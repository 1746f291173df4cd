"""Path normalisation and safe `next=` targets."""

from __future__ import annotations

import pytest

from mfa_middleware.core.paths import is_local_target, normalize_path, safe_next


def wsgi(text: str) -> str:
    """How a WSGI server hands a decoded UTF-8 path to the app (latin-1 text standing for bytes)."""
    return text.encode("utf-8").decode("latin-1")


@pytest.mark.parametrize(("raw", "expected"), [
    pytest.param("/", "/", id="root"),
    pytest.param("", "/", id="empty"),
    pytest.param("/admin", "/admin", id="plain"),
    pytest.param("/admin/", "/admin/", id="trailing-slash-kept"),
    pytest.param("//admin", "/admin", id="double-slash"),
    pytest.param("/./admin", "/admin", id="dot-segment"),
    pytest.param("/x/../admin", "/admin", id="dot-dot"),
    pytest.param("/admin/.", "/admin/", id="trailing-dot"),
    pytest.param("/admin;x", "/admin", id="semicolon-param"),
    pytest.param("/admin;x/panel", "/admin/panel", id="semicolon-mid"),
    pytest.param("/a//b///c", "/a/b/c", id="many-slashes"),
    pytest.param("/..;/admin", None, id="dotdot-semicolon-above-root"),
    pytest.param("/x/..;/admin", "/admin", id="dotdot-semicolon"),
    pytest.param("/..", None, id="above-root"),
    pytest.param("/../admin", None, id="above-root-then-path"),
    pytest.param("/%2e%2e/admin", None, id="double-encoded-dots"),
    pytest.param("/admin%2fpanel", None, id="double-encoded-slash"),
    pytest.param("/admin%5Cpanel", None, id="double-encoded-backslash"),
    pytest.param("/admin%252e", None, id="triple-encoded"),
    pytest.param("/admin\\panel", None, id="backslash"),
    pytest.param("/admin\x00", None, id="nul"),
    pytest.param("/admin\t", None, id="tab"),
    pytest.param("admin", None, id="relative"),
    pytest.param(wsgi("/café"), "/café", id="utf8"),
    pytest.param("/caf\xe9", None, id="invalid-utf8"),
])
def test_normalize_path(raw: str, expected: str | None) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("target", [
    pytest.param("//evil.com", id="scheme-relative"),
    pytest.param("/\\evil.com", id="slash-backslash"),
    pytest.param("/%09/evil.com", id="encoded-tab"),
    pytest.param("/\t/evil.com", id="raw-tab"),
    pytest.param("/%2f/evil.com", id="encoded-slash"),
    pytest.param("/%5cevil.com", id="encoded-backslash"),
    pytest.param("https:evil.com", id="scheme-no-slashes"),
    pytest.param("https://evil.com", id="absolute"),
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("", id="empty"),
    pytest.param("evil.com", id="relative"),
    pytest.param("/ok\r\nSet-Cookie: x=1", id="crlf"),
    pytest.param("/" + "a" * 5000, id="too-long"),
])
def test_unsafe_next_targets_fall_back(target: str) -> None:
    assert not is_local_target(target)
    assert safe_next(target) == "/"


@pytest.mark.parametrize("target", ["/", "/app/page?x=1&y=2", "/a/b#frag", "/%C3%A9t%C3%A9"])
def test_local_targets_are_kept(target: str) -> None:
    assert safe_next(target) == target
