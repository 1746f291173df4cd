"""Shared by the path attack tests: the request corpora, raw-socket HTTP, the apps that read paths their own way,
real servers in threads, and the interpretations a path may get behind the middleware."""

from __future__ import annotations

import asyncio
import posixpath
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import pytest

from mfa_middleware.core.tokens import Session
from mfa_middleware.runtime import Runtime
from tests.support.servers import free_port

# -- corpora (raw request-target paths, as a client writes them on the request line) ----------------------------

#: Finding 3: URIs that a rule sees as one path and a server behind a proxy may read as another. Every one must be
#: refused by forward auth (403) and never reach the upstream.
NON_CANONICAL_CASES: dict[str, bytes] = {
    "dotdot-semicolon": b"/blocked/..;/public/x",
    "admin-dotdot-semicolon": b"/admin/..;/public/x",
    "dotdot": b"/blocked/../public/x",
    "encoded-dotdot": b"/blocked/%2e%2e/public/x",
    "encoded-dotdot-slash": b"/blocked/%2E%2E%2Fpublic/x",
    "half-encoded-dotdot": b"/blocked/.%2e/public/x",
    "dotdot-into-deny": b"/public/../blocked/x",
    "dot": b"/public/./x",
    "trailing-dot-segment": b"/public/x/.",
    "double-slash": b"//public/x",
    "inner-double-slash": b"/public//x",
    "semicolon-param": b"/public;x=1/x",
    "trailing-semicolon-param": b"/public/x;jsessionid=1",
    "encoded-slash": b"/public%2Fx",
    "encoded-slash-lower": b"/public%2fx",
    "encoded-backslash": b"/public%5Cx",
    "backslash": b"/public\\..\\blocked\\x",
    "dotdot-encoded-backslash": b"/public/..%5Cblocked",
    "into-pages-encoded": b"/admin/..%2F_mfa/login",
    "from-pages-prefix": b"/_mfa/../blocked/x",
    "from-pages-prefix-semicolon": b"/_mfa/..;/blocked/x",
    "from-pages-prefix-encoded": b"/_mfa/%2e%2e/blocked/x",
    "into-pages-prefix": b"/blocked/x/../../_mfa/login",
    "double-encoded-letter": b"/%2562locked/x",
    "double-encoded-dotdot": b"/public/%252e%252e/blocked/x",
    "iis-u-encoding": b"/public/%u002e%u002e/blocked/x",
    "nul": b"/public/%00/x",
    "crlf": b"/public/%0d%0aX:y",
    "encoded-hash": b"/blocked%23/x",
    "encoded-question-mark": b"/blocked%3F/x",
    "windows-trailing-dot": b"/blocked./x",
    "windows-trailing-space": b"/blocked%20/x",
    "fullwidth-solidus": b"/public/%EF%BC%8F..%EF%BC%8Fblocked",
    "fullwidth-letter": b"/%EF%BD%82locked/x",
    "invalid-utf8": b"/public/%FF",
    "overlong-slash": b"/public/%C0%AF",
    "surrogate": b"/public/%ED%A0%80",
    "latin-1-byte": b"/public/caf%E9",
}
NON_CANONICAL = [pytest.param(target, id=name) for name, target in NON_CANONICAL_CASES.items()]

#: Finding 4: after the server's one decoding, these still hold percent-encoding; an app that decodes again sees a
#: path under a stricter rule (alice is not an admin; /blocked/* is denied to everyone).
DOUBLE_ENCODED_CASES: dict[str, bytes] = {
    "letter-admin": b"/%2561dmin/x",
    "letter-blocked": b"/%2562locked/x",
    "encoded-percent-and-digits": b"/%25%36%31dmin/x",
    "triple": b"/%252561dmin/x",
    "encoded-slash": b"/blocked%252fx",
    "dotdot": b"/x/%252e%252e/blocked/y",
    "iis-u": b"/%u0061dmin/x",
    "iis-u-encoded": b"/%25u0062locked/x",
}
DOUBLE_ENCODED = [pytest.param(target, id=name) for name, target in DOUBLE_ENCODED_CASES.items()]

#: Finding 5: valid UTF-8 (reaches the app as a server hands it over) ...
VALID_UTF8_CASES: dict[str, tuple[bytes, str]] = {
    "latin-letter": (b"/public/caf%C3%A9", "/public/caf\u00e9"),
    "cjk": (b"/public/%E7%94%A8", "/public/\u7528"),
    "astral": (b"/public/%F0%9F%94%91", "/public/\U0001f511"),
    "cyrillic": (b"/public/%D0%BA%D0%BB%D1%8E%D1%87", "/public/\u043a\u043b\u044e\u0447"),
    "replacement-character-itself": (b"/public/%EF%BF%BD", "/public/\ufffd"),
}
VALID_UTF8 = [pytest.param(*case, id=name) for name, case in VALID_UTF8_CASES.items()]
#: ... and not (400, never 500)
INVALID_UTF8_CASES: dict[str, bytes] = {
    "ff": b"/public/%FF",
    "overlong-slash": b"/public/%C0%AF",
    "overlong-3-bytes": b"/public/%E0%80%AF",
    "surrogate": b"/public/%ED%A0%80",
    "above-10ffff": b"/public/%F4%90%80%80",
    "latin-1": b"/public/caf%E9",
    "truncated": b"/public/%C3",
    "pages-prefix": b"/_mfa/%FF",
    "protected": b"/x/%FF",
}
INVALID_UTF8 = [pytest.param(target, id=name) for name, target in INVALID_UTF8_CASES.items()]


