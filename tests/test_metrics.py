"""The optional Prometheus endpoint (issue 13): off by default, on its own port or a page behind a network rule,
counting sign-ins, decisions, lockouts, the revocation view's age and store latency, with no user names or other
secrets anywhere in a scrape. Scrapes are parsed with ``prometheus_client.parser``."""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from mfa_middleware import MFAMiddleware
from mfa_middleware.config import ConfigError
from mfa_middleware.metrics import OUTCOMES, Tally
from tests.support.mfa import DEFAULT_RULES, Browser, Clock, make_config, make_middleware
from tests.support.servers import free_port

USERNAME = "metrics-alice-7d1f"
PASSWORD = "correct horse battery staple 41b9"
OTHER = "metrics-bob-c33e"
OTHER_PASSWORD = "another long password e5a0"
WRONG_PASSWORD = "wrong password 9f8e7d"
RULES = [{"path": "/dav/*", "policy": "two_factor", "basic": True}, *DEFAULT_RULES]
METRICS_ON = {"enabled": True, "path": "/_mfa/metrics", "networks": ["127.0.0.1/32", "::1/128"]}


def scrape(mw: MFAMiddleware, remote_addr: str = "127.0.0.1", headers: dict[str, str] | None = None) -> Any:
    return Client(mw).get("/_mfa/metrics", environ_base={"REMOTE_ADDR": remote_addr}, headers=headers or {})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = make_middleware(sqlite_url, clock, rules=RULES, metrics=METRICS_ON, lockout={"max_failures": 3},
                                 trusted_proxies=["127.0.0.1"])
    middleware.runtime.accounts.add(USERNAME, actor="test", password=PASSWORD)
    middleware.runtime.accounts.add(OTHER, actor="test", password=OTHER_PASSWORD)
    yield middleware
    assert middleware.metrics is not None
    middleware.metrics.close()
    middleware.runtime.close()


def test_a_scrape_counts_what_happened_and_holds_no_secret(mw: MFAMiddleware, clock: Clock) -> None:
    """Sign in with a password and the authenticator app, use an app password, lock another account out,
    browse; then scrape and parse: the counts are there and no user name, password, key, code or cookie is."""
    rt = mw.runtime
    browser = Browser(mw)
    secret = browser.sign_in_and_enroll(USERNAME, PASSWORD, clock)
    session_cookie = browser.cookie("mfa_session")
    assert session_cookie
    for _ in range(4):
        assert browser.get("/home").status_code == 200  # four passes
    assert Browser(mw).get("/home").status_code == 302  # a redirect to the sign-in page
    assert Browser(mw).get("/blocked/x").status_code in (302, 403)
    # A second sign-in with a code.
    second = Browser(mw)
    assert second.login(USERNAME, PASSWORD).status_code == 303
    clock.advance(30)
    code = pyotp.TOTP(secret).at(clock.now)
    assert second.verify(code).status_code == 303
    # An app password on the Basic path.
    user = rt.accounts.get(USERNAME)
    _, app_password = rt.app_passwords.create(user, "laptop", actor="test")
    auth = "Basic " + base64.b64encode(f"{USERNAME}:{app_password}".encode()).decode()
    assert Client(mw).get("/dav/x", headers={"Authorization": auth}).status_code == 200
    # Bob's account locks after three wrong passwords.
    for _ in range(3):
        Browser(mw).login(OTHER, WRONG_PASSWORD)

    reply = scrape(mw)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.headers["Cache-Control"] == "no-store"
    text = reply.get_data(as_text=True)
    found = samples(text)
    assert value(found, "mfa_sign_ins_total", step="primary", method="forms", result="success") == 2
    assert value(found, "mfa_sign_ins_total", step="primary", method="forms", result="failure") == 3
    assert value(found, "mfa_sign_ins_total", step="second_factor", method="totp", result="success") == 1
    assert value(found, "mfa_sign_ins_total", step="enroll", method="totp", result="success") == 1
    assert value(found, "mfa_sign_ins_total", step="basic", method="app_password", result="success") == 1
    assert value(found, "mfa_lockouts_total", step="primary") == 1
    assert value(found, "mfa_decisions_total", outcome="pass") >= 5
    assert value(found, "mfa_decisions_total", outcome="redirect") >= 1
    assert value(found, "mfa_decisions_total", outcome="pages") >= 1
    assert value(found, "mfa_store_query_seconds_count") > 0
    assert ("mfa_revocation_view_age_seconds", ()) in found
    # Bounded label sets: every label value is one this module knows.
    for _name, labels in found:
        for key, label in labels:
            if key == "outcome":
                assert label in OUTCOMES
    secrets = [USERNAME, OTHER, PASSWORD, OTHER_PASSWORD, WRONG_PASSWORD, secret, code, app_password,
               app_password.replace(" ", ""), session_cookie, "192.0.2", rt.config.secret_keys[0],
               rt.config.encryption_keys[0]]
    leaked = [s for s in secrets if s and s in text]
    assert leaked == [], leaked


