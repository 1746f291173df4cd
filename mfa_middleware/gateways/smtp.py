"""An SMTP email gateway on the standard library's :mod:`smtplib`.

Trust model, stated once:

- **Encryption.** ``security = "tls"`` opens implicit TLS (port 465); ``"starttls"`` (the default, port 587)
  upgrades the plain connection and refuses to go on when the server does not offer STARTTLS, so a network
  attacker who strips the capability gets an error, never a plain-text session. ``"none"`` is allowed only
  for a relay on the loopback interface (``localhost``, ``127.0.0.0/8``, ``::1``), where no network sees the
  traffic; any other host is refused when the gateway is built.
- **Certificates.** The server certificate is always verified, host name included, with TLS 1.2 or newer.
  ``ca_file`` replaces the system trust store with the operator's own CA (or the server's self-signed
  certificate) for private mail servers. There is deliberately no switch that turns verification off.
- **Credentials.** The optional username and password are used for SMTP AUTH (smtplib picks CRAM-MD5, PLAIN
  or LOGIN from what the server offers). The password is never logged, never in an exception message and not
  in the object's ``repr``.
- **One attempt.** :meth:`SmtpGateway.send` opens one connection, sends one message and closes it. It never
  retries: an error after the server may have accepted the data must not turn into two codes in the inbox.
  A failure at the closing QUIT, after the server accepted the message, is logged and ignored; after a failure
  the connection is dropped without QUIT.
- **Time.** ``timeout`` bounds the whole exchange, not just each read: a watchdog shuts the connection down
  once ``timeout`` has passed since the connection was opened, which wakes any read a silent or slow-drip
  server (or a man in the middle before STARTTLS) keeps blocked, so a page thread is held for about the
  timeout at most. (Resolving the host name is the system resolver's business and not bounded here;
  configure an IP address where DNS is unreliable.)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from .base import GatewayUnavailable, OutgoingEmail, check_address, compose_message

Security = Literal["starttls", "tls", "none"]
SECURITY_MODES: tuple[Security, ...] = ("starttls", "tls", "none")
DEFAULT_PORTS: dict[Security, int] = {"starttls": 587, "tls": 465, "none": 25}

log = logging.getLogger("mfa_middleware.gateways")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``): the hosts ``"none"`` allows."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies the server's certificate and host name (TLS 1.2 or newer).

    With ``ca_file`` only that file's certificates are trusted (not the system store). Raises ``OSError`` or
    ``ssl.SSLError`` when the file cannot be read or holds no certificate.
    """
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SmtpGateway:
    """Sends each message over one SMTP connection (see the module docstring for the trust model).

    Built once at start-up; ``send`` is safe to call from several threads (each call has its own connection).
    Invalid settings raise ``ValueError`` here, not at the first send.
    """

    def __init__(self, *, host: str, from_address: str, site_name: str, port: int | None = None,
                 security: Security = "starttls", username: str | None = None, password: str | None = None,
                 timeout: float = 10.0, ca_file: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}; got {security!r}")
        if not host:
            raise ValueError("host must be a mail server's host name or IP address")
        if security == "none" and not is_loopback_host(host):
            raise ValueError(f"security \"none\" sends in plain text and is allowed only for localhost, "
                             f"not for {host!r}; use \"starttls\" or \"tls\"")
        if (username is None) != (password is None) or username == "" or password == "":
            raise ValueError("give both username and password for SMTP AUTH, or neither")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.host = host
        self.port = DEFAULT_PORTS[security] if port is None else port
        self.security: Security = security
        self.from_address = check_address(from_address, "from_address")
        self.site_name = site_name
        self.username = username
        self._password = password
        self.timeout = timeout
        self._clock = clock
        self._context = None if security == "none" else tls_context(ca_file)

    def __repr__(self) -> str:
        login = f", username={self.username!r}" if self.username else ""
        return f"SmtpGateway({self.security}://{self.host}:{self.port}{login})"

    def send(self, message: OutgoingEmail) -> None:
        """Hand ``message`` to the server once; raise :class:`GatewayUnavailable` if it was not accepted."""
        mime = compose_message(message, from_address=self.from_address, site_name=self.site_name,
                               now=self._clock())
        where = f"mail server {self.host}:{self.port}"
        watchdog = _Watchdog(self.timeout)
        smtp: _Connection | None = None
        accepted = False
        try:
            smtp = _Connection(self.host, self.port, timeout=self.timeout, watchdog=watchdog,
                               implicit_tls=self._context if self.security == "tls" else None)
            if self.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise GatewayUnavailable(f"{where} does not offer STARTTLS; refusing to send in plain text")
                smtp.starttls(context=self._context)
                smtp.ehlo()
            if self.username is not None and self._password is not None:
                smtp.login(self.username, self._password)
            smtp.send_message(mime, from_addr=self.from_address, to_addrs=[message.to])
            accepted = True
        except GatewayUnavailable as exc:
            log.warning("email not sent: %s", exc)
            raise
        except (smtplib.SMTPException, OSError, UnicodeError) as exc:  # OSError covers timeouts and TLS errors
            reason = "timed out" if watchdog.fired else _describe(exc)
            log.warning("email not sent: %s: %s", where, reason)
            raise GatewayUnavailable(f"{where}: {reason}") from None
        finally:
            if smtp is not None:
                _close(smtp, polite=accepted)
            watchdog.cancel()
        log.info("email %s handed to %s", mime["Message-ID"], where)