# -- raw HTTP --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_get(port: int, target: bytes, headers: dict[str, str] | None = None, timeout: float = 10.0) -> RawReply:
    """Send ``GET target`` exactly as given (no client-side normalisation) and read the whole answer."""
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if "chunked" in parsed.get("transfer-encoding", ""):
        body = dechunk(body)
    return RawReply(int(status_line.split(" ")[1]), parsed, body)


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def server_path(target: bytes) -> str:
    """What a WSGI server puts in PATH_INFO for ``target``: the path decoded once, bytes as latin-1 text."""
    return unquote_to_bytes(target.partition(b"?")[0]).decode("latin-1")


def http_scope(target: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> dict[str, Any]:
    """The scope uvicorn builds for ``target`` (``path`` decoded with U+FFFD for invalid UTF-8)."""
    raw_path, _, query = target.partition(b"?")
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path, "query_string": query,
            "root_path": "", "headers": [(b"host", b"localhost"), *headers], "client": ("127.0.0.1", 5000),
            "server": ("localhost", 80)}


def run_asgi(app: Any, scope: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}, body


# -- identities --------------------------------------------------------------------------------------------------


def session_cookie(rt: Runtime, username: str = "alice", groups: tuple[str, ...] = (), email: str | None = None,
                   name: str | None = None) -> str:
    """A level-2 session cookie (password and second factor done) minted with the runtime's keys."""
    now = rt.clock()
    token = rt.codec.dump_session(Session("sid-" + username, username, groups, 2, ("forms", "totp"), now, now, now,
                                          now, False, email=email, name=name))
    return f"mfa_session={token}"


# -- apps that read the path their own way -------------------------------------------------------------------------


class Recorder:
    """A WSGI and ASGI app that records the path it was handed and answers 200 "app:<path>"."""

    def __init__(self) -> None:
        self.seen: list[str] = []  # the path as text (WSGI: PATH_INFO decoded from latin-1 bytes as UTF-8)
        self.raw: list[Any] = []  # WSGI: PATH_INFO as given; ASGI: (path, raw_path)

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        info = environ["PATH_INFO"]
        self.raw.append(info)
        text = info.encode("latin-1").decode("utf-8")  # PEP 3333: must not fail for a path that reached the app
        self.seen.append(text)
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"app:" + text.encode("utf-8")]

    async def asgi(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        self.raw.append((scope["path"], scope.get("raw_path")))
        self.seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"app:" + scope["path"].encode("utf-8")})


# -- the ways a path may be read behind the middleware or behind a proxy -------------------------------------------


def reference_normalise(path: str) -> str:
    """A lenient server's reading: ``\\`` is ``/``, ``;params`` cut, slashes merged, dot segments resolved, trailing
    dots and spaces dropped from segments (Windows)."""
    path = path.replace("\\", "/")
    segments = [s if s in (".", "..") else s.rstrip(". ") for s in (p.split(";", 1)[0] for p in path.split("/"))]
    resolved = posixpath.normpath("/" + "/".join(s for s in segments if s))
    return "/" + resolved.lstrip("/")


def readings(path: str) -> set[str]:
    """Every path a server or app behind the middleware may take ``path`` (text) to be: as it is, cut at ``?`` or
    ``#``, decoded again (also IIS's ``%uXXXX``), folded to compatibility forms (NFKC), and normalised leniently."""
    out: set[str] = set()
    for base in (path, re.split(r"[?#]", path, maxsplit=1)[0]):
        again = unquote(base, errors="replace")
        iis = re.sub(r"%u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), again)
        for variant in (base, again, iis, unquote(iis, errors="replace")):
            for form in (variant, unicodedata.normalize("NFKC", variant)):
                out.add(form)
                out.add(reference_normalise(form))
    return out


def nginx_readings(target: bytes) -> set[str]:
    """What nginx (location matching: decode once, merge slashes, resolve dots) and the upstream behind it (the
    raw URI, decoded once or more) may take a raw request target to be."""
    raw_path = target.partition(b"?")[0]
    once = unquote_to_bytes(raw_path).decode("utf-8", "replace")
    return readings(once) | {reference_normalise(raw_path.decode("latin-1"))}


# -- real servers in threads -------------------------------------------------------------------------------------


@contextmanager
def waitress_server(app: Any) -> Iterator[int]:
    """waitress 3 on 127.0.0.1, an OS-chosen port, in a thread; closed and joined on exit."""
    from waitress import create_server  # type: ignore[import-untyped]

    server = create_server(app, host="127.0.0.1", port=0, threads=2, clear_untrusted_proxy_headers=False)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield int(server.effective_port)
    finally:
        server.close()
        server.task_dispatcher.shutdown()
        thread.join(timeout=10)


@contextmanager
def uvicorn_server(app: Any) -> Iterator[int]:
    """uvicorn (h11) on 127.0.0.1 in a thread; ready within 10 s, asked to exit and joined on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                                           http="h11"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
