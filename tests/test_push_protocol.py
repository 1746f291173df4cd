"""The push device protocol, attacked from the outside: the pages run on a real socket (werkzeug, threaded) and the
device is the real ``mfa-authenticator`` (click's runner, in-process, with its own key file), or raw signed HTTP
requests built from it where a test must forge, replay or age one.

Every refusal must change nothing: the request stays pending and the sign-in still waits. A wrong number and a
deny end the attempt as a failed one (counted); a fraud report blocks the user.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mfa_middleware import MFAMiddleware
from mfa_middleware.authenticator.cli import main as authenticator
from mfa_middleware.authenticator.client import DeviceClient
from mfa_middleware.authenticator.keystore import KeyStore
from mfa_middleware.factors.push import protocol
from mfa_middleware.store import UserRecord
from tests.support.mfa import FAST_HASHER, echo_app, make_config
from tests.support.servers import serve_wsgi

PASSWORD = "correct horse battery staple"


class OffsetClock:
    """The real time plus an offset the test moves (the device signs with the real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Site:
    mw: MFAMiddleware
    base: str
    clock: OffsetClock

    def user(self, name: str) -> UserRecord:
        found = self.mw.runtime.store.get_user(name)
        assert found is not None
        return found


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


class Person:
    """A browser-less person on the real socket: cookies kept, redirects not followed."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.http = httpx.Client(base_url=site.base, follow_redirects=False, timeout=30)

    def login(self, username: str) -> httpx.Response:
        page = self.http.get("/_mfa/login?next=/")
        return self.http.post("/_mfa/login", data={"username": username, "password": PASSWORD, "next": "/",
                                                   "csrf_token": csrf(page.text)})

    def start_enrollment(self, username: str) -> tuple[str, str]:
        """Sign in for the first time and choose push: (registration URL, the enrollment page's CSRF token)."""
        assert self.login(username).headers["Location"].endswith("/_mfa/enroll")
        start = self.http.get("/_mfa/enroll")
        moved = self.http.post("/_mfa/enroll", data={"action": "start", "method": "push",
                                                     "csrf_token": csrf(start.text)})
        assert moved.status_code == 303, moved.text
        page = self.http.get("/_mfa/enroll")
        url = re.search(r'<code id="registration-url" class="secret">([^<]+)</code>', page.text)
        assert url, page.text
        return url.group(1).replace("&amp;", "&"), csrf(page.text)

    def finish_enrollment(self, token: str) -> httpx.Response:
        return self.http.post("/_mfa/enroll", data={"action": "confirm", "csrf_token": token})

    def verify_page(self) -> tuple[str, str]:
        """The push page of a sign-in: (the number it shows, CSRF token)."""
        page = self.http.get("/_mfa/verify")
        assert page.status_code == 200, page.text
        number = re.search(r'id="push-number"[^>]*>(\d\d)<', page.text)
        assert number, page.text
        return number.group(1), csrf(page.text)

    def submit(self, token: str) -> httpx.Response:
        return self.http.post("/_mfa/verify", data={"code": "", "csrf_token": token})

    def poll(self) -> str:
        return str(self.http.get("/_mfa/push/status.json").json()["status"])


def cli(store: Path, *args: str) -> str:
    result = CliRunner().invoke(authenticator, ["--store", str(store), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def cli_fails(store: Path, *args: str) -> str:
    result = CliRunner().invoke(authenticator, ["--store", str(store), *args], catch_exceptions=False)
    assert result.exit_code != 0, result.output
    return result.output


def pending_ids(store: Path) -> list[str]:
    return re.findall(r"^(\S+)  ", cli(store, "pending"), re.MULTILINE)


@pytest.fixture
def site(database_url: str) -> Iterator[Site]:
    clock = OffsetClock()
    config = make_config(database_url, methods={"enabled": ["push", "totp"]}, site_name="Intranet")
    mw = MFAMiddleware(echo_app, config, clock=clock, password_hasher=FAST_HASHER)
    try:
        mw.runtime.store.upgrade()
        for name in ("alice", "bob"):
            mw.runtime.accounts.add(name, actor="test", password=PASSWORD)
        with serve_wsgi(mw) as base:
            yield Site(mw, base, clock)
    finally:
        mw.runtime.close()


def enrolled(site: Site, username: str, store: Path, *extra: str) -> Path:
    person = Person(site)
    url, token = person.start_enrollment(username)
    assert person.finish_enrollment(token).status_code == 200  # not registered yet: still waiting
    assert "added " in cli(store, "enroll", url, "--name", f"{username}'s laptop", *extra)
    done = person.finish_enrollment(token)
    assert done.status_code == 303 and done.headers["Location"] == "/", done.text
    return store


@pytest.fixture
def alice(site: Site, tmp_path: Path) -> Path:
    return enrolled(site, "alice", tmp_path / "alice" / "accounts.json")


def signing_in(site: Site, username: str = "alice") -> tuple[Person, str, str]:
    """A sign-in waiting on the push page: (person, number shown, CSRF token)."""
    person = Person(site)
    assert person.login(username).headers["Location"].endswith("/_mfa/verify")
    number, token = person.verify_page()
    return person, number, token


def device(store: Path) -> DeviceClient:
    return DeviceClient(KeyStore.load(store).accounts[0])


def signed_headers(client: DeviceClient, method: str, path: str, body: bytes, *, timestamp: int | None = None,
                   nonce: str | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    sig = protocol.sign(client.key, protocol.request_string(method, path, body, ts, nonce, client.account.account_id))
    return {protocol.HEADER_ACCOUNT: client.account.account_id, protocol.HEADER_TIMESTAMP: str(ts),
            protocol.HEADER_NONCE: nonce, protocol.HEADER_SIGNATURE: protocol.b64u(sig),
            "Content-Type": "application/json"}


def answer_body(client: DeviceClient, request_id: str, answer: str, number: int | None) -> bytes:
    ts = int(time.time())
    sig = protocol.sign(client.key, protocol.answer_string(request_id, answer, number, ts))
    return json.dumps({"request_id": request_id, "answer": answer, "number": number, "timestamp": ts,
                       "signature": protocol.b64u(sig)}).encode()


ANSWER_PATH = "/_mfa/device/v1/answer"


# -- the happy path ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", [pytest.param("ed25519", id="ed25519"), pytest.param("es256", id="p256")])
def test_the_right_number_signs_in(site: Site, tmp_path: Path, algorithm: str) -> None:
    store = enrolled(site, "alice", tmp_path / "keys.json", "--algorithm", algorithm)
    assert (store.stat().st_mode & 0o777) == 0o600
    person, number, token = signing_in(site)
    [request_id] = pending_ids(store)
    listing = cli(store, "pending")
    assert "host=127.0.0.1" in listing and "alice@Intranet" in listing and number in listing
    assert person.poll() == "pending"
    cli(store, "approve", request_id, "--number", number)
    assert person.poll() == "approved"
    done = person.submit(token)
    assert done.status_code == 303 and done.headers["Location"] == "/", done.text
    assert person.http.get("/").text.startswith("app path=/ user=alice level=2")
    assert pending_ids(store) == []


def test_a_long_poll_returns_when_a_sign_in_asks(site: Site, alice: Path) -> None:
    client = device(alice)
    found: list[int] = []
    waiting = threading.Thread(target=lambda: found.append(len(client.pending(wait=20))))
    waiting.start()
    signing_in(site)
    waiting.join(timeout=20)  # a bound on a hang: the new request wakes the poll long before the 20 s
    assert found == [1]


# -- refusals that change nothing -----------------------------------------------------------------------------------
def test_unsigned_and_wrongly_signed_requests_are_refused(site: Site, alice: Path, tmp_path: Path) -> None:
    person, number, _ = signing_in(site)
    client = device(alice)
    [request_id] = pending_ids(alice)
    body = answer_body(client, request_id, "approve", int(number))
    http = httpx.Client(base_url=site.base)
    assert http.post(ANSWER_PATH, content=body).status_code == 401  # no signature headers
    forged = signed_headers(client, "POST", ANSWER_PATH, body)
    forged[protocol.HEADER_SIGNATURE] = protocol.b64u(protocol.sign(protocol.new_private_key("ed25519"), b"x"))
    assert http.post(ANSWER_PATH, content=body, headers=forged).status_code == 401
    # signed for another body: the body hash differs
    other = answer_body(client, request_id, "approve", int(number))
    swapped = signed_headers(client, "POST", ANSWER_PATH, body)
    assert http.post(ANSWER_PATH, content=other + b" ", headers=swapped).status_code == 401
    # a correct envelope around an answer another key signed
    stranger = protocol.new_private_key("ed25519")
    ts = int(time.time())
    bad_answer = json.dumps({"request_id": request_id, "answer": "approve", "number": int(number), "timestamp": ts,
                             "signature": protocol.b64u(protocol.sign(stranger, protocol.answer_string(
                                 request_id, "approve", int(number), ts)))}).encode()
    refused = http.post(ANSWER_PATH, content=bad_answer, headers=signed_headers(client, "POST", ANSWER_PATH,
                                                                                bad_answer))
    assert refused.status_code == 401 and "answer signature" in refused.text
    assert person.poll() == "pending"


def test_a_replayed_request_is_refused(site: Site, alice: Path) -> None:
    person, number, _ = signing_in(site)
    client = device(alice)
    [request_id] = pending_ids(alice)
    http = httpx.Client(base_url=site.base)
    # A listing captured once and sent again: the nonce was used.
    headers = signed_headers(client, "GET", "/_mfa/device/v1/requests?wait=0", b"")
    assert http.get("/_mfa/device/v1/requests?wait=0", headers=headers).status_code == 200
    again = http.get("/_mfa/device/v1/requests?wait=0", headers=headers)
    assert again.status_code == 401 and "replayed" in again.text
    # An answer captured on the wire and sent again is refused on its nonce, before the answer is read: the
    # first answer stands.
    approve = answer_body(client, request_id, "approve", int(number))
    approve_headers = signed_headers(client, "POST", ANSWER_PATH, approve)
    assert http.post(ANSWER_PATH, content=approve, headers=approve_headers).status_code == 200
    replayed = http.post(ANSWER_PATH, content=approve, headers=approve_headers)
    assert replayed.status_code == 401 and "replayed" in replayed.text
    assert person.poll() == "approved"


@pytest.mark.parametrize("skew", [pytest.param(-120, id="old"), pytest.param(120, id="future")])
def test_a_stale_timestamp_is_refused(site: Site, alice: Path, skew: int) -> None:
    person, number, _ = signing_in(site)
    client = device(alice)
    [request_id] = pending_ids(alice)
    body = answer_body(client, request_id, "approve", int(number))
    headers = signed_headers(client, "POST", ANSWER_PATH, body, timestamp=int(time.time()) + skew)
    refused = httpx.post(site.base + ANSWER_PATH, content=body, headers=headers)
    assert refused.status_code == 401 and "stale" in refused.text
    assert person.poll() == "pending"


def test_another_users_request_cannot_be_answered(site: Site, alice: Path, tmp_path: Path) -> None:
    bob = enrolled(site, "bob", tmp_path / "bob.json")
    person, number, _ = signing_in(site, "alice")
    [alice_request] = pending_ids(alice)
    assert pending_ids(bob) == []  # bob's device does not even see it
    body = answer_body(device(bob), alice_request, "approve", int(number))
    refused = httpx.post(site.base + ANSWER_PATH, content=body,
                         headers=signed_headers(device(bob), "POST", ANSWER_PATH, body))
    assert refused.status_code == 404
    cli_fails(bob, "approve", alice_request, "--number", number)
    assert person.poll() == "pending"


# -- answers that end the attempt ------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", [pytest.param("wrong_number", id="wrong-number"), pytest.param("deny", id="deny")])
def test_a_wrong_number_or_a_deny_fails_the_attempt(site: Site, alice: Path, answer: str) -> None:
    person, number, token = signing_in(site)
    [request_id] = pending_ids(alice)
    before = site.user("alice").failed_count
    if answer == "deny":
        cli(alice, "deny", request_id)
    else:
        listed = cli(alice, "pending")
        decoy = next(n for n in re.findall(r"\b(\d\d)\b", listed.split("numbers:")[1]) if n != number)
        assert "failed" in cli(alice, "approve", request_id, "--number", decoy)
    assert person.poll() in ("failed", "denied")
    refused = person.submit(token)
    assert refused.status_code == 401 and "not approved" in refused.text
    assert site.user("alice").failed_count == before + 1
    cli_fails(alice, "approve", request_id, "--number", number)  # no second answer
    assert person.http.get("/", follow_redirects=False).status_code in (302, 303)


def test_a_fraud_report_blocks_the_user(site: Site, alice: Path) -> None:
    person, _, token = signing_in(site)
    [request_id] = pending_ids(alice)
    assert "blocked" in cli(alice, "report", request_id).lower()
    assert site.user("alice").blocked(time.time())
    assert person.submit(token).status_code in (303, 403)
    assert person.http.get("/").status_code in (302, 303)
    again = Person(site)
    assert "blocked" in again.login("alice").text.lower() or again.login("alice").status_code == 403


def test_twenty_concurrent_approvals_are_accepted_once(site: Site, alice: Path) -> None:
    person, number, token = signing_in(site)
    [request_id] = pending_ids(alice)
    client = device(alice)
    bodies = [answer_body(client, request_id, "approve", int(number)) for _ in range(20)]
    prepared = [(b, signed_headers(client, "POST", ANSWER_PATH, b)) for b in bodies]
    statuses: list[int] = []
    start = threading.Barrier(20)

    def send(body: bytes, headers: dict[str, str]) -> None:
        start.wait()
        statuses.append(httpx.post(site.base + ANSWER_PATH, content=body, headers=headers, timeout=30).status_code)

    threads = [threading.Thread(target=send, args=p) for p in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [200] + [409] * 19
    assert person.submit(token).headers["Location"] == "/"
    assert Person(site).submit(token).status_code != 303  # the approval cannot be used again


# -- registration URLs ------------------------------------------------------------------------------------------------
def test_a_registration_url_works_once(site: Site, tmp_path: Path) -> None:
    person = Person(site)
    url, token = person.start_enrollment("alice")
    cli(tmp_path / "first.json", "enroll", url)
    assert "registration failed: 410" in cli_fails(tmp_path / "second.json", "enroll", url)
    assert person.finish_enrollment(token).headers["Location"] == "/"
    assert len(KeyStore.load(tmp_path / "first.json").accounts) == 1


def test_an_expired_registration_url_is_refused(site: Site, tmp_path: Path) -> None:
    person = Person(site)
    url, token = person.start_enrollment("alice")
    site.clock.offset = 10 * 60 + 1
    assert "registration failed: 410" in cli_fails(tmp_path / "keys.json", "enroll", url)
    site.clock.offset = 0
    assert person.finish_enrollment(token).status_code == 200  # still not set up


# -- the push cap ---------------------------------------------------------------------------------------------------
def test_pushes_are_capped_per_user(site: Site, alice: Path) -> None:
    for _ in range(5):
        signing_in(site)
    sixth = Person(site)
    sixth.login("alice")
    refused = sixth.http.get("/_mfa/verify")
    assert refused.status_code == 429 and "Too many sign-in requests" in refused.text
    assert "Sign in another way" in refused.text or "Try again" in refused.text
    assert len(pending_ids(alice)) == 5


# -- the key file ------------------------------------------------------------------------------------------------------
def test_a_key_file_others_can_read_is_refused(site: Site, alice: Path) -> None:
    alice.chmod(0o644)
    assert "readable or writable by others" in cli_fails(alice, "accounts")


# -- adding push later ------------------------------------------------------------------------------------------------
def test_push_can_be_added_from_the_security_info_page(site: Site, tmp_path: Path) -> None:
    import pyotp

    person = Person(site)
    assert person.login("bob").headers["Location"].endswith("/_mfa/enroll")
    start = person.http.get("/_mfa/enroll")
    person.http.post("/_mfa/enroll", data={"action": "start", "method": "totp", "csrf_token": csrf(start.text)})
    page = person.http.get("/_mfa/enroll")
    secret = re.search(r'<code id="secret" class="secret">([A-Z2-7 ]+)</code>', page.text)
    assert secret
    code = pyotp.TOTP(secret.group(1).replace(" ", "")).now()
    assert person.http.post("/_mfa/enroll", data={"action": "confirm", "code": code,
                                                  "csrf_token": csrf(page.text)}).status_code == 303
    choose = person.http.get("/_mfa/methods/add")
    moved = person.http.post("/_mfa/methods/add", data={"action": "start", "method": "push",
                                                         "csrf_token": csrf(choose.text)})
    assert moved.status_code == 303, moved.text
    shown = person.http.get(moved.headers["Location"])
    url = re.search(r'<code id="registration-url" class="secret">([^<]+)</code>', shown.text)
    assert url, shown.text
    store = tmp_path / "bob.json"
    cli(store, "enroll", url.group(1).replace("&amp;", "&"))
    done = person.http.post(moved.headers["Location"], data={"action": "confirm", "csrf_token": csrf(shown.text)})
    assert done.status_code == 303 and "done=added" in done.headers["Location"], done.text
    assert [m.kind for m in site.mw.runtime.store.list_methods(site.user("bob").id)] == ["totp", "push"]


# -- the other commands -----------------------------------------------------------------------------------------------
def test_watch_asks_on_the_terminal_and_approves(site: Site, alice: Path) -> None:
    person, number, token = signing_in(site)
    result = CliRunner().invoke(authenticator, ["--store", str(alice), "watch", "--once"], input=f"{number}\n",
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Pick the number" in result.output and "approved" in result.output
    assert person.submit(token).headers["Location"] == "/"


def test_codes_shows_totp_codes_of_totp_accounts(tmp_path: Path) -> None:
    import pyotp

    store = tmp_path / "keys.json"
    secret = pyotp.random_base32()
    cli(store, "enroll", f"otpauth://totp/Intranet:alice?secret={secret}&issuer=Intranet")
    shown = cli(store, "codes")
    assert re.match(r"^\d{6}  Intranet:alice", shown), shown
    assert pyotp.TOTP(secret).verify(shown[:6], valid_window=1)
    assert "totp  Intranet:alice" in cli(store, "accounts")
