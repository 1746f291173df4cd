"""Case-insensitive rule matching folds ASCII letters only (A-Z and a-z), never a non-ASCII character to ASCII.

The app behind the middleware (Linux, Werkzeug, Starlette, Django) routes case-sensitively or folds ASCII only,
so ``/publıc/x`` (dotless ı, U+0131) is another route than ``/public/x``. Python's ``re.IGNORECASE`` on text
folds by Unicode rules (``ı`` and ``İ`` match ``i``, ``ſ`` matches ``s``, the Kelvin sign matches ``k``), which
let such a path take an ASCII rule's policy: a bypass for a route the app serves under a stricter rule, or the
other way round. ``ſ`` and the Kelvin sign never reach the policy (core/paths.py rule 5 refuses them); the
policy must not rely on that.
"""

from __future__ import annotations

import re

import pytest

from mfa_middleware.config import RuleConfig
from mfa_middleware.core.paths import normalize_path
from mfa_middleware.core.policy import Policy, ascii_folding_regex


def rule(path: str | None, policy: str, index: int, regex: str | None = None) -> RuleConfig:
    return RuleConfig(path=path, path_regex=regex, policy=policy, index=index)


RULES = (
    rule("/public/*", "bypass", 0),
    rule("/secret/*", "deny", 1),
    rule(None, "bypass", 2, regex=r"/static/[a-z]+\.css"),
    rule("/ıstanbul/*", "bypass", 3),  # an operator's non-ASCII rule: matches its own spelling only
    rule("/*", "two_factor", 4),
)


@pytest.mark.parametrize("case_sensitive", [pytest.param(False, id="insensitive"),
                                            pytest.param(True, id="sensitive")])
@pytest.mark.parametrize(("path", "index"), [
    pytest.param("/publ\u0131c/x", 4, id="dotless-i-is-not-i"),
    pytest.param("/PUBL\u0130C/x", 4, id="dotted-capital-I-is-not-i"),
    pytest.param("/\u017fecret/x", 4, id="long-s-is-not-s"),
    pytest.param("/secret/\u212a", 1, id="kelvin-inside-still-under-secret"),
    pytest.param("/public/\u212a", 0, id="kelvin-inside-still-under-public"),
    pytest.param("/static/\u212a.css", 4, id="kelvin-is-not-k-in-regex"),
    pytest.param("/static/\u017f.css", 4, id="long-s-is-not-s-in-regex"),
    pytest.param("/istanbul/x", 4, id="ascii-i-is-not-a-rules-dotless-i"),
    pytest.param("/Istanbul/x", 4, id="capital-I-is-not-a-rules-dotless-i"),
    pytest.param("/\u0131stanbul/x", 3, id="non-ascii-rule-matches-itself"),
    pytest.param("/public/x", 0, id="ascii-exact"),
])
def test_non_ascii_never_folds_to_ascii(case_sensitive: bool, path: str, index: int) -> None:
    assert Policy(RULES, "deny", case_sensitive=case_sensitive).match("GET", path).rule_index == index


@pytest.mark.parametrize(("path", "index"), [
    pytest.param("/PUBLIC/x", 0, id="upper"),
    pytest.param("/Public/x", 0, id="mixed"),
    pytest.param("/SeCrEt/x", 1, id="mixed-deny"),
    pytest.param("/STATIC/ABC.CSS", 2, id="regex-upper"),
    pytest.param("/public/\u00c9T\u00c9", 0, id="non-ascii-after-the-ascii-prefix"),
])
def test_ascii_letters_still_fold(path: str, index: int) -> None:
    assert Policy(RULES, "deny").match("GET", path).rule_index == index


def test_regex_word_class_keeps_other_letters() -> None:
    """ASCII-only folding must not narrow what ``\\w`` means in an operator's ``path_regex``: a deny rule on
    ``/admin/\\w+`` keeps covering ``/admin/café``."""
    policy = Policy((rule(None, "deny", 0, regex=r"/admin/\w+"), rule("/*", "bypass", 1)), "deny")
    assert policy.match("GET", "/admin/caf\u00e9").rule_index == 0
    assert policy.match("GET", "/ADMIN/Caf\u00e9").rule_index == 0


@pytest.mark.parametrize("char", ["\u017f", "\u212a"])
def test_compatibility_forms_are_refused_before_matching(char: str) -> None:
    """Belt and braces: long s and the Kelvin sign never reach the policy (paths rule 5)."""
    assert normalize_path(f"/{char}ecret/x".encode().decode("latin-1")) is None


@pytest.mark.parametrize("source", [
    pytest.param(r"/admin/\w+", id="word"),
    pytest.param(r"/a[\w.-]+", id="word-in-set"),
    pytest.param(r"/a[^\w/]x", id="negated-set"),
    pytest.param(r"/v\d+/\S+", id="digits-and-non-space"),
    pytest.param(r"/[\]\w]+", id="escaped-bracket-in-set"),
    pytest.param(r"/[]a]+", id="leading-bracket-is-literal"),
    pytest.param(r".*\bx\B.*", id="boundaries"),
    pytest.param(r"/[\x00-\x7f]+", id="hex-range"),
])
@pytest.mark.parametrize("path", ["/admin/caf\u00e9", "/a\u00e9.-x", "/a\u00e9x", "/a/x", "/v\u0663/\u00e9",
                                  "/]\u00e9a", "/\u00e9x\u00e9", "/abc", "/ab c"])
def test_rewritten_regex_keeps_its_meaning_case_sensitively(source: str, path: str) -> None:
    """Without folding in play, the rewritten pattern under re.ASCII selects exactly what the operator's pattern
    selects under Python's default (Unicode) rules."""
    rewritten = re.compile(ascii_folding_regex(source), re.ASCII)
    assert bool(rewritten.fullmatch(path)) == bool(re.fullmatch(source, path))
