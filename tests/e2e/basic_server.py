"""A stand-alone server process for tests: a small app wrapped by MFAMiddleware on a configuration FILE.

Run as ``python tests/e2e/basic_server.py CONFIG``: it serves on 127.0.0.1 on a port the OS picks, prints that
port on the first line of standard output (flushed) and serves until it is terminated. It shares nothing with
the test process but the store named in the configuration.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import make_server

from mfa_middleware import MFAMiddleware


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    identity = environ.get("mfa.identity")
    body = (f"app path={environ['PATH_INFO']} user={environ.get('REMOTE_USER', '-')} "
            f"level={getattr(identity, 'level', '-')} methods={','.join(getattr(identity, 'methods', ()))}")
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


def main(argv: list[str]) -> None:
    (config_path,) = argv
    middleware = MFAMiddleware(app, config_path)
    server = make_server("127.0.0.1", 0, middleware, threaded=True)
    try:
        print(server.server_port, flush=True)
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        middleware.runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
