"""Structured logs: one JSON object per line, each with the request id of the request that caused it.

- **Request ids.** Every request the gate sees starts a request context (:func:`begin_request`). Its id is the
  ``X-Request-Id`` a trusted proxy sent (nginx's ``$request_id``; 1-64 characters of ``[A-Za-z0-9._:-]``, anything
  else is ignored) or, only when something is logged, 16 random hex digits. So a request that logs nothing (the
  authenticated hot path) pays for a context variable, not for a random number. Audit rows carry the same id
  (``detail.request_id``), so an auditor can join a row to the log lines around it.
- **JSON lines.** :class:`JsonFormatter` writes ``{"ts", "level", "logger", "message", "request_id", ...}`` and the
  structured fields a record carries under ``extra={"mfa": {...}}`` (the audit log's event, result, user, actor,
  client and detail). Newlines, control characters and every non-ASCII character (U+2028 and U+0085 end a line
  for some readers) are escaped by JSON, so one event is always one line, whatever a user agent or a username
  contains.
- **No secrets.** Nothing in this package logs a password, code, key, cookie or app password; the audit detail is
  filtered by an allow-list (:mod:`mfa_middleware.services.audit`), and a test runs every method with logging at
  DEBUG and searches every line for every secret it used.

In-process users attach the formatter to their own handlers (``handler.setFormatter(JsonFormatter())``);
``mfa-middleware serve`` and the other servers configure it from ``[logging]`` (:func:`configure`).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

_INCOMING = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# (the id, or None until something asks for one)
_REQUEST_ID: ContextVar[str | None] = ContextVar("mfa_request_id", default=None)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")


def begin_request(incoming: str | None = None) -> None:
    """Start the context of a new request: ``incoming`` is a trusted proxy's ``X-Request-Id`` (or None)."""
    _REQUEST_ID.set(incoming if incoming is not None and _INCOMING.fullmatch(incoming) else None)


def request_id() -> str:
    """The current request's id (made now if the request has none yet)."""
    rid = _REQUEST_ID.get()
    if rid is None:
        rid = secrets.token_hex(8)
        _REQUEST_ID.set(rid)
    return rid


def current_request_id() -> str | None:
    """The id if one was given or made already (log lines outside a request have none)."""
    return _REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's, or None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        fields = getattr(record, "mfa", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=True, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        text = super().format(record)
        # one event per line here too: a newline in a value (a user agent, a username) cannot start a fake line
        return text.replace("\r", "\\r").replace("\n", "\\n") if not record.exc_info else text


def configure(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send the package's (and the server's) log records to ``stream`` (standard error) as ``fmt``; returns the
    handler (tests remove it again)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


__all__ = ["FORMATS", "JsonFormatter", "LEVELS", "RequestIdFilter", "TextFormatter", "begin_request", "configure",
           "current_request_id", "request_id"]
