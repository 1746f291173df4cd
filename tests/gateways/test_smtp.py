"""The SMTP gateway against a real aiosmtpd server on 127.0.0.1: plain (localhost only), STARTTLS, implicit TLS,
AUTH LOGIN/PLAIN, and every way a hand-over fails (refused, silent server, untrusted or wrong certificate,
STARTTLS stripped, login refused, recipient refused). Certificates are made by the test (tests/support/tls.py).
"""

from __future__ import annotations

import email.utils
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mfa_middleware.gateways import (
    EmailGateway,
    GatewayUnavailable,
    OutgoingEmail,
    SmtpGateway,
    build_email_gateway,
    email_config_from_dict,
)
from tests.support.servers import free_port
from tests.support.smtp import ReceivedMessage, SmtpServer, smtp_server
from tests.support.tls import CertificateAuthority, ServerCertificate

SITE = "Contoso Sign-in für Ärzte"
FROM = "mfa@contoso.test"
TO = "ann@example.test"
PASSWORD = "correct horse battery staple"
MESSAGE = OutgoingEmail(
    to=TO,
    subject="Your sign-in code: 123456",
    text="Your code is 123456. It is valid for 10 minutes.\n",
    html="<p>Your code is <strong>123456</strong>. It is valid for 10 minutes.</p>\n",
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, ServerCertificate]:
    """Our CA and a server certificate it issued for localhost and 127.0.0.1."""
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"), "ours")
    return ca, ca.issue(("localhost", "127.0.0.1"))


def gateway(server: SmtpServer, **kwargs: object) -> SmtpGateway:
    options: dict[str, object] = {"host": server.host, "port": server.port, "from_address": FROM,
                                  "site_name": SITE, "timeout": 5.0}
    options.update(kwargs)
    return SmtpGateway(**options)  # type: ignore[arg-type]


def only_message(server: SmtpServer) -> ReceivedMessage:
    received = server.recorder.messages()
    assert len(received) == 1, received
    return received[0]


def check_message(got: ReceivedMessage, before: datetime) -> None:
    """The envelope, headers and both parts are what a factor asked for."""
    assert got.mail_from == FROM
    assert got.rcpt_tos == (TO,)
    msg = got.message
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["From"].addresses[0].display_name == SITE
    assert msg["From"].addresses[0].addr_spec == FROM
    assert str(msg["To"]) == TO
    assert str(msg["Subject"]) == MESSAGE.subject
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "All"
    sent = email.utils.parsedate_to_datetime(str(msg["Date"]))
    assert before - timedelta(seconds=1) <= sent <= datetime.now(UTC) + timedelta(seconds=1)
    message_id = str(msg["Message-ID"])
    assert message_id.startswith("<") and message_id.endswith("@contoso.test>")
    assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().replace("\r\n", "\n") == MESSAGE.text  # SMTP carries CRLF line ends
    assert parts[1].get_content().replace("\r\n", "\n") == MESSAGE.html


def test_plain_to_localhost_delivers_both_parts_and_headers() -> None:
    with smtp_server() as server:
        before = datetime.now(UTC)
        gateway(server, security="none").send(MESSAGE)
        got = only_message(server)
    check_message(got, before)
    assert not got.tls and got.login is None


def test_starttls_with_a_private_ca(pki: tuple[CertificateAuthority, ServerCertificate]) -> None:
    ca, cert = pki
    with smtp_server(starttls=cert.server_context(), require_starttls=True) as server:
        before = datetime.now(UTC)
        gateway(server, security="starttls", ca_file=str(ca.cert_file)).send(MESSAGE)
        got = only_message(server)
    check_message(got, before)
    assert got.tls


def test_starttls_by_host_name(pki: tuple[CertificateAuthority, ServerCertificate]) -> None:
    """The certificate is checked against the configured host name (here ``localhost``, a DNS SAN)."""
    ca, cert = pki
    with smtp_server(starttls=cert.server_context(), require_starttls=True) as server:
        gateway(server, host="localhost", ca_file=str(ca.cert_file)).send(MESSAGE)
        assert only_message(server).tls


def test_implicit_tls(pki: tuple[CertificateAuthority, ServerCertificate]) -> None:
    ca, cert = pki
    with smtp_server(implicit_tls=cert.server_context()) as server:
        before = datetime.now(UTC)
        gateway(server, security="tls", ca_file=str(ca.cert_file)).send(MESSAGE)
        got = only_message(server)
    check_message(got, before)
    assert got.tls