@pytest.mark.parametrize(("remote_addr", "forwarded_for", "status"), [
    pytest.param("127.0.0.1", None, 200, id="local"),
    pytest.param("10.1.2.3", None, 403, id="unknown-network"),
    pytest.param("127.0.0.1", "10.9.9.9", 403, id="through-the-trusted-proxy-for-an-outsider"),
    pytest.param("10.1.2.3", "127.0.0.1", 403, id="outsider-claiming-to-be-local"),
])
def test_only_listed_networks_may_scrape(mw: MFAMiddleware, remote_addr: str, forwarded_for: str | None,
                                         status: int) -> None:
    """The client address is the one the trusted-proxy chain gives, as everywhere else."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    reply = scrape(mw, remote_addr, headers)
    assert reply.status_code == status
    if status == 403:
        assert b"mfa_" not in reply.get_data()


def test_off_by_default(sqlite_url: str) -> None:
    middleware = make_middleware(sqlite_url)
    try:
        assert middleware.metrics is None
        assert scrape(middleware).status_code == 404
        assert type(middleware.gate).__name__ == "Gate"  # nothing counted on the hot path
    finally:
        middleware.runtime.close()


def test_each_middleware_has_its_own_registry(tmp_path: Path) -> None:
    first = make_middleware(f"sqlite:///{tmp_path / 'a.db'}", metrics=METRICS_ON)
    second = make_middleware(f"sqlite:///{tmp_path / 'b.db'}", metrics=METRICS_ON)
    try:
        for _ in range(3):
            Browser(first).get("/home")
        first_found = samples(scrape(first).get_data(as_text=True))
        second_found = samples(scrape(second).get_data(as_text=True))
        assert value(first_found, "mfa_decisions_total", outcome="redirect") == 3
        assert value(second_found, "mfa_decisions_total", outcome="redirect") == 0
    finally:
        for m in (first, second):
            assert m.metrics is not None
            m.metrics.close()
            m.runtime.close()


@pytest.mark.parametrize(("networks", "status"), [
    pytest.param(["127.0.0.1/32"], 200, id="listed"),
    pytest.param(["10.0.0.0/8"], 403, id="not-listed"),
])
def test_own_port(sqlite_url: str, networks: list[str], status: int) -> None:
    port = free_port()
    middleware = make_middleware(sqlite_url, metrics={"enabled": True, "port": port, "networks": networks})
    try:
        Browser(middleware).get("/home")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            reply = conn.getresponse()
            body = reply.read().decode()
        finally:
            conn.close()
        assert reply.status == status
        if status == 200:
            assert value(samples(body), "mfa_decisions_total", outcome="redirect") == 1
        assert scrape(middleware).status_code == 404  # no page: only the port was asked for
    finally:
        assert middleware.metrics is not None
        middleware.metrics.close()
        middleware.runtime.close()


def test_label_values_outside_the_known_sets_become_other(mw: MFAMiddleware) -> None:
    """Even a caller that audits an odd value cannot put it into a label."""
    assert mw.metrics is not None
    mw.metrics.observe_audit("second_factor", "alice-typed-this", {"method": "ssn-123-45-6789"})
    text = scrape(mw).get_data(as_text=True)
    assert "alice-typed-this" not in text and "ssn-123" not in text
    assert value(samples(text), "mfa_sign_ins_total", step="second_factor", method="other", result="other") == 1


def test_the_tally_is_exact_under_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    tally = Tally()

    def work() -> None:
        for _ in range(20_000):
            tally.add()

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(work) for _ in range(4)] + [pool.submit(lambda: tally.value)]:
            future.result()
    assert tally.value == 80_000
    assert tally.value == 80_000  # reading does not count


@pytest.mark.parametrize(("metrics", "message"), [
    pytest.param({"enabled": True}, "metrics.enabled: say where", id="nowhere"),
    pytest.param({"enabled": True, "path": "/metrics"}, "metrics.path: must be one page under the prefix",
                 id="outside-prefix"),
    pytest.param({"enabled": True, "path": "/_mfa/login"}, "sign-in page", id="shadows-a-page"),
    pytest.param({"enabled": True, "path": "/_mfa/ready"}, "sign-in page", id="shadows-ready"),
    pytest.param({"enabled": True, "port": 70000}, "metrics.port: must be between 1 and 65535", id="port"),
    pytest.param({"enabled": True, "port": 9464, "host": "anywhere"}, "metrics.host", id="host"),
    pytest.param({"enabled": True, "port": 9464, "networks": ["everyone"]}, "'everyone' is not an IP",
                 id="networks"),
    pytest.param({"enabled": "yes"}, "metrics.enabled: expected true or false", id="enabled-type"),
    pytest.param({"enabled": True, "port": 9464, "colour": "red"}, "metrics.colour: unknown key", id="unknown"),
])
def test_bad_metrics_settings_name_the_key(metrics: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        make_config("sqlite:///x.db", metrics=metrics)
