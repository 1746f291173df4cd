"""Path normalisation and safe `next=` targets."""

from __future__ import annotations

import pytest

from mfa_middleware.core.paths import (
    is_local_target,
    normalize_path,
    safe_next,
    wsgi_form,
)


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
    # issue 7: nothing a second decoding would change, no encoded delimiters, no Windows trimming, strict UTF-8
    pytest.param("/%61dmin/x", None, id="leftover-letter"),
    pytest.param("/x%3A", None, id="leftover-any-hex-pair"),
    pytest.param("/%u0061dmin", None, id="leftover-iis-u"),
    pytest.param("/%U0061dmin", None, id="leftover-iis-u-upper"),
    pytest.param("/100%", "/100%", id="lone-percent-kept"),
    pytest.param("/100%zz", "/100%zz", id="percent-not-hex-kept"),
    pytest.param("/a?b", None, id="question-mark"),
    pytest.param("/a#b", None, id="hash"),
    pytest.param("/admin./x", None, id="segment-trailing-dot"),
    pytest.param("/admin /x", None, id="segment-trailing-space"),
    pytest.param("/admin.", None, id="last-segment-trailing-dot"),
    pytest.param("/.../x", None, id="three-dots"),
    pytest.param("/admin.;x/y", None, id="trailing-dot-before-param"),
    pytest.param("/a b/c", "/a b/c", id="inner-space-kept"),
    pytest.param("/.well-known/x", "/.well-known/x", id="leading-dot-kept"),
    pytest.param("/x/..", "/", id="dotdot-to-root"),
    pytest.param("/x/../", "/", id="dotdot-to-root-slash"),
    pytest.param(wsgi("/x\x85"), None, id="c1-control"),
    pytest.param(wsgi("/\uff41dmin"), None, id="fullwidth-letter"),
    pytest.param(wsgi("/x\uff0f..\uff0fadmin"), None, id="fullwidth-solidus"),
    pytest.param(wsgi("/x/\u2025/admin"), None, id="two-dot-leader"),
    pytest.param(wsgi("/x\u00a0/y"), None, id="no-break-space"),
    pytest.param(wsgi("/\u00e9t\u00e9/\u7528/\U0001f511"), "/\u00e9t\u00e9/\u7528/\U0001f511", id="utf8-kept"),
    pytest.param("/\xc0\xaf", None, id="overlong"),
    pytest.param("/\xed\xa0\x80", None, id="surrogate"),
    pytest.param("/\xf4\x90\x80\x80", None, id="above-unicode"),
    pytest.param("/\u0100", None, id="not-latin-1-text"),
])
def test_normalize_path(raw: str, expected: str | None) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("text", ["/", "/admin/x", "/caf\u00e9", "/\u7528/\U0001f511"])
def test_wsgi_form_is_the_utf8_bytes_as_latin1_and_round_trips(text: str) -> None:
    assert wsgi_form(text) == text.encode("utf-8").decode("latin-1")
    assert normalize_path(wsgi_form(text)) == text


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
