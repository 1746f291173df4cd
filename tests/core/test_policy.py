"""Rule matching: first match wins; globs, regexes, methods; users/groups restrict, never fall through."""

from __future__ import annotations

import pytest

from mfa_middleware.config import RuleConfig
from mfa_middleware.core.policy import Policy


def rule(path: str | None = None, policy: str = "two_factor", index: int = 0, **kw: object) -> RuleConfig:
    return RuleConfig(path=path, path_regex=kw.pop("path_regex", None), policy=policy, index=index, **kw)  # type: ignore[arg-type]


POLICY = Policy((
    rule("/public/*", "bypass", 0),
    rule("/admin/*", "two_factor", 1, groups=("admins",)),
    rule("/api/*", "one_factor", 2, methods=("GET",)),
    rule("/api/*", "deny", 3),
    rule(None, "bypass", 4, path_regex=r"/health(z)?"),
    rule("/files/?.txt", "one_factor", 5),
    rule("/*", "two_factor", 6),
), default_policy="deny")


@pytest.mark.parametrize(("method", "path", "policy", "index"), [
    pytest.param("GET", "/public/", "bypass", 0, id="folder-slash"),
    pytest.param("GET", "/public", "bypass", 0, id="folder-itself"),
    pytest.param("GET", "/public/a/b.css", "bypass", 0, id="nested"),
    pytest.param("GET", "/publicity", "two_factor", 6, id="prefix-is-not-folder"),
    pytest.param("GET", "/admin", "two_factor", 1, id="admin-folder"),
    pytest.param("GET", "/ADMIN/users", "two_factor", 1, id="case-insensitive"),
    pytest.param("GET", "/api/items", "one_factor", 2, id="method-match"),
    pytest.param("POST", "/api/items", "deny", 3, id="method-falls-to-next"),
    pytest.param("HEAD", "/api/items", "one_factor", 2, id="get-rule-covers-head"),
    pytest.param("GET", "/health", "bypass", 4, id="regex"),
    pytest.param("GET", "/healthz", "bypass", 4, id="regex-optional"),
    pytest.param("GET", "/health/x", "two_factor", 6, id="regex-is-full-match"),
    pytest.param("GET", "/files/a.txt", "one_factor", 5, id="question-mark"),
    pytest.param("GET", "/files/ab.txt", "two_factor", 6, id="question-one-char"),
])
def test_first_match_wins(method: str, path: str, policy: str, index: int) -> None:
    found = POLICY.match(method, path)
    assert (found.policy, found.rule_index) == (policy, index)


def test_default_policy_when_nothing_matches() -> None:
    policy = Policy((rule("/app/*", "two_factor"),), default_policy="deny")
    found = policy.match("GET", "/other")
    assert found.policy == "deny" and found.rule_index is None


def test_case_sensitive_option() -> None:
    policy = Policy((rule("/public/*", "bypass"),), default_policy="deny", case_sensitive=True)
    assert policy.match("GET", "/PUBLIC/x").policy == "deny"
    assert policy.match("GET", "/public/x").policy == "bypass"


def test_groups_restrict_instead_of_falling_through() -> None:
    req = POLICY.match("GET", "/admin/x")
    assert req.admits("bob", ("admins",))
    assert not req.admits("carol", ("staff",))
    assert POLICY.match("GET", "/x").admits("carol", ())


def test_users_restriction_is_case_insensitive_on_config() -> None:
    policy = Policy((rule("/*", users=("Alice",)),), default_policy="deny")
    assert policy.match("GET", "/").admits("alice", ())
    assert not policy.match("GET", "/").admits("bob", ())


def test_glob_metacharacters_are_literal() -> None:
    policy = Policy((rule("/a.b/*", "bypass"), rule("/*", "deny", 1)), default_policy="deny")
    assert policy.match("GET", "/a.b/x").policy == "bypass"
    assert policy.match("GET", "/aXb/x").policy == "deny"


# A GET rule covers HEAD: frameworks answer HEAD with the GET handler (Flask, Django, Starlette, werkzeug), so a
# HEAD request must meet exactly the rule its GET twin meets, never fall through to a later (weaker) one.
HEAD_POLICY = Policy((
    rule("/reports/*", "two_factor", 0, methods=("GET",)),
    rule("/feed/*", "bypass", 1, methods=("GET",)),
    rule("/upload/*", "one_factor", 2, methods=("POST",)),
    rule("/probe/*", "bypass", 3, methods=("HEAD",)),
    rule("/*", "bypass", 4),
), default_policy="deny")


@pytest.mark.parametrize(("method", "path", "index"), [
    pytest.param("GET", "/reports/q1", 0, id="get"),
    pytest.param("HEAD", "/reports/q1", 0, id="head-meets-the-get-rule"),
    pytest.param("HEAD", "/feed/x", 1, id="head-meets-a-get-bypass-too"),
    pytest.param("POST", "/reports/q1", 4, id="post-not-covered-by-get"),
    pytest.param("HEAD", "/upload/x", 4, id="head-not-covered-by-post"),
    pytest.param("HEAD", "/probe/x", 3, id="head-only-rule"),
    pytest.param("GET", "/probe/x", 4, id="head-rule-does-not-cover-get"),
])
def test_get_rule_covers_head(method: str, path: str, index: int) -> None:
    assert HEAD_POLICY.match(method, path).rule_index == index
