"""The web authenticator's files (``web/``), served at ``<prefix>/authenticator/`` by :class:`~.PushFactor`'s
public routes: an installable web app that is a device of the push protocol (``docs/push-protocol.md``).

Rules:

- **An allow-list, not a folder.** Only the names in :data:`FILES` are served, looked up in a dict: no path is
  joined, so ``..``, ``%2f``, backslashes or absolute paths can only miss (404). The files are read once, at import.
- **Nothing inline, nothing from elsewhere.** The pages' CSP (no inline script or style, ``'self'`` only) is kept,
  plus what an installable app needs: ``manifest-src 'self'`` and ``worker-src 'self'`` (the pages' CSP has
  ``default-src 'none'``, which would refuse the manifest). The key never leaves the browser, so the files hold no
  secret; the site's name is the only value filled in (HTML-escaped in the page, JSON-encoded in the manifest).
- **Fresh code.** The service worker is served from inside its scope with a JavaScript type and
  ``Cache-Control: no-cache`` (browsers check it for updates on each start); every other file is ``no-store``
  (the service worker keeps its own copy for offline start, network first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from markupsafe import escape
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Request, Response

from ...web.headers import PERMISSIONS_POLICY_WITH_CAMERA

#: the authenticator's CSP: the pages' policy plus the manifest and the service worker
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "manifest-src 'self'; worker-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SITE_NAME = "{{site_name}}"


@dataclass(frozen=True, slots=True)
class WebFile:
    name: str
    content_type: str
    cache: str = "no-store"


#: what may be asked for (the empty name is the folder itself: the app's page)
FILES: dict[str, WebFile] = {f.name: f for f in (
    WebFile("", "text/html; charset=utf-8"),
    WebFile("app.js", "text/javascript; charset=utf-8"),
    WebFile("app.css", "text/css; charset=utf-8"),
    WebFile("sw.js", "text/javascript; charset=utf-8", "no-cache"),
    WebFile("manifest.webmanifest", "application/manifest+json"),
    WebFile("icon.svg", "image/svg+xml"),
    WebFile("icon-192.png", "image/png"),
    WebFile("icon-512.png", "image/png"),
)}
_FOLDER = resources.files(__package__) / "web"
_CONTENT: dict[str, bytes] = {name: (_FOLDER / (name or "index.html")).read_bytes() for name in FILES}


def _manifest(site_name: str) -> bytes:
    data = json.loads(_CONTENT["manifest.webmanifest"])
    data["name"] = f"{site_name} authenticator"[:100]
    return json.dumps(data, indent=2).encode("utf-8")


def serve(request: Request, filename: str, site_name: str) -> Response:
    """One of :data:`FILES`, or :class:`NotFound`. ``<prefix>/authenticator`` (no slash) is sent to the folder, so
    that the page's relative addresses (and the service worker's scope) resolve inside it."""
    found = FILES.get(filename)
    if found is None:
        raise NotFound()
    if not filename and not request.path.endswith("/"):
        return Response("", status=308, headers={"Location": request.root_path + request.path + "/",
                                                 "Cache-Control": "no-store"})
    body = _CONTENT[filename]
    if filename == "":
        body = body.replace(SITE_NAME.encode(), str(escape(site_name)).encode("utf-8"))
    elif filename == "manifest.webmanifest":
        body = _manifest(site_name)
    return Response(body, content_type=found.content_type,
                    headers={"Cache-Control": found.cache, "Content-Security-Policy": CSP,
                             "Permissions-Policy": PERMISSIONS_POLICY_WITH_CAMERA,  # QR scanning
                             "X-Content-Type-Options": "nosniff"})


__all__ = ["CSP", "FILES", "WebFile", "serve"]
