"""Security headers on every response we serve ourselves, set in one place.

Every answer that does not come from the protected app goes through :func:`secure_headers`: the sign-in pages and
each method's routes (:class:`mfa_middleware.pages.app.PagesApp`, their 503 when the store is down and their 500
when a page fails included), static files, the web authenticator, the device API's JSON, and every
:class:`mfa_middleware.adapters.gate.Reply` (redirects, 401/403/400/503 pages and JSON, health and readiness,
forward-auth answers). Rules:

- **Added when missing, never clobbered.** A response that sets its own value keeps it: the web authenticator's
  CSP adds ``manifest-src`` and ``worker-src``, and its ``Permissions-Policy`` allows the camera (QR scanning);
  static files keep their ``Cache-Control: public``.
- **Content-Security-Policy**: :data:`CONTENT_SECURITY_POLICY` (``default-src 'none'``, ``'self'`` for scripts,
  styles, images, fetches and forms; no ``'unsafe-inline'``, no ``'unsafe-eval'``, nothing from another origin;
  ``frame-ancestors 'none'``, ``base-uri 'none'``). A response's own CSP without ``frame-ancestors`` gets
  ``frame-ancestors 'none'`` appended: no page of ours may be framed (clickjacking of "Approve").
- **Cache-Control**: ``no-store`` unless the response says otherwise, and ``no-store`` whatever it says when it
  sets a cookie (with ``Vary: Cookie``): a shared cache must never keep a session or a secret.
- ``Referrer-Policy: no-referrer`` (a ``next=`` or a token in a URL never leaves in a Referer),
  ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` (browsers without ``frame-ancestors``),
  ``Cross-Origin-Opener-Policy: same-origin``, and :data:`PERMISSIONS_POLICY` (no camera, microphone, location,
  payment, USB, HID, serial, screen capture; WebAuthn keeps its ``'self'`` default).

Cost: one pass over the header list; only our own answers pay it, never the protected app's responses.
"""

from __future__ import annotations

from collections.abc import Iterable

from werkzeug.wrappers import Response

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PERMISSIONS_POLICY = ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), hid=(), serial=(), "
                      "display-capture=()")
#: for the web authenticator, which scans QR codes with the camera of the device it runs on
PERMISSIONS_POLICY_WITH_CAMERA = PERMISSIONS_POLICY.replace("camera=()", "camera=(self)")
DEFAULTS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
)


def secure_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with every security header it lacks added (see the module's rules)."""
    out = list(headers)
    names = {name.lower() for name, _ in out}
    if "set-cookie" in names:
        vary = [value for name, value in out if name.lower() == "vary"]
        if not any("cookie" in value.lower() for value in vary):
            vary.append("Cookie")
        out = [(name, value) for name, value in out if name.lower() not in ("cache-control", "vary")]
        out += [("Cache-Control", "no-store"), ("Vary", ", ".join(vary))]
    elif "cache-control" not in names:
        out.append(("Cache-Control", "no-store"))
    for name, value in DEFAULTS:
        if name.lower() not in names:
            out.append((name, value))
    if "content-security-policy" in names:
        out = [(name, value + "; frame-ancestors 'none'"
                if name.lower() == "content-security-policy" and "frame-ancestors" not in value else value)
               for name, value in out]
    return out


def secure_response(response: Response) -> None:
    """Apply :func:`secure_headers` to a werkzeug response, in place."""
    secured = secure_headers(response.headers.to_wsgi_list())
    response.headers.clear()
    response.headers.extend(secured)
