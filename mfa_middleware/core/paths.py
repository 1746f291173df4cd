"""Path normalisation: the one path the policy sees and the app receives.

Two forms of a path appear here. The *WSGI form* is what a server hands a WSGI app in ``PATH_INFO``: the request
path percent-decoded once, its bytes written as latin-1 text (PEP 3333). The *text form* is the same bytes
decoded as UTF-8: what the policy matches, what ASGI puts in ``scope["path"]``. :func:`wsgi_form` turns the text
form back into the WSGI form (a no-op for ASCII).

Rules of :func:`normalize_path` (the input is the WSGI form; a path is refused when any rule says so):

1. The bytes must be valid UTF-8 (Python's strict decoder: no overlong forms such as ``%C0%AF``, no surrogates,
   nothing above U+10FFFF). Invalid UTF-8 is refused; adapters answer 400, never 500.
2. Control characters (C0, DEL and C1, including NUL and NEL) and backslashes are refused: some servers and
   frameworks treat ``\\`` as ``/`` and others do not, so a path containing one cannot be matched safely.
3. ``?`` and ``#`` are refused: after the server's decoding they can only come from ``%3F``/``%23``, and an app
   that rebuilds the URL and parses it again would cut the path there.
4. No percent-encoding may be left after the server's one decoding: ``%`` followed by two hex digits, or by
   ``u`` and four hex digits (IIS's ``%uXXXX``), is refused. So a second percent-decoding by the app, or by
   anything behind it, leaves the path exactly as it is (``/%2561dmin`` arrives as ``/%61dmin``: refused, as
   the app would read ``/admin``). A ``%`` not followed by such digits stays (it decodes to itself).
5. A non-ASCII character whose compatibility form (Unicode NFKC) contains an ASCII character is refused: an
   app or file system that folds ``／`` (fullwidth solidus) to ``/``, ``․․`` (one-dot leaders) to ``..`` or
   ``ａ`` to ``a`` would otherwise see another path than the rule did. Letters of other scripts, accents and
   CJK characters are kept.
6. A segment ending in a space or a dot (other than the ``.`` and ``..`` segments) is refused: Windows and IIS
   drop those, so ``/admin./x`` and ``/admin%20/x`` would be served as ``/admin/x`` past an ``/admin/*`` rule.
7. ``;params`` are cut from every segment (Java-style path parameters hide a segment from a naive matcher).
8. Empty segments (``//``) and ``.`` segments are dropped; ``..`` removes the previous segment; ``..`` above the
   root is refused. A trailing slash is kept.

Windows mode (``[paths] windows = true``, on in the IIS samples). IIS and the Windows file systems read several
forms of one name as that name: ``/Admin/x``, ``/admin./x``, ``/admin%20/x``, ``/admin::$DATA/x`` and the 8.3 short
name ``/ADMINI~1/x`` all reach ``/admin/x``. So that a rule means what the server means, windows mode adds:

9. Rules match case-insensitively, always (``case_sensitive_paths = true`` with ``windows = true`` is a
   configuration error). Nothing is folded: the app gets the path as the client wrote its case, and IIS serves
   the same file for every case.
10. A colon anywhere is refused: ``name:stream`` and ``name::$DATA`` open an NTFS alternate data stream of
    ``name`` (``/web.config::$DATA`` returned source code, MS98-003; ``/admin:$I30:$INDEX_ALLOCATION/x`` is the
    folder ``/admin``). IIS refuses ``:`` itself by default (``requestPathInvalidCharacters``).
11. A segment holding ``~`` followed by a digit is refused: it may be an 8.3 short name (``ADMINI~1`` for
    ``administration``, ``PROGRA~1``). Which long name it stands for depends on the folder's contents, so it
    cannot be folded; refusing it also closes IIS short-name enumeration (the "IIS tilde" disclosure).
12. The Windows wildcard characters ``*``, ``<``, ``>``, ``"`` and ``|`` are refused (file-system APIs read
    ``<``, ``>`` and ``"`` as ``*``, ``?`` and ``.`` in a pattern; none is valid in a Windows name).
13. A non-ASCII character whose upper- or lower-case form holds an ASCII letter (``ı``, ``İ``; ``ſ`` and the
    Kelvin sign ``K`` already fall under rule 5) is refused: the case tables of NTFS and of the rule matcher may
    disagree on them. So is a Unicode format character (category Cf: the soft hyphen, zero-width characters,
    direction marks): Windows "best fit" conversion to a code page turns some into ASCII (the soft hyphen into
    ``-``, CVE-2024-4577).

What happens to the other tricks, in every mode: ``%5C`` and ``\\`` (IIS reads a backslash as ``/``) are
refused by rule 2; ``%2E`` is a dot once decoded and dot segments are resolved by rule 8 (in process; forward
auth refuses them); overlong UTF-8 (``%C0%AF``, the IIS "Unicode traversal", CVE-2000-0884) by rule 1; double
encoding (``%255c``, CVE-2001-0333) and IIS ``%uXXXX`` by rule 4; trailing dots and spaces by rule 6 (refused
rather than folded: no browser sends them); ``;params`` are cut by rule 7 (IIS keeps ``;`` in the name, but the
app gets the cut path, so ``/x.asp;.jpg`` is judged and served as ``/x.asp``). Compatibility forms (NFKC) of
ASCII are refused by rule 5; NFC and NFD spellings of other characters (``café`` as ``e`` + U+0301) are two names
to NTFS, which does not normalise, and to the rules alike, so they are kept as written.

The result is the text form, or ``None`` when the path must be refused. In-process adapters pass the
normalised path to the app, so no gap can open between what the policy matched and what the app routes on.
Forward auth cannot rewrite what the proxy forwards; it refuses a URI unless normalising it changes nothing
(see :mod:`mfa_middleware.adapters.forward_auth`).

Cost: a plain ASCII path with nothing to normalise costs ``isascii``, one regex scan and four substring checks.
"""

