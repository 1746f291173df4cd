"""A stand-alone server process for lockout tests: an app wrapped by MFAMiddleware on a configuration FILE, served
by waitress with 8 threads, whose password hasher appends a line to LOG for every real secret it checks.

Run as ``python -m tests.e2e.lockout_server CONFIG LOG`` from the repository root: it serves on 127.0.0.1 on a port
the OS picks, prints that port on the first line of standard output (flushed) and serves until terminated. It
shares nothing with the test process but the store named in the configuration and the LOG file.
"""

from __future__ import annotations

import sys

from waitress.server import create_server  # type: ignore[import-untyped, unused-ignore]

from mfa_middleware import MFAMiddleware
from tests.e2e.basic_server import app
from tests.support.lockout import CountingHasher


def main(argv: list[str]) -> None:
    config_path, log = argv
    hasher = CountingHasher(log)
    middleware = MFAMiddleware(app, config_path, password_hasher=hasher)
    hasher.ignored.add(middleware.runtime.passwords.dummy_hash)
    server = create_server(middleware, host="127.0.0.1", port=0, threads=8)
    try:
        print(server.effective_port, flush=True)
        server.run()
    finally:
        middleware.runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
