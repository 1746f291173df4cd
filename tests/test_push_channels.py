"""Push channels, from the outside: the pages on a real socket, a real RFC 8030 push service (tests/support/
pushservice.py: checks the VAPID JWT, decrypts the aes128gcm payload with the subscription keys the test made) and a
real webhook receiver, all on 127.0.0.1. The device is ``mfa-authenticator`` or raw signed requests.

What must hold: a wake-up carries no number and nothing to trust; the channel route is signed like every device
request and changes only the signer's channel; channel URLs stay on the operator's allow-list; a failing or hanging
push service never delays the sign-in page, and is audited; a subscription the service calls gone is removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mfa_middleware import MFAMiddleware
from mfa_middleware.cli import new_vapid_private_key
from mfa_middleware.config import ConfigError
from mfa_middleware.factors.push.channels import host_allowed, vapid_public_key
from mfa_middleware.store.sql import AuditRecord
from tests.support.mfa import FAST_HASHER, echo_app, make_config
from tests.support.pushservice import PushService, b64u, push_service
from tests.support.servers import serve_wsgi
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver
from tests.test_push_protocol import (PASSWORD, OffsetClock, Person, Site, cli, device, enrolled, pending_ids,
                                      signed_headers, signing_in)

CHANNEL_PATH = "/_mfa/device/v1/channel"
VAPID_KEY = new_vapid_private_key()
ALLOWED = ["127.0.0.1", "fcm.googleapis.com", "*.push.apple.com", "ntfy.example"]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait for something another thread does (a bound on a hang, not a timing): True once it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@dataclass
class ChannelSite(Site):
    push: PushService
    hook: WebhookReceiver

    def audit(self, result: str) -> list[AuditRecord]:
        return [r for r in self.mw.runtime.store.list_audit(limit=500) if r.event == "push" and r.result == result]

    def channel_of(self, username: str) -> bytes | None:
        store = self.mw.runtime.store
        [method] = [m for m in store.list_methods(self.user(username).id) if m.kind == "push"]
        found = store.push_device_of_method(method.id)
        assert found is not None
        return found.channel


@contextmanager
def _site(database_url: str, users: tuple[str, ...] = ("alice", "bob"), **push: Any) -> Iterator[ChannelSite]:
    clock = OffsetClock()
    with push_service() as service, webhook_receiver(signed=False) as hook:
        settings = {"vapid_private_key": VAPID_KEY, "vapid_subject": "mailto:security@example.com",
                    "channel_hosts": ALLOWED, **push}
        config = make_config(database_url, methods={"enabled": ["push", "totp"], "push": settings},
                             site_name="Intranet")
        mw = MFAMiddleware(echo_app, config, clock=clock, password_hasher=FAST_HASHER)
        try:
            mw.runtime.store.upgrade()
            for name in users:
                mw.runtime.accounts.add(name, actor="test", password=PASSWORD)
            with serve_wsgi(mw) as base:
                yield ChannelSite(mw, base, clock, service, hook)
        finally:
            service.release()
            hook.release.set()
            mw.runtime.close()


@pytest.fixture
def site(database_url: str) -> Iterator[ChannelSite]:
    with _site(database_url) as made:
        yield made


@pytest.fixture
def alice(site: ChannelSite, tmp_path: Path) -> Path:
    return enrolled(site, "alice", tmp_path / "alice.json")


def post_channel(site: Site, store: Path, channel: dict[str, Any] | None, *, raw: bytes | None = None
                 ) -> httpx.Response:
    body = raw if raw is not None else json.dumps({"channel": channel}).encode()
    return httpx.post(site.base + CHANNEL_PATH, content=body,
                      headers=signed_headers(device(store), "POST", CHANNEL_PATH, body))


def no_secret_in_audit(site: ChannelSite, *secrets_: str) -> None:
    rows = json.dumps([[r.result, r.detail] for r in site.mw.runtime.store.list_audit(limit=500)])
    for secret in secrets_:
        assert secret not in rows


# -- Web Push delivery -----------------------------------------------------------------------------------------------
def test_web_push_wakes_the_device_without_the_number(site: ChannelSite, alice: Path) -> None:
    sub = site.push.subscribe()
    answer = post_channel(site, alice, sub.channel())
    assert answer.status_code == 200 and answer.json() == {"channel": "webpush"}, answer.text
    person, number, token = signing_in(site)
    assert site.push.wait_for_messages(1)
    assert site.push.errors == []
    [message] = site.push.messages
    [request_id] = pending_ids(alice)
    payload = json.loads(message.payload)
    assert payload == {"v": 1, "type": "sign-in", "site": "Intranet", "id": request_id}
    assert number not in json.dumps({k: v for k, v in payload.items() if k != "id"})
    assert message.headers["ttl"] == "60" and message.headers["urgency"] == "high"
    assert message.vapid_key == vapid_public_key(VAPID_KEY) and message.claims["sub"] == "mailto:security@example.com"
    assert wait_until(lambda: len(site.audit("wake_sent")) == 1)
    [sent] = site.audit("wake_sent")
    assert sent.detail["target"] == "127.0.0.1" and sent.detail["channel"] == "webpush"
    no_secret_in_audit(site, sub.token, sub.p256dh, b64u(sub.auth))
    # The wake-up is only a hint: the device fetches and verifies the request as always.
    cli(alice, "approve", request_id, "--number", number)
    assert person.submit(token).headers["Location"] == "/"


def test_registration_may_carry_a_channel_and_answers_the_vapid_key(site: ChannelSite) -> None:
    from mfa_middleware.factors.push import protocol

    person = Person(site)
    url, token = person.start_enrollment("alice")
    sub = site.push.subscribe()
    key = protocol.new_private_key("es256")
    answer = httpx.post(url.split("?")[0], json={"token": url.split("token=")[1], "name": "Browser",
                                                 "public_key": protocol.b64u(protocol.public_key_bytes(key)),
                                                 "channel": sub.channel()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["vapid_public_key"] == vapid_public_key(VAPID_KEY)
    assert len(protocol.unb64u(answer.json()["vapid_public_key"], "key")) == 65
    assert answer.json()["channel"] == "webpush"
    assert person.finish_enrollment(token).headers["Location"] == "/"
    signing_in(site)
    assert site.push.wait_for_messages(1) and site.push.errors == []


def test_without_a_vapid_key_the_answer_says_so(sqlite_url: str) -> None:
    with _site(sqlite_url, vapid_private_key="", vapid_subject="") as s:
        person = Person(s)
        url, _ = person.start_enrollment("alice")
        from mfa_middleware.factors.push import protocol

        key = protocol.new_private_key("ed25519")
        body = {"token": url.split("token=")[1], "public_key": protocol.b64u(protocol.public_key_bytes(key))}
        refused = httpx.post(url.split("?")[0], json={**body, "channel": s.push.subscribe().channel()})
        assert refused.status_code == 400 and "VAPID" in refused.text
        answer = httpx.post(url.split("?")[0], json=body)  # the refusal did not use the registration URL up
        assert answer.status_code == 200 and answer.json()["vapid_public_key"] is None


# -- the webhook channel -----------------------------------------------------------------------------------------------
def test_a_webhook_channel_receives_the_wake_up(site: ChannelSite, alice: Path) -> None:
    from click.testing import CliRunner

    from mfa_middleware.authenticator.cli import main as authenticator

    account = device(alice).account.account_id
    assert "webhook 127.0.0.1" in cli(alice, "channel", account, "--webhook", site.hook.url)
    assert "channel: webhook 127.0.0.1" in cli(alice, "accounts")
    person, number, token = signing_in(site)
    assert wait_until(lambda: len(site.hook.received) == 1)
    [got] = site.hook.received
    [request_id] = pending_ids(alice)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["title"] == "Intranet" and got.headers["priority"] == "high"
    assert got.payload == {"v": 1, "type": "sign-in", "site": "Intranet", "id": request_id}
    assert number not in json.dumps({k: v for k, v in got.headers.items() if k not in ("host", "content-length")})
    assert wait_until(lambda: len(site.audit("wake_sent")) == 1)
    # watch keeps working: the wake-up only says "look"; the request comes over the signed long-poll
    result = CliRunner().invoke(authenticator, ["--store", str(alice), "watch", "--once"], input=f"{number}\n",
                                catch_exceptions=False)
    assert result.exit_code == 0 and "approved" in result.output, result.output
    assert person.submit(token).headers["Location"] == "/"
    assert "none" in cli(alice, "channel", account, "--none")
    assert site.channel_of("alice") is None


# -- what a device may not set -------------------------------------------------------------------------------------
P256 = b64u(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
AUTH = b64u(b"a" * 16)


def webpush(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc", p256dh: str = P256, auth: str = AUTH,
            **extra: Any) -> dict[str, Any]:
    return {"type": "webpush", "endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}, **extra}


REFUSALS = [
    pytest.param({"type": "webhook", "url": "https://intranet.corp.example/hook"}, 403, id="intranet-host"),
    pytest.param({"type": "webhook", "url": "https://10.0.0.5/hook"}, 403, id="intranet-ip"),
    pytest.param({"type": "webhook", "url": "http://ntfy.example/topic"}, 400, id="http-not-loopback"),
    pytest.param({"type": "webhook", "url": "http://localhost:9/topic"}, 400, id="http-loopback-not-listed"),
    pytest.param({"type": "webhook", "url": "ftp://ntfy.example/topic"}, 400, id="ftp"),
    pytest.param({"type": "webhook", "url": "https://user:pw@ntfy.example/topic"}, 400, id="userinfo"),
    pytest.param({"type": "webhook", "url": "https://ntfy.example@10.0.0.5/topic"}, 400, id="userinfo-host-trick"),
    pytest.param({"type": "webhook", "url": "https://ntfy.example/tøpic"}, 400, id="non-ascii-path"),
    pytest.param({"type": "webhook", "url": "https://ntfÿ.example/topic"}, 400, id="non-ascii-host"),
    pytest.param({"type": "webhook", "url": "https://ntfy.example/a b"}, 400, id="space"),
    pytest.param({"type": "webhook", "url": "https://ntfy.example./topic"}, 400, id="trailing-dot"),
    pytest.param({"type": "webhook", "url": "https://ntfy.example/" + "a" * 3000}, 400, id="huge-url"),
    pytest.param({"type": "webhook", "url": "https://ntfy.example.evil.example/t"}, 403, id="suffix-trick"),
    pytest.param({"type": "webhook", "url": "https://push.apple.com/t"}, 403, id="wildcard-not-apex"),
    pytest.param({"type": "webhook", "url": "https://ntfy.example:99999/t"}, 400, id="bad-port"),
    pytest.param({"type": "webhook", "url": 5}, 400, id="url-not-string"),
    pytest.param({"type": "webhook", "url": "https://ntfy.example/t", "secret": "x"}, 400, id="unknown-key"),
    pytest.param({"type": "sms", "url": "https://ntfy.example/t"}, 400, id="unknown-type"),
    pytest.param("https://ntfy.example/t", 400, id="not-an-object"),
    pytest.param(webpush(p256dh=P256[:-4]), 400, id="p256dh-short"),
    pytest.param(webpush(p256dh="BA" + "A" * 85), 400, id="p256dh-off-curve"),
    pytest.param(webpush(p256dh="not base64!"), 400, id="p256dh-not-b64"),
    pytest.param(webpush(auth=b64u(b"a" * 15)), 400, id="auth-15-bytes"),
    pytest.param(webpush(auth=b64u(b"a" * 17)), 400, id="auth-17-bytes"),
    pytest.param(webpush(endpoint="https://push.example.net/x"), 403, id="webpush-other-host"),
    pytest.param(webpush(endpoint="http://fcm.googleapis.com/x"), 400, id="webpush-http"),
    pytest.param({**webpush(), "keys": {"p256dh": P256}}, 400, id="keys-missing-auth"),
]


@pytest.mark.parametrize(("channel", "status"), REFUSALS)
def test_channels_off_the_allow_list_or_malformed_are_refused(site: ChannelSite, alice: Path, channel: Any,
                                                              status: int) -> None:
    refused = post_channel(site, alice, channel)
    assert refused.status_code == status, refused.text
    assert "error" in refused.json()
    assert site.channel_of("alice") is None
    if isinstance(channel, dict) and isinstance(channel.get("url"), str):
        no_secret_in_audit(site, channel["url"])


@pytest.mark.parametrize(("body", "status"), [
    pytest.param(b"{not json", 400, id="not-json"),
    pytest.param(b"{}", 400, id="no-channel-member"),
    pytest.param(b"[]", 400, id="array"),
    pytest.param(json.dumps({"channel": {"type": "webhook", "url": "https://ntfy.example/" + "a" * 9000}}).encode(),
                 401, id="over-8-KiB"),
])
def test_malformed_channel_bodies_are_refused(site: ChannelSite, alice: Path, body: bytes, status: int) -> None:
    refused = post_channel(site, alice, None, raw=body)
    assert refused.status_code == status, refused.text
    assert site.channel_of("alice") is None


@pytest.mark.parametrize(("host", "allowed"), [
    pytest.param("fcm.googleapis.com", True, id="exact"),
    pytest.param("web.push.apple.com", True, id="below-wildcard"),
    pytest.param("push.apple.com", False, id="wildcard-apex"),
    pytest.param("evilpush.apple.com", False, id="wildcard-no-dot"),
    pytest.param("fcm.googleapis.com.evil.example", False, id="exact-as-prefix"),
    pytest.param("x.fcm.googleapis.com", False, id="below-exact"),
])
def test_host_allow_list_matching(host: str, allowed: bool) -> None:
    assert host_allowed(host, ("fcm.googleapis.com", "*.push.apple.com")) is allowed


# -- the route's signature ---------------------------------------------------------------------------------------------
def test_the_channel_route_needs_the_devices_signature(site: ChannelSite, alice: Path, tmp_path: Path) -> None:
    from mfa_middleware.factors.push import protocol

    bob = enrolled(site, "bob", tmp_path / "bob.json")
    alice_hook = {"type": "webhook", "url": "https://ntfy.example/alice-topic"}
    assert post_channel(site, alice, alice_hook).status_code == 200
    stored = site.channel_of("alice")
    body = json.dumps({"channel": {"type": "webhook", "url": "https://ntfy.example/attacker"}}).encode()
    http = httpx.Client(base_url=site.base)
    assert http.post(CHANNEL_PATH, content=body).status_code == 401  # unsigned
    forged = signed_headers(device(alice), "POST", CHANNEL_PATH, body)
    forged[protocol.HEADER_SIGNATURE] = protocol.b64u(protocol.sign(protocol.new_private_key("ed25519"), body))
    assert http.post(CHANNEL_PATH, content=body, headers=forged).status_code == 401
    # bob's key under alice's account id
    as_alice = signed_headers(device(bob), "POST", CHANNEL_PATH, body)
    as_alice[protocol.HEADER_ACCOUNT] = device(alice).account.account_id
    assert http.post(CHANNEL_PATH, content=body, headers=as_alice).status_code == 401
    # a captured "remove my channel" replayed later
    removal = json.dumps({"channel": None}).encode()
    captured = signed_headers(device(alice), "POST", CHANNEL_PATH, removal)
    assert http.post(CHANNEL_PATH, content=removal, headers=captured).status_code == 200
    assert post_channel(site, alice, alice_hook).status_code == 200
    stored = site.channel_of("alice")
    replayed = http.post(CHANNEL_PATH, content=removal, headers=captured)
    assert replayed.status_code == 401 and "replayed" in replayed.text
    assert site.channel_of("alice") == stored is not None
    # bob's own updates touch bob's device only
    assert post_channel(site, bob, {"type": "webhook", "url": "https://ntfy.example/bob"}).status_code == 200
    assert post_channel(site, bob, None).json() == {"channel": None}
    assert site.channel_of("bob") is None and site.channel_of("alice") == stored


# -- failures of the push service -----------------------------------------------------------------------------------
def test_a_gone_subscription_removes_the_channel(site: ChannelSite, alice: Path) -> None:
    assert post_channel(site, alice, site.push.subscribe().channel()).status_code == 200
    site.push.mode = "gone"
    signing_in(site)
    assert wait_until(lambda: len(site.audit("wake_failed")) == 1)
    [failed] = site.audit("wake_failed")
    assert "410" in failed.detail["reason"] and "removed" in failed.detail["reason"]
    assert site.channel_of("alice") is None
    signing_in(site)  # no channel: nothing is sent (decided before the page answers)
    assert len(site.push.arrivals) == 1


def test_a_gone_answer_for_an_old_subscription_keeps_the_new_one(site: ChannelSite, alice: Path) -> None:
    store = site.mw.runtime.store
    assert post_channel(site, alice, site.push.subscribe().channel()).status_code == 200
    old = site.channel_of("alice")
    assert old is not None
    assert post_channel(site, alice, site.push.subscribe().channel()).status_code == 200
    new = site.channel_of("alice")
    [method] = [m for m in store.list_methods(site.user("alice").id) if m.kind == "push"]
    found = store.push_device_of_method(method.id)
    assert found is not None
    assert store.clear_push_channel(found.id, old) is False
    assert site.channel_of("alice") == new


@pytest.mark.parametrize("mode", [pytest.param("500", id="500"), pytest.param("redirect", id="redirect")])
def test_a_failing_push_service_is_audited(site: ChannelSite, alice: Path, mode: str) -> None:
    assert post_channel(site, alice, site.push.subscribe().channel()).status_code == 200
    site.push.mode = mode  # type: ignore[assignment]
    person, _, _ = signing_in(site)
    assert wait_until(lambda: len(site.audit("wake_failed")) == 1)
    [failed] = site.audit("wake_failed")
    assert failed.detail["target"] == "127.0.0.1"
    assert ("500" if mode == "500" else "redirect") in failed.detail["reason"]
    assert len(site.push.arrivals) == 1  # the redirect was not followed
    assert site.channel_of("alice") is not None
    assert person.poll() == "pending"


def test_a_hanging_push_service_never_delays_the_sign_in_page(site: ChannelSite, alice: Path) -> None:
    assert post_channel(site, alice, site.push.subscribe().channel()).status_code == 200
    site.push.mode = "hang"
    person, number, _ = signing_in(site)  # the page answered ...
    assert site.push.wait_for_arrivals(1)  # ... and the push service holds the wake-up, unanswered
    assert not site.push.released.is_set()
    assert person.poll() == "pending"
    second, other, _ = signing_in(site, "alice")  # another sign-in's page answers while the first is held
    assert other.isdigit() and second.poll() == "pending"
    site.push.release()
    assert wait_until(lambda: len(site.audit("wake_failed")) == 2)
    assert all("500" in r.detail["reason"] for r in site.audit("wake_failed"))


def test_a_push_service_that_never_answers_times_out(sqlite_url: str, tmp_path: Path) -> None:
    with _site(sqlite_url, send_timeout="1s") as s:
        store = enrolled(s, "alice", tmp_path / "alice.json")
        assert post_channel(s, store, s.push.subscribe().channel()).status_code == 200
        s.push.mode = "hang"
        signing_in(s)
        assert wait_until(lambda: len(s.audit("wake_failed")) == 1)  # the push service still holds it
        assert not s.push.released.is_set()
        assert "no answer within 1 s" in s.audit("wake_failed")[0].detail["reason"]


def test_a_host_removed_from_the_allow_list_is_no_longer_woken(sqlite_url: str, tmp_path: Path) -> None:
    """The allow-list is checked at every send, not only when the channel was set."""
    with _site(sqlite_url) as s:
        store = enrolled(s, "alice", tmp_path / "alice.json")
        assert post_channel(s, store, s.push.subscribe().channel()).status_code == 200
    with _site(sqlite_url, users=(), channel_hosts=["fcm.googleapis.com"]) as s:
        person = Person(s)
        assert person.login("alice").headers["Location"].endswith("/_mfa/verify")
        person.verify_page()
        assert wait_until(lambda: len(s.audit("wake_failed")) == 1)
        assert "not sent" in s.audit("wake_failed")[0].detail["reason"] and s.push.arrivals == []


# -- configuration -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("push", "message"), [
    pytest.param({"channel_hosts": ["https://fcm.googleapis.com"]}, "not a host name", id="host-with-scheme"),
    pytest.param({"channel_hosts": ["fcm.googleapis.com:443"]}, "not a host name", id="host-with-port"),
    pytest.param({"channel_hosts": ["*"]}, "not a host name", id="bare-star"),
    pytest.param({"channel_hosts": ["*.com"]}, "not a host name", id="star-tld"),
    pytest.param({"channel_hosts": ["push.*.example"]}, "not a host name", id="inner-star"),
    pytest.param({"channel_hosts": ["a..b"]}, "not a host name", id="empty-label"),
    pytest.param({"channel_hosts": "fcm.googleapis.com"}, "expected a list", id="not-a-list"),
    pytest.param({"vapid_private_key": "short", "vapid_subject": "mailto:a@b.example"}, "not a VAPID private key",
                 id="bad-key"),
    pytest.param({"vapid_private_key": "env:NO_SUCH_VAPID_KEY"}, "NO_SUCH_VAPID_KEY", id="env-key-missing"),
    pytest.param({"vapid_private_key": VAPID_KEY}, "vapid_subject: required", id="key-without-subject"),
    pytest.param({"vapid_subject": "admin@example.com"}, "mailto:", id="subject-not-a-uri"),
    pytest.param({"vapid_subject": "http://example.com"}, "mailto:", id="subject-http"),
    pytest.param({"send_timeout": "5m"}, "send_timeout", id="timeout-too-long"),
])
def test_bad_push_settings_are_start_up_errors(push: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="methods.push.") as raised:
        make_config("sqlite://", methods={"enabled": ["push"], "push": push})
    assert message in str(raised.value)


def test_push_settings_from_the_environment_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_VAPID", VAPID_KEY)
    config = make_config("sqlite://", methods={"enabled": ["push"], "push": {
        "vapid_private_key": "env:MFA_VAPID", "vapid_subject": "https://example.com/contact",
        "channel_hosts": ["*.Push.Example.com", "127.0.0.1"]}})
    assert config.methods.push.vapid_private_key == VAPID_KEY
    assert config.methods.push.channel_hosts == ("*.push.example.com", "127.0.0.1")
    default = make_config("sqlite://", methods={"enabled": ["push"]}).methods.push
    assert "fcm.googleapis.com" in default.channel_hosts and default.vapid_private_key == ""


def test_init_writes_a_vapid_key_that_loads(tmp_path: Path) -> None:
    from mfa_middleware.cli import write_starter_config
    from mfa_middleware.config import load_config

    write_starter_config(tmp_path / "mfa.toml", database="sqlite:///mfa.db")
    push = load_config(tmp_path / "mfa.toml").methods.push
    assert len(vapid_public_key(push.vapid_private_key)) == 87 and push.vapid_subject.startswith("mailto:")
