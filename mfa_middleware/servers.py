"""What each WSGI/ASGI server must be told so that ``trusted_proxies`` works behind it.

The middleware believes ``X-Forwarded-For`` and ``X-Forwarded-Proto`` only when the direct peer is listed in
``trusted_proxies`` (see :mod:`mfa_middleware.core.facts`). A server can defeat that in two ways: by deleting
the headers before the middleware sees them (then every client looks like the proxy: one client's failed
sign-ins lock out everyone behind it, and HTTPS never gives ``Secure`` cookies), or by believing them from a
peer the configuration does not trust (then a client chooses its own address). Per server:

- **waitress** 3 deletes ``X-Forwarded-*`` and ``Forwarded`` from every request unless told otherwise
  (``clear_untrusted_proxy_headers``), and can itself trust exactly one address or ``"*"``
  (``trusted_proxy``). :func:`waitress_options` chooses:

  * no ``trusted_proxies``: nothing (waitress keeps deleting the headers; nobody is trusted anyway);
  * exactly one address: waitress's own check on that address, for ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` only, one hop. waitress then rewrites ``REMOTE_ADDR`` and ``wsgi.url_scheme`` for
    that peer and deletes the headers from everyone else, so the app behind the middleware is protected as
    well, and the middleware sees the client as its peer and the scheme already made ``https``;
  * a network or several entries: waitress cannot express it, and ``trusted_proxy = "*"`` would let any
    client choose its address. So waitress is told to leave the headers alone
    (``clear_untrusted_proxy_headers = False``) and the middleware's own check decides, with networks and
    chains. The app then receives the headers as the client sent them; it should read the client address from
    ``environ["mfa.client_ip"]`` (the middleware also makes ``wsgi.url_scheme`` ``https`` through a trusted
    proxy) rather than trust ``X-Forwarded-*`` itself.

- **waitress under ``mfa-middleware serve``** (forward auth) always uses the second mode: the authorization
  endpoints must see the proxy itself as their peer (any other peer gets 403), so waitress must not rewrite
  ``REMOTE_ADDR``; nothing but our own app runs behind it. See :data:`FORWARD_AUTH_WAITRESS_OPTIONS`.
- **gunicorn** never deletes or rewrites ``X-Forwarded-For``; it turns ``X-Forwarded-Proto`` into
  ``wsgi.url_scheme`` for peers in ``--forwarded-allow-ips`` (default ``127.0.0.1,::1``). Nothing is needed
  for the middleware; give ``--forwarded-allow-ips`` the same addresses as ``trusted_proxies`` so the two
  agree (and so a local process that is not your proxy cannot make a request look like HTTPS).
- **uvicorn** (``--proxy-headers``, on by default) rewrites ``scope["client"]`` and ``scope["scheme"]`` from
  ``X-Forwarded-For``/``-Proto`` for peers in ``--forwarded-allow-ips`` (default ``127.0.0.1``), before the
  middleware runs. The middleware then sees the client as its peer, which it does not trust, so it does not
  read the header a second time, and the scheme is already ``https``: the result is the same as with
  ``--no-proxy-headers``, where the middleware's own check does the work. ``--forwarded-allow-ips`` must list
  no more than ``trusted_proxies`` (never ``"*"`` on a reachable port): uvicorn's rewrite happens first, and
  the middleware cannot tell a rewritten address from a real one.
- **IIS** (HttpPlatformHandler in front of waitress) connects from 127.0.0.1 and sends the client as
  ``address:port`` in ``X-Forwarded-For``; list ``127.0.0.1`` in ``trusted_proxies`` and start waitress with
  the options of the one-address mode (``samples/iis/web.config.httpplatform``). wfastcgi is no proxy: IIS
  hands over the client address itself.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Final

from .config import Config, load_config

#: waitress options for ``mfa-middleware serve``: leave ``X-Forwarded-*`` and ``REMOTE_ADDR`` as they arrive;
#: the forward-auth app checks the peer against ``trusted_proxies`` itself.
FORWARD_AUTH_WAITRESS_OPTIONS: Final = {"clear_untrusted_proxy_headers": False}
#: the headers waitress is told to believe from the one trusted proxy (never ``X-Forwarded-Host``: a proxy that
#: does not set it passes the client's own on, and waitress would make it the ``Host``).
WAITRESS_TRUSTED_HEADERS: Final = frozenset({"x-forwarded-for", "x-forwarded-proto"})


def single_proxy_address(config: Config) -> str | None:
    """The one address ``trusted_proxies`` lists (a bare address or a /32, /128 network), or None."""
    if len(config.trusted_proxies) != 1:
        return None
    network = ipaddress.ip_network(config.trusted_proxies[0], strict=False)
    if network.num_addresses != 1:
        return None
    return str(network.network_address)


def waitress_options(config: Config | str | os.PathLike[str]) -> dict[str, Any]:
    """Keyword arguments for ``waitress.serve(app, ...)`` that make ``trusted_proxies`` work (module docstring):
    ``waitress.serve(app, host="127.0.0.1", port=8000, **waitress_options("mfa.toml"))``."""
    cfg = config if isinstance(config, Config) else load_config(config)
    if not cfg.trusted_proxies:
        return {}
    address = single_proxy_address(cfg)
    if address is None:
        return dict(FORWARD_AUTH_WAITRESS_OPTIONS)
    return {"trusted_proxy": address, "trusted_proxy_count": 1,
            "trusted_proxy_headers": set(WAITRESS_TRUSTED_HEADERS), "clear_untrusted_proxy_headers": True}


__all__ = ["FORWARD_AUTH_WAITRESS_OPTIONS", "single_proxy_address", "waitress_options"]
