"""One of several server processes on one store (issue 13): the small app of ``basic_server.py`` wrapped by
MFAMiddleware on a configuration FILE, served by waitress on a GIVEN port of 127.0.0.1, so that a restarted
server comes back where its clients expect it.

Run as ``python tests/e2e/waitress_server.py CONFIG PORT``: it prints the port on the first line of standard
output (flushed) once it listens, and serves until it is terminated. It shares nothing with the other servers
and the test process but the configuration file and the store it names.
"""

from __future__ import annotations

import sys

import waitress  # type: ignore[import-untyped]
from basic_server import app  # type: ignore[import-not-found]  # this script's folder is first on sys.path

from mfa_middleware import MFAMiddleware


def main(argv: list[str]) -> None:
    config_path, port = argv
    middleware = MFAMiddleware(app, config_path)
    server = waitress.create_server(middleware, host="127.0.0.1", port=int(port), threads=8,
                                    ident="mfa-test")
    try:
        print(server.effective_port, flush=True)
        server.run()
    finally:
        middleware.runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
