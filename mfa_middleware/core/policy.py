"""Per-route rules: the first rule whose path and method match decides what a request needs.

Rules:

- A rule selects requests by path (a glob, or ``path_regex``) and optionally by HTTP method. The first rule that
  selects a request is the only one consulted; when none does, ``default_policy`` applies.
- A rule that lists ``GET`` in ``methods`` also covers ``HEAD``: servers and frameworks (werkzeug, Flask,
  Django, Starlette) answer ``HEAD`` with the ``GET`` handler, so a ``HEAD`` request must meet the rule its
  ``GET`` twin meets. Otherwise ``HEAD /reports/x`` would fall through to a later, weaker rule and learn the
  status and headers (``Content-Length``, ``ETag``) of a page its ``GET`` may not see. A rule listing only
  ``HEAD`` does not cover ``GET``.
- ``users`` and ``groups`` on a rule say who may pass it once signed in; everyone else gets 403. They do not
  make a request fall through to a later rule: if they did, ``/admin/* groups=["admins"]`` followed by
  ``/* two_factor`` would let every signed-in user into ``/admin``.
- Globs: ``*`` matches any run of characters including ``/``, ``?`` one character other than ``/``. A glob ending
  in ``/*`` also matches the folder itself (``/admin/*`` matches ``/admin``).
- Paths are matched case-insensitively unless ``case_sensitive_paths`` is set, so ``/ADMIN`` on a server that
  routes without regard to case cannot slip past an ``/admin/*`` rule. With ``[paths] windows = true`` they are
  always matched so (see :mod:`mfa_middleware.core.paths` for the rest of Windows mode).

Matching is pure: it gets the normalised path and the method, and returns a frozen :class:`Requirement`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import Config, RuleConfig


@dataclass(frozen=True, slots=True)
class Requirement:
    policy: str  # bypass | one_factor | two_factor | deny
    rule_index: int | None = None  # None: the default policy
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    exempt: bool = True  # users in the `disabled` state may pass a two_factor rule with one factor
    basic: bool = False  # HTTP Basic (app passwords) is accepted on this rule

    def admits(self, username: str, groups: tuple[str, ...]) -> bool:
        """Whether a signed-in user may pass this rule (its ``users``/``groups`` restriction)."""
        if not self.users and not self.groups:
            return True
        return username in self.users or any(g in self.groups for g in groups)


def glob_to_regex(glob: str) -> str:
    out: list[str] = []
    body = glob
    folder = body.endswith("/*") and len(body) > 2
    if folder:
        body = body[:-2]
    for ch in body:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(ch))
    pattern = "".join(out)
    if folder:
        pattern += "(?:/.*)?"
    return pattern


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    pattern: re.Pattern[str]
    methods: frozenset[str]
    requirement: Requirement


def rule_methods(methods: tuple[str, ...]) -> frozenset[str]:
    """The methods a rule selects (empty: every method); ``GET`` brings ``HEAD`` with it."""
    selected = frozenset(m.upper() for m in methods)
    return selected | {"HEAD"} if "GET" in selected else selected


class Policy:
    """The compiled rule list of one configuration."""

    def __init__(self, rules: tuple[RuleConfig, ...], default_policy: str, case_sensitive: bool = False) -> None:
        flags = 0 if case_sensitive else re.IGNORECASE
        self._rules = tuple(
            _CompiledRule(
                pattern=re.compile(glob_to_regex(r.path) if r.path is not None else str(r.path_regex), flags),
                methods=rule_methods(r.methods),
                requirement=Requirement(policy=r.policy, rule_index=r.index,
                                        users=frozenset(u.lower() for u in r.users), groups=frozenset(r.groups),
                                        exempt=r.exempt, basic=r.basic),
            )
            for r in rules
        )
        self._default = Requirement(policy=default_policy)
        self._cache: dict[tuple[str, str], Requirement] = {}

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        # Windows mode always matches without regard to case (the configuration refuses both set).
        return cls(config.rules, config.default_policy, config.case_sensitive_paths and not config.paths.windows)

    def match(self, method: str, path: str) -> Requirement:
        """The requirement of the first rule selecting ``method`` and the normalised ``path``."""
        key = (method, path)
        found = self._cache.get(key)
        if found is not None:
            return found
        found = self._default
        for rule in self._rules:
            if rule.methods and method not in rule.methods:
                continue
            if rule.pattern.fullmatch(path):
                found = rule.requirement
                break
        if len(self._cache) < 4096:
            self._cache[key] = found
        return found
