"""The audit log: one row per sign-in step and per administrative change.

Rows say who, what, the result, the client address, the user agent and when. They never hold a secret: the
``detail`` mapping is filtered through an allow-list of keys, so a caller cannot log a password or a code by
mistake. Every row is also one structured log line (``mfa_middleware.audit``, with the same fields under
``extra["mfa"]``; :class:`~mfa_middleware.logs.JsonFormatter` writes it as JSON), and both carry the request id
(:mod:`mfa_middleware.logs`).
"""

from __future__ import annotations

import logging
import time
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


#: longest a request waits for one audit row (seconds): the store's own ``timeout`` when that is shorter (3 s by
#: default), so an audit row never waits longer than any other statement of the request, and a loaded but
#: healthy store is not mistaken for a dead one (a dropped row is a lost record)
AUDIT_TIMEOUT = 3.0
#: after an audit row could not be written, rows go to the log only for this long before the store is tried again
AUDIT_RETRY_AFTER = 1.0


class AuditLog:
    """Audit rows never stall or fail what they record: a row waits at most :data:`AUDIT_TIMEOUT` for the store;
    a row the store cannot take (down, frozen, its table locked) is dropped, counted in :attr:`dropped` and
    logged as ``audit_dropped`` beside the event's own log line (which is always written, first), and for
    :data:`AUDIT_RETRY_AFTER` after that rows go to the log only, so an outage costs each request one wait at
    most."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: audit rows the store could not take since start (each also logged as ``audit_dropped``)
        self.dropped = 0
        self._skip_until = 0.0  # time.monotonic()
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
        if time.monotonic() >= self._skip_until:
            try:
                self.store.write_audit(at=now, actor=actor, username=username, event=event, result=result,
                                       client_ip=client_ip, user_agent=user_agent, detail=detail,
                                       request_id=rid, timeout=AUDIT_TIMEOUT)
                return
            except StoreUnavailable:
                self._skip_until = time.monotonic() + AUDIT_RETRY_AFTER
        self.dropped += 1
        log.error("audit_dropped: audit row not written (store unavailable): %s %s user=%s", event, result,
                  username)
