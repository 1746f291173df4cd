"""Issue 7, findings 3, 4, 5 and 9, from the attacker's side.

- 3: forward auth judges the URI nginx or Traefik will forward as it is, so every URI that normalising would change
  is refused (403) whoever asks, and nothing is ever answered with 500.
- 4: an app that percent-decodes the path a second time never gets a path under a stricter rule than the one the
  middleware applied (``/%2561dmin/x`` reaching an app that reads ``/admin/x``): such paths get 400.
- 5: a valid UTF-8 path reaches the app exactly as a server hands it over (WSGI: the bytes as latin-1 text, so
  Flask routes a non-ASCII route right; ASGI: ``path`` as text, ``raw_path`` as bytes); invalid UTF-8, overlong
  forms included, gets 400; nothing gets 500. In process, through waitress and through uvicorn.
- 9: the ``Remote-*`` answer headers of forward auth are printable ASCII whatever the user's data holds, and read
  back exactly with a percent-decoder; a user outside latin-1 gets 200 through a real server, not 500.

Real servers run in threads on 127.0.0.1 (waitress, uvicorn) and are closed at the end of each test; requests are
sent on raw sockets so no client normalises the path first. nginx's side is ``tests/e2e/test_nginx.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from flask import Flask
from werkzeug.test import Client

from mfa_middleware import ASGIMFAMiddleware, MFAMiddleware
from mfa_middleware.adapters.forward_auth import canonical_path, header_value
from mfa_middleware.middleware import ForwardAuthApp
from mfa_middleware.runtime import Runtime
from tests.support.mfa import FAST_HASHER, Clock, make_config
from tests.support.paths import (
    DOUBLE_ENCODED,
    DOUBLE_ENCODED_CASES,
    INVALID_UTF8,
    INVALID_UTF8_CASES,
    NON_CANONICAL,
    NON_CANONICAL_CASES,
    VALID_UTF8,
    Recorder,
    http_scope,
    raw_get,
    readings,
    run_asgi,
    server_path,
    session_cookie,
    uvicorn_server,
    waitress_server,
)

STRICTER = ("/admin/", "/blocked/")  # alice is not in "admins"; /blocked/* is denied to everyone


def under_stricter_rule(path: str) -> bool:
    return any(p.lower().startswith(s) or p.lower() == s.rstrip("/") for p in readings(path) for s in STRICTER)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def wsgi(sqlite_url: str, recorder: Recorder) -> Iterator[MFAMiddleware]:
    mw = MFAMiddleware(recorder.wsgi, make_config(sqlite_url), clock=Clock(), password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    yield mw
    mw.runtime.close()


@pytest.fixture
def asgi(sqlite_url: str, recorder: Recorder) -> Iterator[ASGIMFAMiddleware]:
    mw = ASGIMFAMiddleware(recorder.asgi, make_config(sqlite_url), clock=Clock(), password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    yield mw
    mw.runtime.close()


@pytest.fixture
def forward(sqlite_url: str) -> Iterator[ForwardAuthApp]:
    rt = Runtime(make_config(sqlite_url, trusted_proxies=["127.0.0.1"]), clock=Clock(), password_hasher=FAST_HASHER)
    rt.store.upgrade()
    yield ForwardAuthApp(rt)
    rt.close()


def wsgi_get(app: Any, target: bytes, cookie: str | None = None) -> Any:
    """A request as a WSGI server hands it over: PATH_INFO is ``target`` decoded once (bytes as latin-1)."""
    headers = {"Cookie": cookie} if cookie else {}
    return Client(app, use_cookies=False).get("/", headers=headers, environ_overrides={
        "PATH_INFO": server_path(target), "REQUEST_URI": target.decode("latin-1"), "REMOTE_ADDR": "127.0.0.1"})


def ask(app: ForwardAuthApp, target: bytes, cookie: str | None = None, endpoint: str = "nginx") -> Any:
    """Ask the forward-auth endpoint about ``target`` the way nginx does (X-Original-URI = $request_uri, whose
    bytes a server hands over as latin-1 text)."""
    header = "HTTP_X_ORIGINAL_URI" if endpoint == "nginx" else "HTTP_X_FORWARDED_URI"
    environ = {header: target.decode("latin-1"), "REMOTE_ADDR": "127.0.0.1"}
    headers = {"Accept": "text/html", **({"Cookie": cookie} if cookie else {})}
    return Client(app, use_cookies=False).get(f"/_mfa/auth/{endpoint}", headers=headers, environ_overrides=environ)


# -- finding 3: forward auth refuses every URI that is not canonical ----------------------------------------------


@pytest.mark.parametrize("target", NON_CANONICAL)
@pytest.mark.parametrize("endpoint", ["nginx", "forward"])
def test_forward_auth_refuses_a_non_canonical_uri(forward: ForwardAuthApp, target: bytes, endpoint: str) -> None:
    for cookie in (None, session_cookie(forward.rt)):
        response = ask(forward, target, cookie, endpoint)
        assert response.status_code == 403, (target, cookie is not None, response.status_code, response.text)
        assert "Remote-User" not in response.headers


@pytest.mark.parametrize(("target", "expected"), [
    pytest.param(b"/public/x", "/public/x", id="plain"),
    pytest.param(b"/public/", "/public/", id="trailing-slash"),
    pytest.param(b"/public", "/public", id="no-trailing-slash"),
    pytest.param(b"/public/a%2Eb", "/public/a.b", id="encoded-dot-inside-a-name"),
    pytest.param(b"/public/100%", "/public/100%", id="lone-percent"),
    pytest.param(b"/public/100%25", "/public/100%", id="encoded-percent-not-followed-by-hex"),
    pytest.param(b"/public/a%20b", "/public/a b", id="inner-space"),
    pytest.param(b"/public/caf%C3%A9", "/public/caf\u00c3\u00a9", id="utf8-encoded"),
    pytest.param(b"/public/caf\xc3\xa9", "/public/caf\u00c3\u00a9", id="utf8-raw"),
    pytest.param(b"/public/.well-known", "/public/.well-known", id="leading-dot-name"),
])
def test_canonical_paths_are_decoded_once(target: bytes, expected: str) -> None:
    assert canonical_path(target.decode("latin-1")) == expected


@pytest.mark.parametrize("target", NON_CANONICAL)
def test_canonical_path_refuses_the_corpus(target: bytes) -> None:
    assert canonical_path(target.decode("latin-1")) is None


@pytest.mark.parametrize(("target", "expected"), VALID_UTF8)
def test_forward_auth_passes_valid_utf8(forward: ForwardAuthApp, target: bytes, expected: str) -> None:
    anonymous = ask(forward, target)
    assert anonymous.status_code == 200, anonymous.text
    raw = ask(forward, expected.encode("utf-8"))  # the same path sent unencoded, as nginx passes raw bytes on
    assert raw.status_code == 200, raw.text
    protected = target.replace(b"/public/", b"/docs/")
    assert ask(forward, protected).status_code == 401  # a browser must sign in first
    signed_in = ask(forward, protected, session_cookie(forward.rt))
    assert signed_in.status_code == 200 and signed_in.headers["Remote-User"] == "alice"


# -- finding 4: an app that decodes again never sees a path under a stricter rule ---------------------------------


@pytest.mark.parametrize("target", DOUBLE_ENCODED)
def test_wsgi_app_that_decodes_again_is_not_reached(wsgi: MFAMiddleware, recorder: Recorder, target: bytes) -> None:
    cookie = session_cookie(wsgi.runtime)
    assert under_stricter_rule(server_path(target)), "the corpus entry must be an attack"
    response = wsgi_get(wsgi, target, cookie)
    assert response.status_code == 400, (target, response.status_code, response.text)
    assert recorder.seen == []
    assert wsgi_get(wsgi, b"/hello/x", cookie).status_code == 200  # control: alice passes elsewhere


@pytest.mark.parametrize("target", DOUBLE_ENCODED)
def test_asgi_app_that_decodes_again_is_not_reached(asgi: ASGIMFAMiddleware, recorder: Recorder,
                                                    target: bytes) -> None:
    cookie = session_cookie(asgi.runtime).encode()
    status, _, body = run_asgi(asgi, http_scope(target, [(b"cookie", cookie)]))
    assert status == 400, (target, status, body)
    assert recorder.seen == []


@pytest.mark.parametrize("target", DOUBLE_ENCODED)
def test_forward_auth_refuses_double_encoding(forward: ForwardAuthApp, target: bytes) -> None:
    assert ask(forward, target, session_cookie(forward.rt)).status_code == 403


# -- finding 5: non-ASCII paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "expected"), VALID_UTF8)
def test_wsgi_valid_utf8_reaches_the_app_as_a_server_hands_it_over(wsgi: MFAMiddleware, recorder: Recorder,
                                                                    target: bytes, expected: str) -> None:
    response = Client(wsgi).get(target.decode("ascii"))  # werkzeug's test client decodes the URL itself
    assert response.status_code == 200, response.text
    assert recorder.raw == [expected.encode("utf-8").decode("latin-1")]  # PEP 3333
    assert recorder.seen == [expected]
    normalised = wsgi_get(wsgi, b"//" + target.replace(b"/public/", b"public/./"))
    assert normalised.status_code == 200 and recorder.seen[-1] == expected


@pytest.mark.parametrize("target", INVALID_UTF8)
def test_wsgi_invalid_utf8_is_400(wsgi: MFAMiddleware, recorder: Recorder, target: bytes) -> None:
    response = wsgi_get(wsgi, target)
    assert response.status_code == 400, (response.status_code, response.text)
    assert recorder.seen == []


@pytest.mark.parametrize(("target", "expected"), VALID_UTF8)
def test_asgi_valid_utf8_reaches_the_app_as_a_server_hands_it_over(asgi: ASGIMFAMiddleware, recorder: Recorder,
                                                                    target: bytes, expected: str) -> None:
    status, _, body = run_asgi(asgi, http_scope(target))
    assert status == 200, body
    assert recorder.raw == [(expected, target)]  # unchanged: path as text, raw_path the bytes received
    status, _, body = run_asgi(asgi, http_scope(target.replace(b"/public/", b"/public/./")))
    assert status == 200, body
    path, raw_path = recorder.raw[-1]
    assert path == expected and unquote(raw_path.decode("ascii")) == expected  # re-encoded after normalising


@pytest.mark.parametrize("target", INVALID_UTF8)
def test_asgi_invalid_utf8_is_400(asgi: ASGIMFAMiddleware, recorder: Recorder, target: bytes) -> None:
    status, _, body = run_asgi(asgi, http_scope(target))
    assert status == 400, (status, body)
    assert recorder.seen == []


@pytest.mark.parametrize("target", INVALID_UTF8)
def test_forward_auth_invalid_utf8_is_403(forward: ForwardAuthApp, target: bytes) -> None:
    response = ask(forward, target, session_cookie(forward.rt))
    assert response.status_code == 403, (response.status_code, response.text)


@pytest.mark.parametrize("target", [pytest.param(b"/_mfa/%E7%94%A8", id="cjk"),
                                    pytest.param(b"/_mfa/caf%C3%A9", id="latin")])
def test_non_ascii_page_address_is_404_not_500(wsgi: MFAMiddleware, asgi: ASGIMFAMiddleware,
                                               forward: ForwardAuthApp, target: bytes) -> None:
    assert Client(wsgi).get(target.decode("ascii")).status_code == 404
    assert run_asgi(asgi, http_scope(target))[0] == 404
    assert Client(forward).get(target.decode("ascii")).status_code == 404


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.route("/café/<name>")
    def cafe(name: str) -> str:
        return f"café:{name}"

    @app.route("/用/<name>")
    def yong(name: str) -> str:
        return f"用:{name}"

    @app.route("/<path:rest>")
    def other(rest: str) -> str:
        return f"other:{rest}"

    return app


FLASK_ROUTE_CASES: dict[str, tuple[bytes, str]] = {
    "latin": (b"/caf%C3%A9/x", "café:x"),
    "cjk": (b"/%E7%94%A8/x", "用:x"),
    "raw-utf8": (b"/caf\xc3\xa9/x", "café:x"),
    "normalised": (b"//caf%C3%A9/./y/../x", "café:x"),
    "ascii": (b"/plain/x", "other:plain/x"),
}
FLASK_ROUTES = [pytest.param(*case, id=name) for name, case in FLASK_ROUTE_CASES.items()]


@pytest.mark.parametrize(("target", "body"), FLASK_ROUTES)
def test_flask_routes_a_non_ascii_route_behind_the_middleware(sqlite_url: str, target: bytes, body: str) -> None:
    mw = MFAMiddleware(flask_app(), make_config(sqlite_url), clock=Clock(), password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    try:
        response = wsgi_get(mw, target, session_cookie(mw.runtime))
        assert response.status_code == 200 and response.text == body, (response.status_code, response.text)
    finally:
        mw.runtime.close()


def test_through_waitress(sqlite_url: str) -> None:
    """A real WSGI server: Flask routes non-ASCII paths right behind the middleware, invalid UTF-8 is 400, the
    double-encoded and non-canonical corpus never reaches an admin or blocked route, and nothing is a 500."""
    mw = MFAMiddleware(flask_app(), make_config(sqlite_url, trusted_proxies=["127.0.0.1"]), clock=Clock(),
                       password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    cookie = session_cookie(mw.runtime)
    try:
        with waitress_server(mw) as port:
            for target, body in FLASK_ROUTE_CASES.values():
                reply = raw_get(port, target, {"Cookie": cookie})
                if not target.isascii():  # waitress answers raw non-ASCII bytes itself ("Bad URI")
                    assert reply.status == 400 and b"waitress" in reply.body, (target, reply)
                    continue
                assert (reply.status, reply.body.decode()) == (200, body), (target, reply)
            for target in INVALID_UTF8_CASES.values():
                reply = raw_get(port, target, {"Cookie": cookie})
                assert reply.status == 400, (target, reply)
            for target in [*DOUBLE_ENCODED_CASES.values(), *NON_CANONICAL_CASES.values()]:
                if b"\\" in target:
                    continue
                reply = raw_get(port, target, {"Cookie": cookie})
                assert reply.status != 500, (target, reply)
                if reply.status == 200:
                    served = "/" + reply.body.decode().partition(":")[2]
                    assert not under_stricter_rule(served), (target, reply)
    finally:
        mw.runtime.close()


def test_through_uvicorn(sqlite_url: str) -> None:
    """A real ASGI server: Starlette routes a non-ASCII route right behind the middleware, invalid UTF-8 is 400,
    and nothing is a 500."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def cafe(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"café:{request.path_params['name']}")

    async def other(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"other:{request.path_params['rest']}")

    app = Starlette(routes=[Route("/café/{name}", cafe), Route("/{rest:path}", other)])
    mw = ASGIMFAMiddleware(app, make_config(sqlite_url), clock=Clock(), password_hasher=FAST_HASHER)
    mw.runtime.store.upgrade()
    cookie = session_cookie(mw.runtime)
    try:
        with uvicorn_server(mw) as port:
            for target, body in [(b"/caf%C3%A9/x", "café:x"), (b"//caf%C3%A9/./y/../x", "café:x"),
                                 (b"/public/%E7%94%A8", "other:public/用")]:
                reply = raw_get(port, target, {"Cookie": cookie})
                assert (reply.status, reply.body.decode()) == (200, body), (target, reply)
            for target in INVALID_UTF8_CASES.values():
                reply = raw_get(port, target, {"Cookie": cookie})
                assert reply.status == 400, (target, reply)
            for target in [*DOUBLE_ENCODED_CASES.values(), *NON_CANONICAL_CASES.values()]:
                if b"\\" in target:
                    continue
                reply = raw_get(port, target, {"Cookie": cookie})
                assert reply.status != 500, (target, reply)
                if reply.status == 200:
                    served = "/" + reply.body.decode().partition(":")[2]
                    assert not under_stricter_rule(served), (target, reply)
    finally:
        mw.runtime.close()


