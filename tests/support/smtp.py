"""A real SMTP server for tests: aiosmtpd's ``Controller`` on 127.0.0.1 (DESIGN.md section 6).

:func:`smtp_server` starts one in a thread and stops it on exit. It records every message it accepts (envelope,
parsed message, whether TLS was on, who logged in) and can refuse chosen recipients or require STARTTLS and
AUTH, so gateway tests exercise smtplib against a server that speaks the protocol, not a mock of our client.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from tests.support.components import require_component
from tests.support.servers import free_port


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    tls: bool  # the message arrived over TLS (implicit or after STARTTLS)
    login: str | None  # the user name that authenticated, if any


@dataclass
class Recorder:
    """The aiosmtpd handler: accepts everything except ``refuse`` recipients, records what it accepted."""

    refuse: frozenset[str] = frozenset()
    data_reply: str | None = None  # answer the end of DATA with this instead of accepting (e.g. "451 ...")
    data_attempts: int = 0
    credentials: dict[str, str] = field(default_factory=dict)  # user -> password for the authenticator
    received: list[ReceivedMessage] = field(default_factory=list)
    auth_attempts: list[tuple[str, str]] = field(default_factory=list)  # (mechanism, user)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 <" + address + ">: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.data_attempts += 1
        if self.data_reply is not None:
            return self.data_reply
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        tls = server.transport is not None and server.transport.get_extra_info("sslcontext") is not None
        login = session.auth_data if session.authenticated else None
        with self._lock:
            self.received.append(ReceivedMessage(envelope.mail_from, tuple(envelope.rcpt_tos), parsed, tls,
                                                 login))
        return "250 2.0.0 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        """aiosmtpd ``authenticator``: checks LOGIN/PLAIN credentials against :attr:`credentials`."""
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8")
        with self._lock:
            self.auth_attempts.append((mechanism, user))
        ok = self.credentials.get(user) == auth_data.password.decode("utf-8")
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self.received)


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    recorder: Recorder


@contextmanager
def smtp_server(*, starttls: ssl.SSLContext | None = None, implicit_tls: ssl.SSLContext | None = None,
                require_starttls: bool = False, credentials: dict[str, str] | None = None,
                auth_required: bool = False, exclude_auth: tuple[str, ...] = (),
                refuse: frozenset[str] = frozenset(), data_reply: str | None = None) -> Iterator[SmtpServer]:
    """Run aiosmtpd on 127.0.0.1 with the given TLS mode and AUTH; yield its address and recorder.

    ``starttls`` offers STARTTLS with that server context; ``implicit_tls`` wraps the listening socket (port
    465 style). With ``credentials`` the server offers AUTH LOGIN and PLAIN (over TLS only, unless the
    session is implicit TLS, which aiosmtpd does not count as TLS for AUTH: there AUTH is offered always).
    """
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        require_component("aiosmtpd", "pip install aiosmtpd (the test extra)")
    recorder = Recorder(refuse=refuse, data_reply=data_reply, credentials=dict(credentials or {}))
    kwargs: dict[str, Any] = {}
    if starttls is not None:
        kwargs.update(tls_context=starttls, require_starttls=require_starttls)
    if credentials is not None:
        kwargs.update(authenticator=recorder.authenticate, auth_required=auth_required,
                      auth_require_tls=implicit_tls is None, auth_exclude_mechanism=list(exclude_auth))
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, ssl_context=implicit_tls,
                            server_hostname="mail.test", ready_timeout=10, **kwargs)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, recorder)
    finally:
        controller.stop()
