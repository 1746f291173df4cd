"""The ``[email]`` table: defaults, ``env:`` passwords, relative CA files, and a table of bad inputs, each with
the error that names the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mfa_middleware.config import ConfigError
from mfa_middleware.gateways import (
    ConsoleGateway,
    EmailConfig,
    SmtpGateway,
    build_email_gateway,
    email_config_from_dict,
)
from tests.support.tls import CertificateAuthority

SMTP = {"gateway": "smtp", "host": "smtp.example.org", "from_address": "mfa@example.org"}


def parse(data: dict[str, Any], **kwargs: Any) -> EmailConfig:
    return email_config_from_dict(data, source="mfa.toml", **kwargs)


def test_smtp_defaults() -> None:
    cfg = parse(SMTP)
    assert cfg == EmailConfig(gateway="smtp", host="smtp.example.org", from_address="mfa@example.org",
                              port=587, security="starttls", timeout=10.0)


@pytest.mark.parametrize(("security", "port"), [pytest.param("starttls", 587, id="starttls"),
                                                pytest.param("tls", 465, id="tls")])
def test_port_follows_security(security: str, port: int) -> None:
    assert parse({**SMTP, "security": security}).port == port


def test_plain_localhost_relay() -> None:
    cfg = parse({**SMTP, "host": "127.0.0.1", "security": "none", "port": 2525, "timeout": "30s"})
    assert (cfg.security, cfg.port, cfg.timeout) == ("none", 2525, 30.0)


def test_console_defaults_and_build() -> None:
    cfg = parse({"gateway": "console", "outbox_size": 5})
    assert cfg == EmailConfig(gateway="console", outbox_size=5)
    built = build_email_gateway(cfg, "Demo")
    assert isinstance(built, ConsoleGateway) and built.outbox.size == 5


def test_password_from_environment_is_resolved_and_hidden() -> None:
    cfg = parse({**SMTP, "username": "mfa", "password": "env:MFA_SMTP_PASSWORD"},
                environ={"MFA_SMTP_PASSWORD": "s3cret-from-env"})
    assert cfg.password == "s3cret-from-env"
    assert "s3cret" not in repr(cfg)
    built = build_email_gateway(cfg, "Site")
    assert isinstance(built, SmtpGateway) and "s3cret" not in repr(built)


def test_relative_ca_file_is_relative_to_the_config_folder(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, "private")
    cfg = parse({**SMTP, "ca_file": ca.cert_file.name}, base_dir=tmp_path)
    assert cfg.ca_file == str(ca.cert_file.resolve())


@pytest.fixture
def not_a_cert(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-cert.pem"
    path.write_text("hello\n")
    return path


BAD = [
    pytest.param({}, "mfa.toml: email.gateway: required, one of smtp, console", id="no-gateway"),
    pytest.param({"gateway": "sendmail"}, "email.gateway: must be one of smtp, console; got 'sendmail'",
                 id="unknown-gateway"),
    pytest.param({**SMTP, "hots": "x"}, "mfa.toml: email.hots: unknown key", id="unknown-key"),
    pytest.param({"gateway": "smtp", "from_address": "a@b.org"}, "email.host: required", id="no-host"),
    pytest.param({**SMTP, "host": ""}, "email.host: required", id="empty-host"),
    pytest.param({**SMTP, "host": "smtp.example.org:587"}, "email.host: required, the mail server's host name",
                 id="host-with-port"),
    pytest.param({**SMTP, "host": "smtp://smtp.example.org"}, "email.host:", id="host-with-scheme"),
    pytest.param({**SMTP, "host": 25}, "email.host: expected a string, got int 25", id="host-not-string"),
    pytest.param({**SMTP, "port": 0}, "email.port: must be between 1 and 65535, got 0", id="port-zero"),
    pytest.param({**SMTP, "port": 70000}, "email.port: must be between 1 and 65535, got 70000", id="port-high"),
    pytest.param({**SMTP, "port": "587"}, "email.port: expected an integer, got str '587'", id="port-string"),
    pytest.param({**SMTP, "port": True}, "email.port: expected an integer, got True", id="port-bool"),
    pytest.param({**SMTP, "security": "ssl"}, "email.security: must be one of starttls, tls, none; got 'ssl'",
                 id="security-unknown"),
    pytest.param({**SMTP, "security": "none"}, "email.security: \"none\" sends in plain text and is allowed only "
                 "for localhost", id="plain-to-remote"),
    pytest.param({**SMTP, "host": "10.0.0.5", "security": "none"}, "email.security: \"none\"",
                 id="plain-to-private-ip"),
    pytest.param({"gateway": "smtp", "host": "smtp.example.org"}, "email.from_address: required",
                 id="no-from"),
    pytest.param({**SMTP, "from_address": "MFA <mfa@example.org>"}, "email.from_address: must be a single address",
                 id="from-with-display-name"),
    pytest.param({**SMTP, "from_address": "a@b.org, c@d.org"}, "email.from_address: must be a single address",
                 id="from-list"),
    pytest.param({**SMTP, "from_address": "mfa"}, "email.from_address: must be a single address", id="from-bare"),
    pytest.param({**SMTP, "username": "mfa"}, "email.password: required with username", id="user-no-password"),
    pytest.param({**SMTP, "password": "x"}, "email.username: required with password", id="password-no-user"),
    pytest.param({**SMTP, "username": "", "password": "x"}, "email.username: must not be empty",
                 id="empty-user"),
    pytest.param({**SMTP, "username": "mfa", "password": ""}, "email.password: must not be empty",
                 id="empty-password"),
    pytest.param({**SMTP, "username": "mfa", "password": "env:UNSET_SMTP_PW"},
                 "email.password: environment variable UNSET_SMTP_PW is not set or empty", id="env-unset"),
    pytest.param({**SMTP, "username": "mfa", "password": "env:"}, "email.password: \"env:\" must be followed",
                 id="env-empty-name"),
    pytest.param({**SMTP, "timeout": "0s"}, "email.timeout: expected a duration", id="timeout-zero"),
    pytest.param({**SMTP, "timeout": "10 minutes"}, "email.timeout: expected a duration", id="timeout-words"),
    pytest.param({**SMTP, "timeout": "500ms"}, "email.timeout: must be between 1s and 5m, got 0.5 s",
                 id="timeout-short"),
    pytest.param({**SMTP, "timeout": "1h"}, "email.timeout: must be between 1s and 5m, got 3600 s",
                 id="timeout-long"),
    pytest.param({**SMTP, "ca_file": "/nonexistent/ca.pem"}, "email.ca_file: no such file: /nonexistent/ca.pem",
                 id="ca-missing"),
    pytest.param({**SMTP, "ca_file": "NOT_A_CERT"}, "email.ca_file: cannot load CA certificates from",
                 id="ca-not-pem"),
    pytest.param({**SMTP, "host": "localhost", "security": "none", "ca_file": "/etc/hostname"},
                 "email.ca_file: only used with security = \"starttls\" or \"tls\"", id="ca-without-tls"),
    pytest.param({**SMTP, "outbox_size": 10}, "email.outbox_size: only used with gateway = \"console\"",
                 id="outbox-on-smtp"),
    pytest.param({"gateway": "console", "host": "smtp.example.org"},
                 "email.host: only used with gateway = \"smtp\"", id="host-on-console"),
    pytest.param({"gateway": "console", "password": "x"}, "email.password: only used with gateway = \"smtp\"",
                 id="password-on-console"),
    pytest.param({"gateway": "console", "outbox_size": 0}, "email.outbox_size: must be between 1 and 1000, got 0",
                 id="outbox-zero"),
    pytest.param({"gateway": "console", "outbox_size": 5000}, "email.outbox_size: must be between 1 and 1000",
                 id="outbox-huge"),
    pytest.param({"gateway": "console", "colour": "red"}, "email.colour: unknown key", id="console-unknown-key"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_input_names_the_key(data: dict[str, Any], message: str, not_a_cert: Path) -> None:
    if data.get("ca_file") == "NOT_A_CERT":
        data = {**data, "ca_file": str(not_a_cert)}
    with pytest.raises(ConfigError) as raised:
        parse(data, environ={})
    assert message in str(raised.value)
    assert str(raised.value).startswith("mfa.toml: email.")


def test_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^mfa\.toml: email: expected a table$"):
        email_config_from_dict(["smtp"], source="mfa.toml")  # type: ignore[arg-type]
