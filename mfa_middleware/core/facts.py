"""RequestFacts: everything the core needs to know about one request, taken out of environ or scope.

Trust model for the client address: ``X-Forwarded-For`` is read only when the direct peer is one of the
configured trusted proxies, and then from the right, skipping every address that is itself a trusted proxy;
an entry may carry a port (``address:port``, ``[v6]:port``), and an entry that is no address at all ends the
search with the direct peer.
With no trusted proxies configured (the default) the direct peer address is used and the header is ignored,
so a client cannot choose the address that audit rows and lockout see.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RequestFacts(NamedTuple):
    """Immutable, like the core's other values; a NamedTuple because one is built for every request."""

    method: str
    path: str | None  # normalised; None when the path could not be parsed
    query: str
    scheme: str
    client_ip: str
    session_cookie: str | None
    authorization: str | None  # the Authorization header, on a ``basic = true`` rule (else None: nothing reads it)
    wants_json: bool
    wants_html: bool = False


def parse_networks(values: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def is_trusted_peer(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def hop_address(hop: str) -> IPAddress | None:
    """The address in one ``X-Forwarded-For`` entry: bare (``198.51.100.7``, ``2001:db8::7``) or with a port
    (``198.51.100.7:51861``, ``[2001:db8::7]:443``, as IIS HttpPlatformHandler writes it); None for anything
    else."""
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        pass
    if hop.startswith("["):
        host, sep, rest = hop[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
    else:
        host, sep, port = hop.rpartition(":")
        if not sep or ":" in host or not port.isdigit():
            return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The client address, honouring ``X-Forwarded-For`` only through trusted proxies."""
    if not trusted or not forwarded_for or not is_trusted_peer(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    first: IPAddress | None = None
    for hop in reversed(hops):
        ip = hop_address(hop)
        if ip is None:
            return peer
        if not any(ip in net for net in trusted):
            return str(ip)
        first = ip
    return str(first) if first is not None else peer


def wants_json(accept: str, requested_with: str) -> bool:
    """True for API clients: ``X-Requested-With: XMLHttpRequest`` or JSON preferred over HTML."""
    if requested_with.lower() == "xmlhttprequest":
        return True
    accept = accept.lower()
    return "application/json" in accept and "text/html" not in accept
