"""The web authenticator's files at ``<prefix>/authenticator/``, without a browser: each file's type and cache
headers, the CSP an installable app needs (and nothing inline), an allow-list that no path trick gets around, the
site name escaped, the icons real PNGs of the sizes the manifest names, and the enrollment page's link with the
registration URL in the fragment only. The browser side is in ``tests/e2e/test_pwa_authenticator.py``."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from werkzeug.test import Client

from mfa_middleware import MFAMiddleware
from mfa_middleware.factors.push import webapp
from tests.support.mfa import FAST_HASHER, csrf_of, make_config

BASE = "/_mfa/authenticator/"


@pytest.fixture
def mw(tmp_path: Path) -> Iterator[MFAMiddleware]:
    config = make_config(f"sqlite:///{tmp_path / 'mfa.db'}", methods={"enabled": ["push", "totp"]},
                         site_name='Intranet <script>alert("x")</script>')
    made = MFAMiddleware(lambda environ, start_response: [], config, password_hasher=FAST_HASHER)
    made.runtime.store.upgrade()
    try:
        yield made
    finally:
        made.runtime.close()


@pytest.fixture
def client(mw: MFAMiddleware) -> Client:
    return Client(mw)


@pytest.mark.parametrize(("name", "content_type", "cache"), [
    pytest.param("", "text/html; charset=utf-8", "no-store", id="page"),
    pytest.param("app.js", "text/javascript; charset=utf-8", "no-store", id="script"),
    pytest.param("app.css", "text/css; charset=utf-8", "no-store", id="stylesheet"),
    pytest.param("sw.js", "text/javascript; charset=utf-8", "no-cache", id="service-worker"),
    pytest.param("manifest.webmanifest", "application/manifest+json", "no-store", id="manifest"),
    pytest.param("icon.svg", "image/svg+xml", "no-store", id="svg-icon"),
    pytest.param("icon-192.png", "image/png", "no-store", id="png-192"),
    pytest.param("icon-512.png", "image/png", "no-store", id="png-512"),
])
def test_each_file_has_its_type_and_cache_headers(client: Client, name: str, content_type: str, cache: str) -> None:
    response = client.get(BASE + name)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Cache-Control"] == cache
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = response.headers["Content-Security-Policy"]
    assert "manifest-src 'self'" in csp and "worker-src 'self'" in csp and "script-src 'self';" in csp
    assert "unsafe" not in csp and "http" not in csp
    assert response.data


def test_the_service_worker_is_served_inside_its_scope(client: Client) -> None:
    """Its default scope is its folder, which holds the page: no Service-Worker-Allowed header is needed."""
    response = client.get(BASE + "sw.js")
    assert response.request.path.rsplit("/", 1)[0] + "/" == BASE
    assert "Service-Worker-Allowed" not in response.headers


def test_the_folder_without_its_slash_moves_to_it(client: Client) -> None:
    response = client.get(BASE.rstrip("/"))
    assert response.status_code == 308
    assert response.headers["Location"].endswith(BASE)


@pytest.mark.parametrize("path", [
    pytest.param("index.html", id="index-by-name"),
    pytest.param("make_icons.py", id="a-file-of-the-folder-not-listed"),
    pytest.param("nothing.js", id="unknown"),
    pytest.param("..%2fwebapp.py", id="encoded-slash"),
    pytest.param("..%2f__init__.py", id="encoded-slash-init"),
    pytest.param("%2e%2e/webapp.py", id="encoded-dots"),
    pytest.param("..%5cwebapp.py", id="encoded-backslash"),
    pytest.param("web/app.js", id="nested"),
    pytest.param("%2fetc%2fpasswd", id="absolute"),
    pytest.param("app.js%00.png", id="nul"),
    pytest.param("APP.JS", id="case"),
    pytest.param("app.js/", id="trailing-slash"),
])
def test_anything_else_is_not_found(client: Client, path: str) -> None:
    response = client.get(BASE + path)
    assert response.status_code in (400, 404), (path, response.status_code)
    body = response.get_data(as_text=True)
    assert "import " not in body and "root:" not in body and "crypto.subtle" not in body


def test_only_get_is_answered(client: Client) -> None:
    assert client.post(BASE + "app.js").status_code in (404, 405)


def test_the_page_has_nothing_inline_and_nothing_from_elsewhere(client: Client) -> None:
    html = client.get(BASE).get_data(as_text=True)
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="app.js" defer>']
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "nothing loaded from another host"
    assert '<link rel="manifest" href="manifest.webmanifest">' in html
    for label in ("register-url", "device-name"):
        assert f'<label for="{label}">' in html and f'id="{label}"' in html


def test_the_site_name_is_escaped(client: Client) -> None:
    html = client.get(BASE).get_data(as_text=True)
    assert "<script>alert" not in html
    assert "Intranet &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; authenticator" in html
    manifest = json.loads(client.get(BASE + "manifest.webmanifest").data)
    assert manifest["name"] == 'Intranet <script>alert("x")</script> authenticator'


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_manifest_has_what_installation_needs(client: Client) -> None:
    manifest = json.loads(client.get(BASE + "manifest.webmanifest").data)
    assert manifest["short_name"] and manifest["name"]
    assert (manifest["start_url"], manifest["scope"], manifest["display"]) == ("./", "./", "standalone")
    sizes = {icon["sizes"]: icon for icon in manifest["icons"]}
    for size in (192, 512):
        icon = sizes[f"{size}x{size}"]
        assert icon["type"] == "image/png"
        assert png_size(client.get(BASE + icon["src"]).data) == (size, size)
    assert client.get(BASE + sizes["any"]["src"]).headers["Content-Type"] == "image/svg+xml"


def test_the_committed_icons_are_what_make_icons_draws() -> None:
    """The PNGs were made once by ``web/make_icons.py`` (zlib only); this keeps them and the script in step."""
    import importlib.util

    folder = Path(webapp.__file__).with_name("web")
    spec = importlib.util.spec_from_file_location("make_icons", folder / "make_icons.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.png(192) == (folder / "icon-192.png").read_bytes()


def test_the_enrollment_page_links_with_the_url_in_the_fragment(mw: MFAMiddleware) -> None:
    """The registration URL rides in the fragment (``#register=``), which browsers never send to a server."""
    mw.runtime.accounts.add("erin", actor="test", password="pw-erin-1234567")
    client = Client(mw)
    login = client.get("/_mfa/login?next=/")
    client.post("/_mfa/login", data={"username": "erin", "password": "pw-erin-1234567", "next": "/",
                                     "csrf_token": csrf_of(login.get_data(as_text=True))})
    start = client.get("/_mfa/enroll")
    client.post("/_mfa/enroll", data={"action": "start", "method": "push",
                                      "csrf_token": csrf_of(start.get_data(as_text=True))})
    html = client.get("/_mfa/enroll").get_data(as_text=True)
    shown = re.search(r'<code id="registration-url" class="secret">([^<]+)</code>', html)
    link = re.search(r'<a href="([^"]+)"[^>]*>Open the web authenticator</a>', html)
    assert shown and link, html
    path, _, fragment = link.group(1).partition("#")
    assert path == BASE and "?" not in path
    assert fragment.startswith("register=") and unquote(fragment[len("register="):]) == shown.group(1)
