"""Path normalisation: the one path the policy sees and the app receives.

Rules:

1. Input is the path the server hands the app (WSGI ``PATH_INFO``, already percent-decoded, as latin-1 text
   standing for bytes). It must decode as UTF-8.
2. Control characters (including NUL and DEL) and backslashes are refused: some servers and frameworks treat
   ``\\`` as ``/`` and others do not, so a path containing one cannot be matched safely.
3. A path still containing an encoded dot, slash or backslash (``%2e``, ``%2f``, ``%5c``, any case) after the
   server decoded it once was double-encoded; an app that decodes again would see another path. Refused.
4. ``;params`` are cut from every segment (Java-style path parameters hide a segment from a naive matcher).
5. Empty segments (``//``) and ``.`` segments are dropped; ``..`` removes the previous segment; ``..`` above the
   root is refused. A trailing slash is kept.

The result is returned; ``None`` means the path cannot be parsed and the request is refused. The adapter
passes the normalised path to the app, so no gap can open between what the policy matched and what the app
routes on.
"""

from __future__ import annotations

import re

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_DOUBLE_ENCODED = re.compile(r"%(2e|2f|5c|00|25)", re.IGNORECASE)


def normalize_path(raw: str) -> str | None:
    """Return the canonical form of a decoded request path, or ``None`` when it must be refused."""
    if raw.isascii():
        path = raw
    else:
        try:
            path = raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return None
    if not path:
        return "/"
    if not path.startswith("/") or _FORBIDDEN.search(path) or _DOUBLE_ENCODED.search(path):
        return None
    # Fast path: nothing to normalise in the overwhelmingly common case.
    if "//" not in path and "/." not in path and ";" not in path:
        return path
    segments: list[str] = []
    parts = path.split("/")[1:]
    for part in parts:
        part = part.split(";", 1)[0]
        if part in ("", "."):
            continue
        if part == "..":
            if not segments:
                return None
            segments.pop()
            continue
        segments.append(part)
    trailing = parts[-1].split(";", 1)[0] in ("", ".", "..")
    result = "/" + "/".join(segments)
    if trailing and segments:
        result += "/"
    return result


def is_local_target(target: str) -> bool:
    """True when ``target`` is safe as a post-sign-in redirect: a local absolute path, nothing else.

    Refused: scheme-relative (``//host``), backslash tricks (``/\\host``), any scheme (``https:``,
    ``javascript:``), control characters and whitespace anywhere (browsers strip tabs and newlines, so
    ``/%09/evil.com`` decodes to a scheme-relative URL).
    """
    if not target or not target.startswith("/") or len(target) > 2048:
        return False
    if target.startswith("//") or "\\" in target:
        return False
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return False
    lowered = target.lower()
    # Encoded slashes, backslashes and whitespace right after the leading slash make a scheme-relative URL in
    # some browsers after decoding.
    if re.match(r"^/(%2f|%5c|%09|%0a|%0d|%20)", lowered):
        return False
    return True


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` when it is a safe local path, else ``default``."""
    if target and is_local_target(target):
        return target
    return default