@pytest.mark.parametrize("mechanism", [pytest.param("PLAIN", id="plain"), pytest.param("LOGIN", id="login")])
def test_auth_over_starttls(pki: tuple[CertificateAuthority, ServerCertificate], mechanism: str) -> None:
    ca, cert = pki
    others = tuple(m for m in ("PLAIN", "LOGIN") if m != mechanism)
    with smtp_server(starttls=cert.server_context(), require_starttls=True, credentials={"mfa": PASSWORD},
                     auth_required=True, exclude_auth=others) as server:
        gateway(server, ca_file=str(ca.cert_file), username="mfa", password=PASSWORD).send(MESSAGE)
        got = only_message(server)
        assert server.recorder.auth_attempts == [(mechanism, "mfa")]
    assert got.tls and got.login == "mfa"


def test_auth_over_implicit_tls(pki: tuple[CertificateAuthority, ServerCertificate]) -> None:
    ca, cert = pki
    with smtp_server(implicit_tls=cert.server_context(), credentials={"mfa": PASSWORD}) as server:
        gateway(server, security="tls", ca_file=str(ca.cert_file), username="mfa", password=PASSWORD).send(MESSAGE)
        got = only_message(server)
    assert got.tls and got.login == "mfa"


def test_wrong_password_is_unavailable_and_never_logged(pki: tuple[CertificateAuthority, ServerCertificate],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    ca, cert = pki
    wrong = "not-the-password-4711"
    caplog.set_level(logging.DEBUG)
    with smtp_server(starttls=cert.server_context(), require_starttls=True, credentials={"mfa": PASSWORD},
                     auth_required=True) as server:
        sender = gateway(server, ca_file=str(ca.cert_file), username="mfa", password=wrong)
        with pytest.raises(GatewayUnavailable, match="login failed") as raised:
            sender.send(MESSAGE)
        assert server.recorder.messages() == []
    assert wrong not in str(raised.value) and wrong not in repr(sender)
    assert wrong not in caplog.text and "123456" not in caplog.text


def test_starttls_stripped_refuses_before_any_credential_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    """An attacker (or a misconfigured server) that does not offer STARTTLS gets no plain-text session."""
    with smtp_server(credentials={"mfa": PASSWORD}) as server:  # no TLS at all; AUTH offered in plain text
        with pytest.raises(GatewayUnavailable, match="does not offer STARTTLS"):
            gateway(server, host="localhost", username="mfa", password=PASSWORD).send(MESSAGE)
        assert server.recorder.auth_attempts == []
        assert server.recorder.messages() == []
    assert PASSWORD not in caplog.text


def test_untrusted_certificate(tmp_path: Path, pki: tuple[CertificateAuthority, ServerCertificate]) -> None:
    """A server certificate from another CA than ``ca_file`` (a man in the middle) is refused, nothing sent."""
    ours, _ = pki
    theirs = CertificateAuthority(tmp_path, "theirs").issue(("localhost", "127.0.0.1"))
    with smtp_server(starttls=theirs.server_context()) as server:
        with pytest.raises(GatewayUnavailable, match="certificate not trusted"):
            gateway(server, ca_file=str(ours.cert_file)).send(MESSAGE)
        assert server.recorder.messages() == []


def test_system_trust_store_does_not_trust_a_private_ca(pki: tuple[CertificateAuthority, ServerCertificate]) -> None:
    _, cert = pki
    with smtp_server(implicit_tls=cert.server_context()) as server:
        with pytest.raises(GatewayUnavailable, match="certificate not trusted"):
            gateway(server, security="tls").send(MESSAGE)
        assert server.recorder.messages() == []


def test_certificate_for_another_host(tmp_path: Path, pki: tuple[CertificateAuthority, ServerCertificate]) -> None:
    """A certificate our CA issued, but for another name, is refused: the host name is verified too."""
    ca, _ = pki
    elsewhere = ca.issue(("mail.elsewhere.test",), label="elsewhere")
    with smtp_server(starttls=elsewhere.server_context()) as server:
        with pytest.raises(GatewayUnavailable, match="certificate not trusted"):
            gateway(server, ca_file=str(ca.cert_file)).send(MESSAGE)
        assert server.recorder.messages() == []


def test_refused_recipient() -> None:
    with smtp_server(refuse=frozenset({TO})) as server:
        with pytest.raises(GatewayUnavailable, match=r"recipient refused \(550 5\.1\.1"):
            gateway(server, security="none").send(MESSAGE)
        assert server.recorder.messages() == []


@pytest.mark.parametrize("reply", [pytest.param("451 4.3.0 Try again later", id="temporary"),
                                   pytest.param("554 5.6.0 Message refused", id="permanent")])
def test_refused_message_is_tried_once(reply: str) -> None:
    """No retry, not even after a temporary 4xx: a second DATA could deliver the code twice."""
    with smtp_server(data_reply=reply) as server:
        with pytest.raises(GatewayUnavailable, match=r"message refused \(" + reply[:3]):
            gateway(server, security="none").send(MESSAGE)
        assert server.recorder.data_attempts == 1


def test_connection_refused() -> None:
    port = free_port()  # nothing listens there
    sender = SmtpGateway(host="127.0.0.1", port=port, security="none", from_address=FROM, site_name=SITE)
    with pytest.raises(GatewayUnavailable, match=f"mail server 127.0.0.1:{port}: connection refused"):
        sender.send(MESSAGE)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A socket that accepts TCP connections (kernel backlog) but never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("security", [pytest.param("none", id="plain"), pytest.param("starttls", id="starttls"),
                                      pytest.param("tls", id="implicit-tls")])
def test_silent_server_times_out(silent_server: int, security: str) -> None:
    """A server that never answers (greeting or TLS handshake) fails within the timeout, not after minutes."""
    sender = SmtpGateway(host="127.0.0.1", port=silent_server, security=security,  # type: ignore[arg-type]
                         from_address=FROM, site_name=SITE, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable, match="timed out"):
        sender.send(MESSAGE)
    assert time.monotonic() - started < 5, "answers within 5 s for a 1 s timeout"


@pytest.fixture
def drip_server() -> Iterator[int]:
    """Answers the greeting, then answers EHLO with an endless reply, one continuation line every 0.2 s.

    Every single read finishes well within a 1 s timeout, so only a bound on the whole exchange stops it
    (the server gives up after 30 s, so a client without that bound fails the test instead of hanging)."""
    stop = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                try:
                    conn.sendall(b"220 drip.test ESMTP\r\n")
                    conn.recv(1024)  # EHLO
                    conn.sendall(b"250-drip.test\r\n")
                    deadline = time.monotonic() + 30
                    while not stop.wait(0.2) and time.monotonic() < deadline:
                        conn.sendall(b"250-STILL-THINKING\r\n")
                except OSError:  # the client hung up
                    pass

        thread = threading.Thread(target=serve, name="drip-smtp", daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()
            thread.join(timeout=10)


def test_slow_drip_server_is_cut_off_at_the_timeout(drip_server: int) -> None:
    """The timeout bounds the whole exchange, not each read: a page thread is never held much longer."""
    sender = SmtpGateway(host="127.0.0.1", port=drip_server, security="none", from_address=FROM, site_name=SITE,
                         timeout=1.0)
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable, match="timed out"):
        sender.send(MESSAGE)
    assert time.monotonic() - started < 5, "answers within 5 s for a 1 s timeout"


@pytest.mark.parametrize("host", [pytest.param("192.0.2.10", id="ipv4"), pytest.param("mail.example.org", id="name"),
                                  pytest.param("::ffff:192.0.2.1", id="mapped"),
                                  pytest.param("localhost.example.org", id="lookalike")])
def test_plain_text_only_for_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="allowed only for localhost"):
        SmtpGateway(host=host, security="none", from_address=FROM, site_name=SITE)