# -- finding 9: Remote-* headers from user data ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "sent"), [
    pytest.param("alice", "alice", id="plain"),
    pytest.param("alice@example.com", "alice@example.com", id="email"),
    pytest.param("Alice Smith", "Alice Smith", id="inner-space"),
    pytest.param("zofia.michał@example.com", "zofia.micha%C5%82@example.com", id="outside-latin-1"),
    pytest.param("Åsa Ågren", "%C3%85sa %C3%85gren", id="latin-1"),
    pytest.param("张伟", "%E5%BC%A0%E4%BC%9F", id="cjk"),
    pytest.param("a\r\nSet-Cookie: x=1", "a%0D%0ASet-Cookie: x=1", id="crlf"),
    pytest.param("100%", "100%25", id="percent"),
    pytest.param("a,b", "a%2Cb", id="comma"),
    pytest.param(" padded ", "%20padded%20", id="edge-spaces"),
    pytest.param("tab\there\x00\x7f", "tab%09here%00%7F", id="controls"),
    pytest.param("", "", id="empty"),
])
def test_header_value(value: str, sent: str) -> None:
    assert header_value(value) == sent
    assert unquote(sent) == value


EMAIL = "zofia.michał@example.com"
NAME = "Zofia Michał\r\nX-Injected: 1"
GROUPS = ("zespół", "a,b", "admins")


def test_forward_auth_encodes_every_remote_header(forward: ForwardAuthApp) -> None:
    cookie = session_cookie(forward.rt, "zofia", GROUPS, EMAIL, NAME)
    response = ask(forward, b"/docs/x", cookie)
    assert response.status_code == 200, response.text
    values = {k: response.headers[k] for k in ("Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name")}
    for value in values.values():
        assert value.isascii() and value.isprintable(), values
    assert unquote(values["Remote-Email"]) == EMAIL
    assert unquote(values["Remote-Name"]) == NAME
    assert [unquote(g) for g in values["Remote-Groups"].split(",")] == list(GROUPS)
    assert values["Remote-User"] == "zofia"


def test_forward_auth_user_outside_latin_1_through_waitress(forward: ForwardAuthApp) -> None:
    cookie = session_cookie(forward.rt, "zofia", GROUPS, EMAIL, NAME)
    with waitress_server(forward) as port:
        reply = raw_get(port, b"/_mfa/auth/nginx", {"X-Original-URI": "/docs/x", "Cookie": cookie})
    assert reply.status == 200, reply
    assert unquote(reply.headers["remote-email"]) == EMAIL
    assert unquote(reply.headers["remote-name"]) == NAME
    assert "x-injected" not in reply.headers
