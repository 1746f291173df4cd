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
- Case-insensitive means ASCII letters only (``A``-``Z`` with ``a``-``z``), in globs and in ``path_regex`` alike,
  also under an inline ``(?i)``. Unicode folding would let ``/publıc/x`` (dotless ı) or ``/PUBLİC/x`` take a
  ``/public/*`` bypass, and a rule written ``/ıstanbul/*`` cover ``/istanbul``, while the app (case-sensitive,
  or folding ASCII only) routes them as other paths. Patterns are compiled with ``re.ASCII``; in a
  ``path_regex`` the classes ``\\w \\W \\d \\D \\s \\S \\b \\B`` are rewritten to keep their Unicode meaning
  (``/admin/\\w+`` still covers ``/admin/café``), see :func:`ascii_folding_regex`.
- ``networks`` and ``not_networks`` make a rule select requests by client address too (the address the
  trusted-proxy chain gives, ``core/facts.py``; never a header from an untrusted peer). An address that cannot be
  parsed is in no network. A rule that a request's address does not fit is skipped like one whose path does not
  match, so put the narrower rule first (``/admin/* networks=["intranet"]`` then ``/admin/* deny``).
- Each requirement carries the networks whose browsers need only the primary factor on it (the rule's
  ``trusted_networks``, else the global list): see ``core/networks.py`` and the decision.
- Matching stays one dict lookup for a request seen before: by (method, path) when no rule names networks; else
  the (method, path) lookup gives the few candidate rules and each network test is itself memoised.

Matching is pure: it gets the normalised path and the method, and returns a frozen :class:`Requirement`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import Config, RuleConfig
from .networks import EMPTY, NetworkSet


@dataclass(frozen=True, slots=True)
class Requirement:
    policy: str  # bypass | one_factor | two_factor | deny
    rule_index: int | None = None  # None: the default policy
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    exempt: bool = True  # users in the `disabled` state may pass a two_factor rule with one factor
    basic: bool = False  # HTTP Basic (app passwords) is accepted on this rule
    #: browsers (and Basic clients without an app password) on these networks need only the primary factor
    trusted: NetworkSet = EMPTY

    def trusts(self, client_ip: str) -> bool:
        """Whether ``client_ip`` is on a network this requirement trusts (one factor is enough there)."""
        return bool(self.trusted) and self.trusted.contains(client_ip)

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


#: the class escapes whose meaning ``re.ASCII`` narrows (outside a set ``\\b`` is a word boundary too)
_CLASS_ESCAPES = frozenset("wWdDsS")


def ascii_folding_regex(source: str) -> str:
    """``source`` rewritten for compiling with ``re.ASCII``, so that only case folding becomes ASCII-only.

    ``re.ASCII`` limits ``re.IGNORECASE`` to ASCII letters, but also narrows the classes ``\\w \\d \\s`` and the
    boundaries ``\\b \\B``, which would make ``/admin/\\w+`` stop covering ``/admin/café``. Each of them is put
    back in a Unicode group: ``\\w`` becomes ``(?u:\\w)``; a set holding one, such as ``[\\w.-]``, becomes
    ``(?:(?u:[\\w])|[.-])`` (negated: ``(?!(?u:[\\w])|[.-])(?s:.)``), the rest of the set
    staying under ASCII folding.
    Classes are closed under case, so Unicode folding inside those groups maps nothing to ASCII it did not hold.
    """
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "\\" and i + 1 < n:
            esc = source[i + 1]
            out.append(f"(?u:\\{esc})" if esc in _CLASS_ESCAPES or esc in "bB" else source[i:i + 2])
            i += 2
        elif ch == "[":
            end, classes, rest, negated = _parse_set(source, i)
            if end < 0:  # not a well-formed set: leave the rest as written (re.compile reports it)
                out.append(source[i:])
                break
            if not classes:
                out.append(source[i:end])
            else:
                unicode_part = "(?u:[" + "".join(classes) + "])"
                alternatives = unicode_part + ("|[" + rest + "]" if rest else "")
                out.append(f"(?!{alternatives})(?s:.)" if negated else f"(?:{alternatives})")
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _parse_set(source: str, start: int) -> tuple[int, list[str], str, bool]:
    """The set opening at ``start``: (index after its ``]`` or -1, its class escapes, the rest of its body,
    negated)."""
    i, n = start + 1, len(source)
    negated = i < n and source[i] == "^"
    if negated:
        i += 1
    classes: list[str] = []
    rest: list[str] = []
    first = True
    while i < n:
        ch = source[i]
        if ch == "]" and not first:
            return i + 1, classes, "".join(rest), negated
        first = False
        if ch == "\\" and i + 1 < n:
            if source[i + 1] in _CLASS_ESCAPES:
                classes.append(source[i:i + 2])
            else:
                rest.append(source[i:i + 2])
            i += 2
            continue
        rest.append(ch)
        i += 1
    return -1, classes, "".join(rest), negated


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    pattern: re.Pattern[str]
    methods: frozenset[str]
    requirement: Requirement
    networks: NetworkSet | None = None
    not_networks: NetworkSet | None = None

    def admits_address(self, client_ip: str) -> bool:
        if self.networks is not None and not self.networks.contains(client_ip):
            return False
        return self.not_networks is None or not self.not_networks.contains(client_ip)


def rule_methods(methods: tuple[str, ...]) -> frozenset[str]:
    """The methods a rule selects (empty: every method); ``GET`` brings ``HEAD`` with it."""
    selected = frozenset(m.upper() for m in methods)
    return selected | {"HEAD"} if "GET" in selected else selected


class Policy:
    """The compiled rule list of one configuration."""

    def __init__(self, rules: tuple[RuleConfig, ...], default_policy: str, case_sensitive: bool = False,
                 trusted_networks: tuple[str, ...] = ()) -> None:
        # re.ASCII: case-insensitive matching folds A-Z and a-z only, never a non-ASCII character (see above)
        flags = re.ASCII if case_sensitive else re.ASCII | re.IGNORECASE
        sets: dict[tuple[str, ...], NetworkSet] = {}  # one memo per distinct list, shared by the rules using it

        def network_set(cidrs: tuple[str, ...] | None) -> NetworkSet | None:
            if cidrs is None:
                return None
            if cidrs not in sets:
                sets[cidrs] = NetworkSet(cidrs) if cidrs else EMPTY
            return sets[cidrs]

        default_trusted = network_set(trusted_networks) or EMPTY
        self._rules = tuple(
            _CompiledRule(
                pattern=re.compile(glob_to_regex(r.path) if r.path is not None
                                   else ascii_folding_regex(str(r.path_regex)), flags),
                methods=rule_methods(r.methods),
                requirement=Requirement(policy=r.policy, rule_index=r.index,
                                        users=frozenset(u.lower() for u in r.users), groups=frozenset(r.groups),
                                        exempt=r.exempt, basic=r.basic,
                                        trusted=network_set(r.trusted_networks) or (
                                            EMPTY if r.trusted_networks is not None else default_trusted)),
                networks=network_set(r.networks), not_networks=network_set(r.not_networks),
            )
            for r in rules
        )
        self._default = Requirement(policy=default_policy, trusted=default_trusted)
        self._by_address = any(r.networks is not None or r.not_networks is not None for r in self._rules)
        self._cache: dict[tuple[str, str], Requirement] = {}
        self._candidates: dict[tuple[str, str], tuple[_CompiledRule, ...]] = {}

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        # Windows mode always matches without regard to case (the configuration refuses both set).
        return cls(config.rules, config.default_policy, config.case_sensitive_paths and not config.paths.windows,
                   config.trusted_networks)

    def match(self, method: str, path: str, client_ip: str = "") -> Requirement:
        """The requirement of the first rule selecting ``method``, the normalised ``path`` and ``client_ip`` (the
        address the trusted-proxy chain gives; "" is in no network)."""
        key = (method, path)
        if self._by_address:
            return self._match_by_address(key, client_ip)
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

    def _match_by_address(self, key: tuple[str, str], client_ip: str) -> Requirement:
        candidates = self._candidates.get(key)
        if candidates is None:
            method, path = key
            selected: list[_CompiledRule] = []
            for rule in self._rules:
                if rule.methods and method not in rule.methods:
                    continue
                if rule.pattern.fullmatch(path):
                    selected.append(rule)
                    if rule.networks is None and rule.not_networks is None:
                        break  # selects every address: no later rule is ever consulted
            candidates = tuple(selected)
            if len(self._candidates) < 4096:
                self._candidates[key] = candidates
        for rule in candidates:
            if rule.admits_address(client_ip):
                return rule.requirement
        return self._default