@pytest.mark.parametrize("host", [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6"),
                                  pytest.param("localhost", id="name"), pytest.param("127.0.0.2", id="loopback-net")])
def test_plain_text_allowed_for_loopback(host: str) -> None:
    assert SmtpGateway(host=host, security="none", from_address=FROM, site_name=SITE).port == 25


def test_built_from_config(pki: tuple[CertificateAuthority, ServerCertificate]) -> None:
    """The parsed ``[email]`` table builds a gateway that delivers (password read from the environment)."""
    ca, cert = pki
    with smtp_server(starttls=cert.server_context(), require_starttls=True, credentials={"mfa": PASSWORD},
                     auth_required=True) as server:
        cfg = email_config_from_dict({"gateway": "smtp", "host": server.host, "port": server.port,
                                      "from_address": FROM, "username": "mfa", "password": "env:SMTP_PW",
                                      "ca_file": str(ca.cert_file), "timeout": "5s"},
                                     environ={"SMTP_PW": PASSWORD})
        built = build_email_gateway(cfg, SITE)
        assert isinstance(built, EmailGateway) and isinstance(built, SmtpGateway)
        built.send(MESSAGE)
        got = only_message(server)
    assert got.login == "mfa"
    assert got.message["From"].addresses[0].display_name == SITE
