"""The audit log: one row per sign-in step and per administrative change.

Rows say who, what, the result, the client address, the user agent and when. They never hold a secret: the
``detail`` mapping is filtered through an allow-list of keys, so a caller cannot log a password or a code by
mistake. Every row is also one structured log line (``mfa_middleware.audit``, with the same fields under
``extra["mfa"]``; :class:`~mfa_middleware.logs.JsonFormatter` writes it as JSON), and both carry the request id
(:mod:`mfa_middleware.logs`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..logs import request_id
from ..store import Store, StoreUnavailable

log = logging.getLogger("mfa_middleware.audit")

ALLOWED_DETAIL = frozenset({"method", "stage", "reason", "state", "previous_state", "count", "locked_until",
                            "primary", "target", "label", "groups", "admin", "methods_removed", "session",
                            "until", "seconds", "path", "credential", "serial", "refused"})
# phone send caps and fraud reports: the number appears masked at most, the reference as a digest
ALLOWED_DETAIL |= frozenset({"limit", "channel", "purpose", "country", "number", "retry_after", "reference",
                             "report", "notified"})


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        #: called with (event, result, detail) for every row, before it is stored (the metrics count sign-ins
        #: here); they see exactly what the row holds, never more
        self.observers: list[Callable[[str, str, Mapping[str, Any]], None]] = []

    def write(self, event: str, result: str, *, now: float, actor: str, username: str | None,
              client_ip: str | None = None, user_agent: str | None = None, **detail: Any) -> None:
        bad = set(detail) - ALLOWED_DETAIL
        if bad:
            raise ValueError(f"audit detail keys not allowed: {sorted(bad)}")
        rid = request_id()
        log.info("%s %s user=%s actor=%s ip=%s", event, result, username, actor, client_ip,
                 extra={"request_id": rid, "mfa": {"event": event, "result": result, "user": username,
                                                   "actor": actor, "client_ip": client_ip, "user_agent": user_agent,
                                                   "detail": detail}})
        for observe in self.observers:
            observe(event, result, detail)
        try:
            self.store.write_audit(at=now, actor=actor, username=username, event=event, result=result,
                                   client_ip=client_ip, user_agent=user_agent, detail=detail, request_id=rid)
        except StoreUnavailable:
            log.error("audit row not written (store unavailable): %s %s user=%s", event, result, username)
            raise