from __future__ import annotations

import functools
import re
import unicodedata

#: C0 controls, DEL, C1 controls, backslash, and the two URL delimiters that can only arrive encoded
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\\?#]")
#: what a second percent-decoding would change (rule 4)
_LEFTOVER = re.compile(r"%(?:[0-9a-f]{2}|u[0-9a-f]{4})", re.IGNORECASE)
#: windows mode: alternate data streams, 8.3 short names, wildcards (rules 10 to 12)
_WINDOWS_FORBIDDEN = re.compile(r'[:*<>"|]|~[0-9]')
#: an encoded separator or whitespace right after the leading slash of a ``next=`` target
_ENCODED_SEPARATOR = re.compile(r"/(?:%2f|%5c|%09|%0a|%0d|%20)", re.IGNORECASE | re.ASCII)


def normalize_path(raw: str, windows: bool = False) -> str | None:
    """Return the canonical text form of a decoded request path (WSGI form), or ``None`` when it must be refused.
    ``windows`` adds rules 10 to 13 (rule 9 is the policy's)."""
    if raw.isascii():
        path = raw
    else:
        try:
            path = raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return None
        if _has_compat_ascii(path) or (windows and _has_windows_ambiguous(path)):
            return None
    if not path:
        return "/"
    if path[0] != "/" or _FORBIDDEN.search(path) or ("%" in path and _LEFTOVER.search(path)):
        return None
    if windows and _WINDOWS_FORBIDDEN.search(path):
        return None
    # Fast path: nothing to normalise in the overwhelmingly common case.
    if "//" not in path and "/." not in path and ";" not in path and "./" not in path and " " not in path \
            and path[-1] != ".":
        return path
    segments: list[str] = []
    parts = path.split("/")[1:]
    if ";" in path:
        parts = [part.split(";", 1)[0] for part in parts]
    for part in parts:
        if not part or part == ".":
            continue
        if part == "..":
            if not segments:
                return None
            segments.pop()
            continue
        if part[-1] == "." or part[-1] == " ":
            return None
        segments.append(part)
    trailing = parts[-1] in ("", ".", "..")
    result = "/" + "/".join(segments)
    if trailing and segments:
        result += "/"
    return result


def wsgi_form(path: str) -> str:
    """The WSGI form (PEP 3333: UTF-8 bytes as latin-1 text) of a text-form path."""
    return path if path.isascii() else path.encode("utf-8").decode("latin-1")


@functools.lru_cache(maxsize=4096)
def _compat_ascii(char: str) -> bool:
    return any(c < "\x80" for c in unicodedata.normalize("NFKC", char))


def _has_compat_ascii(path: str) -> bool:
    return any(c > "\x7f" and _compat_ascii(c) for c in path)


@functools.lru_cache(maxsize=4096)
def _windows_ambiguous(char: str) -> bool:
    return (unicodedata.category(char) == "Cf"
            or any(c < "\x80" for c in char.upper()) or any(c < "\x80" for c in char.lower()))


def _has_windows_ambiguous(path: str) -> bool:
    """Rule 13: a character NTFS's case table or a code page's "best fit" may turn into ASCII."""
    return any(c > "\x7f" and _windows_ambiguous(c) for c in path)


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
    # Encoded slashes, backslashes and whitespace right after the leading slash make a scheme-relative URL in
    # some browsers after decoding. Case folds ASCII only (no ``str.lower``: it maps some non-ASCII to ASCII).
    return not _ENCODED_SEPARATOR.match(target)


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` when it is a safe local path, else ``default``."""
    if target and is_local_target(target):
        return target
    return default