class _Watchdog:
    """Shuts down the watched connection ``seconds`` after it starts, waking any read blocked on it.

    ``shutdown(2)`` acts on the socket itself, so the watchdog keeps a duplicate descriptor of it: that stays
    valid after smtplib wraps the socket for TLS, and closing it never closes smtplib's own descriptor.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._watched: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.fired:
                raise TimeoutError("timed out")
            self._watched = socket.socket(fileno=os.dup(sock.fileno()))

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._watched is not None:
                try:
                    self._watched.shutdown(socket.SHUT_RDWR)
                except OSError:  # already closed by the peer
                    pass

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            if self._watched is not None:
                self._watched.close()
                self._watched = None


class _Connection(smtplib.SMTP):
    """smtplib's client, with the new socket handed to the watchdog before the first byte is read and,
    for implicit TLS, wrapped before the greeting (what ``smtplib.SMTP_SSL`` does, plus the watchdog)."""

    def __init__(self, host: str, port: int, *, timeout: float, watchdog: _Watchdog,
                 implicit_tls: ssl.SSLContext | None) -> None:
        self._watchdog = watchdog
        self._implicit_tls = implicit_tls
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout, self.source_address)
        try:
            self._watchdog.watch(sock)
            if self._implicit_tls is not None:
                return self._implicit_tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return sock


def _close(smtp: smtplib.SMTP, *, polite: bool) -> None:
    """Say QUIT after an accepted message; after a failure just drop the connection (the server then discards
    the unfinished transaction, and a stalled server cannot hold us longer)."""
    try:
        if polite and smtp.sock is not None:
            smtp.quit()
    except (smtplib.SMTPException, OSError) as exc:  # the message is accepted; QUIT cannot change that
        log.debug("closing the SMTP connection failed: %s", _describe(exc))
    finally:
        smtp.close()


def _describe(exc: BaseException) -> str:
    """A short reason for an operator: the kind of failure and the server's reply, never a credential."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = "; ".join(_reply(code, text) for code, text in exc.recipients.values())
        return f"recipient refused ({replies})"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"sender address refused ({_reply(exc.smtp_code, exc.smtp_error)})"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"login failed ({_reply(exc.smtp_code, exc.smtp_error)})"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"not supported by the server: {exc}"
    if isinstance(exc, smtplib.SMTPDataError):
        return f"message refused ({_reply(exc.smtp_code, exc.smtp_error)})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"unexpected reply ({_reply(exc.smtp_code, exc.smtp_error)})"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        # smtplib turns a read timeout into "Connection unexpectedly closed"; the timeout is the real reason
        return "timed out" if isinstance(exc.__context__, TimeoutError) else "the server closed the connection"
    if isinstance(exc, smtplib.SMTPException):
        return str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def _reply(code: int, text: bytes | str) -> str:
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(raw.split())}"[:200]
