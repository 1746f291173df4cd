"""Network sets: the trusted networks and the ``networks``/``not_networks`` conditions of rules, compiled once.

Rules:

- A :class:`NetworkSet` is built at start-up from CIDR strings the configuration has already resolved (aliases
  expanded, errors reported there). It answers :meth:`NetworkSet.contains` for the client address the gate
  computed through the trusted-proxy chain (``core/facts.py``); it never reads a header itself.
- An IPv4-mapped IPv6 address (``::ffff:10.1.2.3``, as a dual-stack socket reports an IPv4 peer) is the IPv4
  address it carries: it is in ``10.0.0.0/8``, so a network means the same on a dual-stack server.
- Anything that is not an address (empty, ``unknown``, a host name) is in no network: a rule that needs a network
  does not select it, a rule with ``not_networks`` does, and no sign-in is made single-factor by it.
- Answers are memoised per address string in a bounded map, so the hot path pays one dict lookup for an address
  it has seen; the map is cleared, not grown, when it is full.
- Sessions made with the primary factor alone because the browser was on a trusted network carry
  :data:`TRUSTED_NETWORK` among their methods; the decision lets such a session through a ``two_factor`` rule only
  while the request comes from a network that rule trusts (from anywhere else: step up to a second factor).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: the method recorded in a session (and an identity) made single-factor by a trusted network
TRUSTED_NETWORK = "trusted_network"

_MEMO_SIZE = 4096

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def canonical_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``address`` (IPv4-mapped IPv6 unwrapped, IPv6 zone dropped), or None."""
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def regulation_key(address: str) -> str:
    """The text failure counters and bans key a client address on: an IPv4 address as is (also when it came
    IPv4-mapped), an IPv6 address as its /64 (one subscriber's or one host's allocation: an attacker who owns a /64
    does not get 2**64 fresh counters), anything else as given (bounded)."""
    ip = canonical_address(address)
    if ip is None:
        return address.strip()[:64] or "unknown"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class NetworkSet:
    """An immutable set of networks with a memoised membership test."""

    __slots__ = ("networks", "_v4", "_v6", "_memo")

    def __init__(self, cidrs: Iterable[str]) -> None:
        networks = tuple(dict.fromkeys(ipaddress.ip_network(c, strict=False) for c in cidrs))
        self.networks: tuple[IPNetwork, ...] = networks
        self._v4 = tuple(n for n in networks if n.version == 4)
        self._v6 = tuple(n for n in networks if n.version == 6)
        self._memo: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"NetworkSet({[str(n) for n in self.networks]!r})"

    def contains(self, address: str) -> bool:
        """Whether ``address`` (the client address text) is in one of the networks."""
        found = self._memo.get(address)
        if found is not None:
            return found
        ip = canonical_address(address)
        if ip is None:
            found = False
        elif ip.version == 4:
            found = any(ip in n for n in self._v4)
        else:
            found = any(ip in n for n in self._v6)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[address] = found
        return found


EMPTY = NetworkSet(())
