"""The ``[phone]`` table: defaults per gateway, ``env:`` secrets, and a table of bad inputs, each with the error
that names the key."""

from __future__ import annotations

from typing import Any

import pytest

from mfa_middleware.config import ConfigError
from mfa_middleware.gateways.phone import (
    ConsolePhoneGateway,
    PhoneConfig,
    TwilioGateway,
    WebhookPhoneGateway,
    build_phone_gateway,
    phone_config_from_dict,
)

SID = "AC" + "0123456789abcdef" * 2
TWILIO = {"gateway": "twilio", "account_sid": SID, "auth_token": "env:TWILIO_TOKEN", "from_number": "+14155550100",
          "allowed_countries": ["gb", "US"]}
WEBHOOK = {"gateway": "webhook", "url": "https://sms.example.org/send", "secret": "env:HOOK_SECRET"}
ENV = {"TWILIO_TOKEN": "tok-123", "HOOK_SECRET": "h" * 32}


def parse(data: dict[str, Any]) -> PhoneConfig:
    return phone_config_from_dict(data, source="mfa.toml", environ=ENV)


def test_console_defaults() -> None:
    cfg = parse({"gateway": "console"})
    assert cfg == PhoneConfig(gateway="console", allowed_countries=(), default_region=None, language="en-US",
                              voice=None, call_timeout=30, outbox_size=50)
    assert isinstance(build_phone_gateway(cfg), ConsolePhoneGateway)


def test_twilio() -> None:
    cfg = parse({**TWILIO, "default_region": "gb", "voice": "Polly.Amy", "call_timeout": "45s", "timeout": "5s"})
    assert (cfg.account_sid, cfg.auth_token, cfg.from_number) == (SID, "tok-123", "+14155550100")
    assert cfg.allowed_countries == ("GB", "US") and cfg.default_region == "GB" and cfg.call_timeout == 45
    assert cfg.base_url == "https://api.twilio.com" and cfg.timeout == 5.0
    assert "tok-123" not in repr(cfg)
    gateway = build_phone_gateway(cfg)
    assert isinstance(gateway, TwilioGateway) and "tok-123" not in repr(gateway)


def test_webhook_and_loopback_http() -> None:
    cfg = parse({**WEBHOOK, "url": "http://127.0.0.1:8025/send", "allowed_countries": ["*"]})
    assert cfg.secret == "h" * 32 and cfg.allowed_countries == ("*",) and "h" * 32 not in repr(cfg)
    assert isinstance(build_phone_gateway(cfg), WebhookPhoneGateway)


def test_twilio_loopback_base_url_for_tests() -> None:
    assert parse({**TWILIO, "base_url": "http://localhost:9000/"}).base_url == "http://localhost:9000"


@pytest.mark.parametrize(("data", "message"), [
    pytest.param({}, "phone.gateway: required", id="no-gateway"),
    pytest.param({"gateway": "sms"}, "phone.gateway: must be one of console, twilio, webhook", id="unknown-gateway"),
    pytest.param({"gateway": "console", "colour": 1}, "phone.colour: unknown key", id="unknown-key"),
    pytest.param({"gateway": "console", "url": "https://x"}, 'phone.url: only used with gateway = "webhook"',
                 id="webhook-key-under-console"),
    pytest.param({**TWILIO, "outbox_size": 5}, 'phone.outbox_size: only used with gateway = "console"',
                 id="console-key-under-twilio"),
    pytest.param({**WEBHOOK, "account_sid": SID}, 'phone.account_sid: only used with gateway = "twilio"',
                 id="twilio-key-under-webhook"),
    pytest.param({"gateway": "console", "allowed_countries": "GB"}, "phone.allowed_countries: expected a list",
                 id="countries-not-a-list"),
    pytest.param({"gateway": "console", "allowed_countries": ["UK"]}, "'UK' is not an ISO 3166", id="uk-not-gb"),
    pytest.param({"gateway": "console", "allowed_countries": ["*", "GB"]}, "cannot be combined",
                 id="star-and-codes"),
    pytest.param({"gateway": "console", "default_region": "XX"}, "phone.default_region: must be an ISO",
                 id="bad-region"),
    pytest.param({"gateway": "console", "language": "english"}, "phone.language: must be a language tag",
                 id="bad-language"),
    pytest.param({"gateway": "console", "voice": "a b"}, "phone.voice: must be a voice name", id="bad-voice"),
    pytest.param({"gateway": "console", "call_timeout": "2s"}, "phone.call_timeout: must be whole seconds",
                 id="ring-too-short"),
    pytest.param({"gateway": "console", "call_timeout": "11m"}, "phone.call_timeout", id="ring-too-long"),
    pytest.param({"gateway": "console", "outbox_size": 0}, "phone.outbox_size: must be between 1 and 1000",
                 id="outbox-zero"),
    pytest.param({**TWILIO, "account_sid": "AC123"}, "phone.account_sid: required, the account SID",
                 id="short-sid"),
    pytest.param({k: v for k, v in TWILIO.items() if k != "account_sid"}, "phone.account_sid: required",
                 id="no-sid"),
    pytest.param({k: v for k, v in TWILIO.items() if k != "auth_token"}, "phone.auth_token: required",
                 id="no-token"),
    pytest.param({**TWILIO, "auth_token": "env:MISSING"}, "phone.auth_token: environment variable MISSING",
                 id="token-env-missing"),
    pytest.param({**TWILIO, "from_number": "4155550100"}, "phone.from_number: required, a number of the account in "
                 "E.164", id="from-not-e164"),
    pytest.param({**TWILIO, "from_number": "+1 415 555 0100"}, "phone.from_number", id="from-with-spaces"),
    pytest.param({**TWILIO, "messaging_service_sid": "AC" + "0" * 32}, "phone.messaging_service_sid",
                 id="service-sid-wrong-prefix"),
    pytest.param({**TWILIO, "base_url": "http://api.example.org"}, "phone.base_url: must use https",
                 id="plain-http-base-url"),
    pytest.param({**TWILIO, "base_url": "https://u:p@api.example.org"}, "without user name or password",
                 id="credentials-in-base-url"),
    pytest.param({**TWILIO, "base_url": "ftp://api.example.org"}, "phone.base_url: must be an https URL",
                 id="ftp-base-url"),
    pytest.param({**TWILIO, "timeout": "6m"}, "phone.timeout: must be between 1s and 5m", id="long-timeout"),
    pytest.param({**WEBHOOK, "url": "http://sms.example.org/"}, "phone.url: must use https", id="plain-http-url"),
    pytest.param({k: v for k, v in WEBHOOK.items() if k != "url"}, "phone.url: required", id="no-url"),
    pytest.param({k: v for k, v in WEBHOOK.items() if k != "secret"}, "phone.secret: required", id="no-secret"),
    pytest.param({**WEBHOOK, "secret": "short"}, "phone.secret: must be at least 32 bytes, got 5",
                 id="short-secret"),
    pytest.param({**WEBHOOK, "secret": "env:"}, "phone.secret: \"env:\" must be followed", id="empty-env-name"),
])
def test_bad_values_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith("mfa.toml: phone.")
    assert message in str(info.value)
    for secret in ENV.values():
        assert secret not in str(info.value)
