"""Property (issue 7): for any byte string as a raw path, the middleware never answers 500, and never passes a
request whose meaning under a second decoding, under nginx's own normalisation or under a lenient server's
reading falls under a stricter rule than the one it applied.

The raw paths are built from tokens that matter to path parsing (dots, slashes, encoded and double-encoded forms,
``;``, ``\\``, ``#``, ``?``, UTF-8 valid and not, compatibility forms) mixed with arbitrary bytes. Each one is sent
through the WSGI adapter, the ASGI adapter and the forward-auth endpoint, once anonymously and once as ``alice``
(signed in with two factors, not an admin). The rules are ``tests.support.mfa.DEFAULT_RULES``: ``/public/*``
bypass, ``/admin/*`` admins only, ``/blocked/*`` denied, everything else two factors.

- Anonymous and passed: every reading of the path must fall under a bypass rule (or the sign-in pages).
- ``alice`` and passed: no reading may fall under a rule that refuses her (deny, or a group she is not in).

For WSGI and ASGI the readings are of the path the app received (``PATH_INFO``; ``path`` and ``raw_path``); for
forward auth, of the raw URI that nginx would forward (see ``tests.support.paths.readings``/``nginx_readings``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.core.policy import Policy
from mfa_middleware.runtime import Runtime
from tests.support.mfa import FAST_HASHER, Clock, make_config
from tests.support.paths import (
    Recorder,
    http_scope,
    nginx_readings,
    readings,
    run_asgi,
    server_path,
    session_cookie,
)

TOKENS = [b"/", b"/", b"/", b".", b"..", b"%2e", b"%2E", b"%2f", b"%2F", b"%5c", b"\\", b";", b";x=1", b"%3b",
          b"%25", b"%2525", b"%252e", b"%252f", b"%u002e", b"%u0061", b"%61", b"%2561", b"%", b"%0", b"#", b"%23",
          b"?", b"%3f", b"%00", b"%0a", b"%20", b" ", b"public", b"admin", b"blocked", b"_mfa", b"auth", b"PUBLIC",
          b"Admin", b"x", b"%C3%A9", b"\xc3\xa9", b"%FF", b"\xff", b"%C0%AF", b"%E0%80%AF", b"%EF%BC%8F",
          b"%EF%BD%81", b"%E2%80%A4", b"%E2%80%A5", b"~", b"%7e"]
raw_paths = st.builds(lambda lead, parts: lead + b"".join(parts), st.sampled_from([b"/", b"/", b"/", b""]),
                      st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=3)), max_size=12))

# Printable ASCII as it is; everything else percent-encoded (how a client puts other bytes on the request line).
_VISIBLE = bytes(range(0x21, 0x7F)).decode("ascii")


@dataclass
class Apps:
    wsgi: MFAMiddleware
    asgi: ASGIMFAMiddleware
    forward: ForwardAuthApp
    recorder: Recorder
    policy: Policy
    cookie: str


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    database = f"sqlite:///{Path(tmp_path_factory.mktemp('paths')) / 'mfa.db'}"
    recorder = Recorder()
    wsgi = MFAMiddleware(recorder.wsgi, make_config(database), clock=Clock(), password_hasher=FAST_HASHER)
    wsgi.runtime.store.upgrade()
    asgi = ASGIMFAMiddleware(recorder.asgi, make_config(database), clock=Clock(), password_hasher=FAST_HASHER)
    rt = Runtime(make_config(database, trusted_proxies=["127.0.0.1"]), clock=Clock(), password_hasher=FAST_HASHER)
    try:
        yield Apps(wsgi, asgi, ForwardAuthApp(rt), recorder, wsgi.runtime.policy, session_cookie(wsgi.runtime))
    finally:
        for runtime in (wsgi.runtime, asgi.runtime, rt):
            runtime.close()


def check_passed(apps: Apps, signed_in: bool, seen: set[str], what: str) -> None:
    for reading in seen:
        if reading == "/_mfa" or reading.startswith("/_mfa/"):
            continue
        requirement = apps.policy.match("GET", reading)
        if signed_in:
            assert requirement.policy != "deny" and requirement.admits("alice", ()), \
                f"{what}: alice passed, but {reading!r} falls under {requirement}"
        else:
            assert requirement.policy == "bypass", \
                f"{what}: passed anonymously, but {reading!r} falls under {requirement}"


def one_request(apps: Apps, target: bytes, signed_in: bool) -> None:
    cookie = apps.cookie if signed_in else None

    # WSGI: PATH_INFO as a server hands it over.
    apps.recorder.seen.clear()
    response = Client(apps.wsgi, use_cookies=False).get(
        "/", headers={"Cookie": cookie} if cookie else {},
        environ_overrides={"PATH_INFO": server_path(target), "REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code != 500, (target, response.text)
    if apps.recorder.seen:
        check_passed(apps, signed_in, readings(apps.recorder.seen[0]), f"WSGI {target!r}")

    # ASGI: the scope uvicorn builds (non-ASCII bytes arrive percent-encoded on the request line).
    apps.recorder.seen.clear()
    apps.recorder.raw.clear()
    ascii_target = quote_from_bytes(target, safe=_VISIBLE).encode("ascii")
    status, _, body = run_asgi(apps.asgi, http_scope(ascii_target, [(b"cookie", cookie.encode())] if cookie else []))
    assert status != 500, (target, body)
    if apps.recorder.seen:
        path, raw_path = apps.recorder.raw[0]
        seen = readings(path) | readings(unquote(raw_path.decode("ascii"), errors="replace"))
        check_passed(apps, signed_in, seen, f"ASGI {ascii_target!r}")

    # Forward auth: X-Original-URI is $request_uri as nginx got it (no controls or spaces on a request line).
    if any(b < 0x21 or b == 0x7F for b in target) or not target.startswith(b"/"):
        return
    response = Client(apps.forward, use_cookies=False).get(
        "/_mfa/auth/nginx", headers={"Accept": "text/html", **({"Cookie": cookie} if cookie else {})},
        environ_overrides={"HTTP_X_ORIGINAL_URI": target.decode("latin-1"), "REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code in (200, 401, 403), (target, response.status_code, response.text)
    if response.status_code == 200:
        check_passed(apps, signed_in, nginx_readings(target), f"forward auth {target!r}")


@settings(max_examples=250, deadline=None, database=None)
@given(target=raw_paths)
@example(target=b"/admin/..;/public/x")
@example(target=b"/blocked/%2e%2e/public/x")
@example(target=b"/%2561dmin/x")
@example(target=b"/%2562locked/x")
@example(target=b"/public/caf%C3%A9")
@example(target=b"/public/%FF")
@example(target=b"/public/%C0%AF")
@example(target=b"/_mfa/%E7%94%A8")
@example(target=b"/public/%EF%BC%8F..%EF%BC%8Fblocked")
@example(target=b"/blocked./x")
def test_no_raw_path_is_a_500_or_a_way_past_a_stricter_rule(apps: Apps, target: bytes) -> None:
    for signed_in in (False, True):
        one_request(apps, target, signed_in)


def test_the_readings_catch_the_known_attacks() -> None:
    """The oracle itself: each attack's readings include the stricter path it aims at."""
    cases: dict[bytes, str] = {b"/admin/..;/public/x": "/public/x", b"/%2561dmin/x": "/admin/x"}
    for target, aimed in cases.items():
        assert aimed in nginx_readings(target) or aimed in readings(server_path(target)), target
    assert "/admin/x" in readings("/%61dmin/x")
    assert "/blocked" in readings("/public/\uff0f..\uff0fblocked")
    assert "/admin/x" in readings("/admin./x")
