"""The client address through trusted proxies: which ``X-Forwarded-For`` forms count, and who cannot spoof it.

Proxies write the client as a bare address (nginx ``$remote_addr``, Traefik, uvicorn and gunicorn peers) or as
``address:port`` / ``[v6]:port`` (IIS HttpPlatformHandler, some load balancers). Either form must give the
client's address; anything else gives the peer, never a string the client chose.
"""

from __future__ import annotations

import pytest

from mfa_middleware.core.facts import client_address, parse_networks

TRUSTED = parse_networks(("127.0.0.1", "10.0.0.0/8", "::1"))


@pytest.mark.parametrize(("peer", "forwarded_for", "expected"), [
    pytest.param("127.0.0.1", "198.51.100.7", "198.51.100.7", id="bare-address"),
    pytest.param("127.0.0.1", "198.51.100.7:51861", "198.51.100.7", id="address-and-port-iis"),
    pytest.param("127.0.0.1", "[2001:db8::7]:443", "2001:db8::7", id="bracketed-v6-and-port"),
    pytest.param("127.0.0.1", "[2001:db8::7]", "2001:db8::7", id="bracketed-v6"),
    pytest.param("::1", "2001:db8::7", "2001:db8::7", id="bare-v6"),
    pytest.param("127.0.0.1", "203.0.113.9, 198.51.100.7", "198.51.100.7", id="rightmost-untrusted-hop"),
    pytest.param("127.0.0.1", "198.51.100.7, 10.1.2.3:8080", "198.51.100.7", id="trusted-hop-with-port-skipped"),
    pytest.param("127.0.0.1", "not-an-address", "127.0.0.1", id="garbage-gives-the-peer"),
    pytest.param("127.0.0.1", "198.51.100.7:port", "127.0.0.1", id="bad-port-gives-the-peer"),
    pytest.param("127.0.0.1", "", "127.0.0.1", id="empty"),
    pytest.param("192.0.2.50", "198.51.100.7", "192.0.2.50", id="untrusted-peer-ignored"),
    pytest.param("192.0.2.50", "198.51.100.7:1", "192.0.2.50", id="untrusted-peer-with-port-ignored"),
])
def test_client_address(peer: str, forwarded_for: str, expected: str) -> None:
    assert client_address(peer, forwarded_for, TRUSTED) == expected
