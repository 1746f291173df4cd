"""The app that ``test_trusted_proxies.py`` starts under real servers (not a test module).

``wsgi_app`` (for waitress and gunicorn) and ``asgi_app`` (for uvicorn) answer every path with a page naming
the client address and scheme the middleware settled on, each wrapped by the middleware with ``$MFA_CONFIG``.
Run as a script (``python -m tests.e2e.proxy_app PORT``) it serves ``wsgi_app`` exactly as the README's
waitress setup says: ``waitress.serve(app, ..., **waitress_options(CONFIG))``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware

CONFIG = os.environ["MFA_CONFIG"]


def _page(client_ip: str, scheme: str) -> bytes:
    return f"client={client_ip} scheme={scheme}\n".encode()


def page(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = _page(environ.get("mfa.client_ip", "-"), environ.get("wsgi.url_scheme", "-"))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_page(scope: MutableMapping[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = _page(scope.get("mfa.client_ip", "-"), scope.get("scheme", "-"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


wsgi_app = MFAMiddleware(page, CONFIG)
asgi_app = ASGIMFAMiddleware(asgi_page, CONFIG)


if __name__ == "__main__":
    import waitress  # type: ignore[import-untyped]

    from mfa_middleware.servers import waitress_options

    waitress.serve(wsgi_app, host="127.0.0.1", port=int(sys.argv[1]), threads=4, **waitress_options(CONFIG))
