"""The web authenticator (``<prefix>/authenticator/``) in Chromium, as a person uses it: a "phone" browser context
runs the authenticator; a "computer" context signs in to the demo app behind the middleware. The phone enrolls by
pasting the registration address the computer's enrollment page shows (or through the page's link, which carries
the address in the URL fragment), then answers sign-ins it receives by long-poll: approve by picking the page's
number (the computer's page continues by itself), deny, a wrong number, report fraud (after a confirmation; the
account is blocked). Also pinned in the browser: the device key is a non-extractable CryptoKey; an envelope whose
server signature does not verify is never shown (the test corrupts the server's answer in flight); the manifest
and service worker make the app installable; a push delivered to the service worker (CDP
``ServiceWorker.deliverPushMessage``) shows a notification that names only a site the authenticator knows.

One server (werkzeug, threaded, on ``localhost``: a secure context for WebCrypto and service workers) and one
browser are shared by the module; each test has its own user and fresh browser contexts. The site in this branch
offers no Web Push key, so the authenticator works on long-poll alone.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from mfa_middleware import MFAMiddleware
from mfa_middleware.demo import demo_app
from tests.support.browser import sign_in, sign_out
from tests.support.components import require_component
from tests.support.mfa import FAST_HASHER, make_config
from tests.support.servers import serve_wsgi

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Request, Route

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
SITE_NAME = "Secure sign-in"
#: bounds on a hang, not timing assertions: a long-poll answers at once when a request is made, the sign-in page
#: polls every second
SHOWN_WITHIN_MS = 15_000
CONTINUES_WITHIN_MS = 15_000
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


@dataclass
class Site:
    base: str
    mw: MFAMiddleware

    @property
    def app(self) -> str:
        return self.base + "/_mfa/authenticator/"

    def new_user(self) -> str:
        name = "u" + secrets.token_hex(4)
        self.mw.runtime.accounts.add(name, actor="test", password=PASSWORD)
        return name

    def blocked(self, username: str) -> bool:
        user = self.mw.runtime.store.get_user(username)
        assert user is not None
        return user.blocked(time.time())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    database = f"sqlite:///{tmp_path_factory.mktemp('pwa') / 'mfa.db'}"
    mw = MFAMiddleware(demo_app, make_config(database, methods={"enabled": ["push", "totp"]}),
                       password_hasher=FAST_HASHER)
    try:
        mw.runtime.store.upgrade()
        with serve_wsgi(mw, host="localhost") as base:
            yield Site(base, mw)
    finally:
        mw.runtime.close()


@dataclass
class Devices:
    """The computer (where the person signs in) and the phone (the authenticator), each its own context."""

    computer: Page
    phone: Page
    requested: list[str]


@pytest.fixture
def devices(browser: Browser, site: Site) -> Iterator[Devices]:
    requested: list[str] = []
    contexts: list[BrowserContext] = [browser.new_context(), browser.new_context(**PHONE)]  # type: ignore[arg-type]

    def record(request: Request) -> None:
        requested.append(request.url)

    for context in contexts:
        context.on("request", record)
    try:
        yield Devices(contexts[0].new_page(), contexts[1].new_page(), requested)
        elsewhere = sorted({u for u in requested if urlsplit(u).hostname not in LOCAL_HOSTS})
        assert elsewhere == [], elsewhere
    finally:
        for context in contexts:
            context.close()


def start_push_enrollment(computer: Page, site: Site, username: str) -> str:
    """The computer's first sign-in, up to the page that shows the QR code; returns the registration address."""
    from playwright.sync_api import expect

    sign_in(computer, site.base, username, PASSWORD)
    expect(computer.get_by_role("heading", name="More information required")).to_be_visible()
    computer.get_by_role("radio", name=re.compile("Authenticator app notification")).check()
    computer.get_by_role("button", name="Set it up now").click()
    expect(computer.get_by_role("heading", name="Add your authenticator")).to_be_visible()
    return computer.locator("#registration-url").inner_text()


def open_authenticator(phone: Page, site: Site) -> None:
    from playwright.sync_api import expect

    phone.goto(site.app)
    expect(phone.get_by_role("heading", name="Authenticator", exact=True)).to_be_visible()


def add_account(phone: Page, url: str, username: str) -> None:
    from playwright.sync_api import expect

    phone.get_by_label("Registration address").fill(url)
    phone.get_by_role("button", name="Add account").click()
    expect(phone.get_by_role("status").first).to_contain_text(f"Added {username} at {SITE_NAME}")
    expect(phone.locator("#account-list li", has_text=username)).to_be_visible()


def confirm_on_computer(computer: Page, site: Site, username: str) -> None:
    from playwright.sync_api import expect

    computer.get_by_role("button", name="I added the device").click()
    expect(computer).to_have_url(site.base + "/")
    expect(computer.locator("body")).to_contain_text(f"Signed in as {username}")
    sign_out(computer, site.base)


def enrolled(devices: Devices, site: Site) -> str:
    """A new user whose phone authenticator is set up by pasting; the computer is signed out again."""
    username = site.new_user()
    url = start_push_enrollment(devices.computer, site, username)
    open_authenticator(devices.phone, site)
    add_account(devices.phone, url, username)
    confirm_on_computer(devices.computer, site, username)
    return username


def waiting_number(computer: Page) -> int:
    from playwright.sync_api import expect

    expect(computer.get_by_role("heading", name="Verify your identity")).to_be_visible()
    shown = computer.locator("#push-number")
    expect(shown).to_have_text(re.compile(r"^\d\d$"))
    return int(shown.inner_text())


def request_card(phone: Page) -> Any:
    """The one sign-in request the phone shows (it arrives through the long-poll, without a reload)."""
    from playwright.sync_api import expect

    card = phone.get_by_role("article", name=f"Sign-in request for {SITE_NAME}")
    expect(card).to_have_count(1, timeout=SHOWN_WITHIN_MS)
    return card


def sign_in_with_request(devices: Devices, site: Site, username: str) -> tuple[int, Any]:
    sign_in(devices.computer, site.base, username, PASSWORD)
    number = waiting_number(devices.computer)
    return number, request_card(devices.phone)


def assert_accessible(page: Page) -> None:
    """axe-core (axe-playwright-python) finds no serious or critical violation on the page as it is now."""
    try:
        from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
    except ImportError as error:
        require_component("axe-playwright-python", f"cannot import it ({error})")
    results = Axe().run(page)
    bad = [(v["id"], v["impact"]) for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], bad


def test_enroll_by_pasting_then_approve_a_sign_in_through_long_poll(devices: Devices, site: Site) -> None:
    from playwright.sync_api import expect

    username = enrolled(devices, site)
    number, card = sign_in_with_request(devices, site, username)
    host = urlsplit(site.base).netloc
    expect(card.locator("[data-fact=account]")).to_have_text(username)
    expect(card.locator("[data-fact=host]")).to_have_text(host)
    expect(card.locator("[data-fact=place]")).to_have_text("127.0.0.1")
    expect(card.locator("[data-fact=browser]")).to_contain_text("Chrome")
    expect(card.locator("[data-fact=time]")).to_have_text(re.compile(r"\d"))
    choices = card.get_by_role("button", name=re.compile(r"^Approve with \d\d$"))
    expect(choices).to_have_count(3)
    assert number in [int(str(n)) for n in choices.evaluate_all("bs => bs.map(b => b.dataset.number)")]
    assert_accessible(devices.phone)
    verify_url = devices.computer.url
    card.get_by_role("button", name=f"Approve with {number}").click()
    expect(card.get_by_role("status")).to_contain_text("Approved")
    devices.computer.wait_for_url(site.base + "/", timeout=CONTINUES_WITHIN_MS)  # no click: the page moved on
    assert devices.computer.url != verify_url
    expect(devices.computer.locator("body")).to_contain_text(f"Signed in as {username}")


@pytest.mark.parametrize("answer", [pytest.param("deny", id="deny"), pytest.param("wrong-number", id="wrong-number")])
def test_deny_and_a_wrong_number_fail_the_sign_in(devices: Devices, site: Site, answer: str) -> None:
    from playwright.sync_api import expect

    username = enrolled(devices, site)
    number, card = sign_in_with_request(devices, site, username)
    if answer == "deny":
        card.get_by_role("button", name="Deny").click()
        expect(card.get_by_role("status")).to_contain_text("Denied")
    else:
        wrong = next(int(n) for n in card.get_by_role("button", name=re.compile(r"^Approve with")).evaluate_all(
            "bs => bs.map(b => b.dataset.number)") if int(n) != number)
        card.get_by_role("button", name=f"Approve with {wrong}").click()
        expect(card.get_by_role("status")).to_contain_text("not the number")
    expect(card.get_by_role("button", name="Deny")).to_be_disabled()
    expect(devices.computer.get_by_role("heading", name="Sign-in not approved")).to_be_visible(
        timeout=CONTINUES_WITHIN_MS)
    devices.computer.goto(site.base + "/")
    expect(devices.computer.get_by_role("heading", name="Sign in")).to_be_visible()


def test_report_fraud_asks_first_then_blocks_the_account(devices: Devices, site: Site) -> None:
    from playwright.sync_api import expect

    username = enrolled(devices, site)
    _, card = sign_in_with_request(devices, site, username)
    card.get_by_role("button", name="Report fraud").click()
    confirm = card.get_by_role("group", name="Confirm the fraud report")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()  # changing one's mind sends nothing
    expect(confirm).to_be_hidden()
    assert not site.blocked(username)
    card.get_by_role("button", name="Report fraud").click()
    confirm.get_by_role("button", name="Yes, report fraud").click()
    expect(card.get_by_role("status")).to_contain_text("Reported as fraud")
    expect(card.get_by_role("status")).to_contain_text("blocked")
    assert site.blocked(username)
    expect(devices.computer.get_by_role("heading", name="Verify your identity")).to_have_count(
        0, timeout=CONTINUES_WITHIN_MS)
    sign_in(devices.computer, site.base, username, PASSWORD)
    expect(devices.computer.get_by_role("heading", name="Account blocked")).to_be_visible()


STORED_KEY = """async () => {
  const db = await new Promise((ok, no) => { const r = indexedDB.open("mfa-authenticator", 1);
                                             r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
  const accounts = await new Promise((ok) => { const r = db.transaction("accounts").objectStore("accounts").getAll();
                                               r.onsuccess = () => ok(r.result); });
  db.close();
  const key = accounts[0].private_key;
  const refused = [];
  for (const format of ["pkcs8", "jwk", "raw"]) {
    try { await crypto.subtle.exportKey(format, key); } catch (e) { refused.push(format + ":" + e.name); }
  }
  const signature = await crypto.subtle.sign({name: "ECDSA", hash: "SHA-256"}, key, new Uint8Array([1]));
  return {count: accounts.length, isCryptoKey: key instanceof CryptoKey, extractable: key.extractable,
          type: key.type, algorithm: key.algorithm, usages: key.usages, refused, signatureLength: signature.byteLength,
          fields: Object.keys(accounts[0]).sort()};
}"""


def test_the_device_key_is_a_non_extractable_cryptokey(devices: Devices, site: Site) -> None:
    enrolled(devices, site)
    devices.phone.reload()  # read back from IndexedDB, as after a restart
    stored = devices.phone.evaluate(STORED_KEY)
    assert stored["count"] == 1 and stored["isCryptoKey"] is True
    assert stored["extractable"] is False
    assert (stored["type"], stored["algorithm"], stored["usages"]) == (
        "private", {"name": "ECDSA", "namedCurve": "P-256"}, ["sign"])
    assert stored["refused"] == ["pkcs8:InvalidAccessError", "jwk:InvalidAccessError", "raw:InvalidAccessError"]
    assert stored["signatureLength"] == 64  # raw r || s, as the protocol wants
    assert "private_key" in stored["fields"] and not {"pkcs8", "jwk", "secret"} & set(stored["fields"])


def flip(text: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("part", [pytest.param("signature", id="signature"), pytest.param("payload", id="payload")])
def test_an_envelope_the_server_did_not_sign_is_never_shown(devices: Devices, site: Site, part: str) -> None:
    """The server's answer is corrupted in flight (one bit of the signature or of the signed payload): the
    authenticator says it ignored a request and shows none. With the interception removed, the same request shows:
    the signature check, nothing else, kept it off the screen."""
    from playwright.sync_api import expect

    username = enrolled(devices, site)
    corrupted: list[int] = []

    def corrupt(route: Route) -> None:
        response = route.fetch()
        data = response.json()
        for envelope in data.get("requests", []):
            envelope[part] = flip(envelope[part])
            corrupted.append(1)
        route.fulfill(response=response, body=json.dumps(data))

    pattern = re.compile(r"/_mfa/device/v1/requests\?")
    devices.phone.route(pattern, corrupt)
    devices.phone.reload()  # the long-poll that was waiting started before the interception
    sign_in(devices.computer, site.base, username, PASSWORD)
    waiting_number(devices.computer)
    expect(devices.phone.get_by_role("alert")).to_contain_text("did not sign", timeout=SHOWN_WITHIN_MS)
    assert corrupted
    expect(devices.phone.get_by_role("article")).to_have_count(0)
    expect(devices.phone.locator("#no-requests")).to_be_visible()
    devices.phone.unroute(pattern, corrupt)
    request_card(devices.phone)


def test_the_fragment_carries_the_registration_address_and_leaves_the_address_bar(devices: Devices,
                                                                                  site: Site) -> None:
    """"On this phone? Open the web authenticator": the link opens the app with ``#register=<url>``; the app fills
    the field, clears the fragment from the address bar and the history entry, and waits for the person to press
    "Add account" (a link alone never adds an account)."""
    from playwright.sync_api import expect

    username = site.new_user()
    url = start_push_enrollment(devices.computer, site, username)
    link = devices.computer.get_by_role("link", name="Open the web authenticator")
    with devices.computer.context.expect_page() as opened:
        link.click()
    app = opened.value
    expect(app.get_by_label("Registration address")).to_have_value(url)
    assert app.url == site.app
    assert app.evaluate("location.hash") == ""
    assert all("register" not in u and "token" not in u for u in devices.requested if "/authenticator/" in u)
    expect(app.locator("#account-list li")).to_have_count(0)
    app.get_by_role("button", name="Add account").click()
    expect(app.locator("#account-list li", has_text=username)).to_be_visible()
    confirm_on_computer(devices.computer, site, username)


def test_several_accounts_and_removing_one_here(devices: Devices, site: Site) -> None:
    from playwright.sync_api import expect

    first = enrolled(devices, site)
    second = site.new_user()
    add_account(devices.phone, start_push_enrollment(devices.computer, site, second), second)
    confirm_on_computer(devices.computer, site, second)
    expect(devices.phone.locator("#account-list li")).to_have_count(2)

    devices.phone.get_by_role("button", name=f"Remove {first} from this authenticator").click()
    devices.phone.get_by_role("group", name="Confirm removal").get_by_role("button", name="Keep it").click()
    expect(devices.phone.locator("#account-list li")).to_have_count(2)
    devices.phone.get_by_role("button", name=f"Remove {first} from this authenticator").click()
    devices.phone.get_by_role("button", name="Yes, remove it").click()
    expect(devices.phone.locator("#account-list li")).to_have_count(1)
    devices.phone.reload()
    expect(devices.phone.locator("#account-list li")).to_have_count(1)
    expect(devices.phone.locator("#account-list li", has_text=second)).to_be_visible()

    # The remaining account still gets its requests.
    number, card = sign_in_with_request(devices, site, second)
    card.get_by_role("button", name=f"Approve with {number}").click()
    devices.computer.wait_for_url(site.base + "/", timeout=CONTINUES_WITHIN_MS)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_installable_the_manifest_parses_and_the_service_worker_activates(devices: Devices, site: Site) -> None:
    phone = devices.phone
    open_authenticator(phone, site)
    manifest_url = phone.evaluate("document.querySelector('link[rel=manifest]').href")
    manifest = phone.evaluate("async (u) => (await fetch(u)).json()", manifest_url)  # the browser's JSON parser
    assert manifest["name"] == f"{SITE_NAME} authenticator" and manifest["short_name"]
    assert (manifest["display"], manifest["start_url"], manifest["scope"]) == ("standalone", "./", "./")
    for icon in manifest["icons"]:
        if icon["type"] == "image/png":
            size = int(icon["sizes"].split("x")[0])
            body = phone.request.get(site.app + icon["src"]).body()
            assert png_size(body) == (size, size)
    assert {icon["sizes"] for icon in manifest["icons"]} >= {"192x192", "512x512"}
    worker = phone.evaluate("""async () => {
      const r = await navigator.serviceWorker.ready;
      if (r.active.state !== "activated") {
        await new Promise((ok) => r.active.addEventListener("statechange", () => {
          if (r.active.state === "activated") ok(); }));
      }
      return {scope: r.scope, state: r.active.state, script: r.active.scriptURL};
    }""")
    assert worker == {"scope": site.app, "state": "activated", "script": site.app + "sw.js"}
    phone.reload()
    assert phone.evaluate("navigator.serviceWorker.controller !== null")  # it controls the app after a reload
    # The installability facts Chromium itself reports: a parsed manifest without errors.
    cdp = phone.context.new_cdp_session(phone)
    app_manifest = cdp.send("Page.getAppManifest")
    assert app_manifest["errors"] == [], app_manifest["errors"]
    assert app_manifest["url"] == manifest_url


def test_a_push_shows_a_notification_naming_only_a_known_site(devices: Devices, site: Site) -> None:
    """A Web Push message delivered to the service worker (CDP ``ServiceWorker.deliverPushMessage``, as a push
    service would) shows "Sign-in request for <site>"; a payload that names another site is not believed."""
    phone = devices.phone
    enrolled(devices, site)
    phone.context.grant_permissions(["notifications"], origin=site.base)
    phone.evaluate("navigator.serviceWorker.ready")
    cdp = phone.context.new_cdp_session(phone)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda event: registrations.extend(event["registrations"]))
    cdp.send("ServiceWorker.enable")
    phone.wait_for_function("navigator.serviceWorker.controller !== null")
    ours = [r for r in registrations if r["scopeURL"] == site.app and not r["isDeleted"]]
    assert ours, registrations
    titles: list[str] = []
    for claimed in (SITE_NAME, "Somewhere else"):
        payload = json.dumps({"v": 1, "type": "sign-in", "site": claimed, "id": "x"})
        cdp.send("ServiceWorker.deliverPushMessage", {"origin": site.base, "registrationId":
                                                      ours[0]["registrationId"], "data": payload})
        shown = phone.evaluate("""async () => {
          const r = await navigator.serviceWorker.ready;
          for (;;) {
            const found = await r.getNotifications({tag: "mfa-sign-in"});
            if (found.length) { found.forEach((n) => n.close()); return found.map((n) => [n.title, n.body]); }
            await new Promise((ok) => setTimeout(ok, 50));
          }
        }""")
        titles.extend(title for title, _ in shown)
    assert titles == [f"Sign-in request for {SITE_NAME}"] * 2


def vapid_key() -> tuple[str, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    raw = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), raw


def offer_web_push(phone: Page, vapid: str) -> None:
    """The registration answer as a site with a VAPID key gives it (this branch's server has none yet)."""
    def add_key(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, body=json.dumps({**response.json(), "vapid_public_key": vapid}))

    phone.route(re.compile(r"/_mfa/device/v1/register$"), add_key)


#: Headless Chromium refuses every push subscription ("Registration failed - permission denied": it has no push
#: service), so this stands in for the browser's push service, and only for that.
FAKE_PUSH_SERVICE = """
PushManager.prototype.getSubscription = async function () { return null; };
PushManager.prototype.subscribe = async function (options) {
  window.subscribedWith = Array.from(new Uint8Array(options.applicationServerKey));
  return {options, unsubscribe: async () => true, toJSON: () => ({endpoint: "https://push.invalid/send/abc",
          expirationTime: null, keys: {p256dh: "BPdh", auth: "QXV0aA"}})};
};
"""


def test_web_push_subscription_goes_to_the_signed_channel_endpoint(browser: Browser, devices: Devices,
                                                                   site: Site) -> None:
    """With a VAPID key in the registration answer, the app subscribes with that key and sends the subscription to
    ``POST .../device/v1/channel``, signed like every device request (checked here against the device's key)."""
    from playwright.sync_api import expect

    from mfa_middleware.factors.push import protocol

    vapid, raw = vapid_key()
    phone = devices.phone
    phone.context.grant_permissions(["notifications"], origin=site.base)
    phone.add_init_script(FAKE_PUSH_SERVICE)
    offer_web_push(phone, vapid)
    sent: list[Request] = []

    def channel(route: Route) -> None:
        sent.append(route.request)
        route.fulfill(status=200, content_type="application/json", body='{"channel": "webpush"}')

    phone.route(re.compile(r"/_mfa/device/v1/channel$"), channel)
    username = site.new_user()
    url = start_push_enrollment(devices.computer, site, username)
    open_authenticator(phone, site)
    add_account(phone, url, username)
    expect(phone.get_by_role("status").first).to_contain_text("Notifications are on")
    expect(phone.locator("#account-list li", has_text=username)).to_contain_text("notifications on")
    assert phone.evaluate("window.subscribedWith") == list(raw)
    assert len(sent) == 1
    request = sent[0]
    body = request.post_data_buffer or b""
    assert json.loads(body) == {"channel": {"type": "webpush", "endpoint": "https://push.invalid/send/abc",
                                            "keys": {"p256dh": "BPdh", "auth": "QXV0aA"}}}
    headers = request.headers
    device = site.mw.runtime.store.push_device_by_account(headers["x-mfa-account"])
    assert device is not None
    key, _ = protocol.load_public_key(device.public_key)
    signed = protocol.request_string("POST", "/_mfa/device/v1/channel", body, int(headers["x-mfa-timestamp"]),
                                     headers["x-mfa-nonce"], headers["x-mfa-account"])
    assert protocol.verify(key, protocol.unb64u(headers["x-mfa-signature"], "signature"), signed)
    confirm_on_computer(devices.computer, site, username)


def test_without_a_push_service_the_app_says_so_and_keeps_long_polling(devices: Devices, site: Site) -> None:
    """Headless Chromium refuses the subscription for real: the account is added all the same, the person is told,
    and requests still arrive by long-poll."""
    from playwright.sync_api import expect

    vapid, _ = vapid_key()
    phone = devices.phone
    phone.context.grant_permissions(["notifications"], origin=site.base)
    offer_web_push(phone, vapid)
    username = site.new_user()
    url = start_push_enrollment(devices.computer, site, username)
    open_authenticator(phone, site)
    add_account(phone, url, username)
    expect(phone.get_by_role("status").first).to_contain_text("keep this page open")
    confirm_on_computer(devices.computer, site, username)
    number, card = sign_in_with_request(devices, site, username)
    card.get_by_role("button", name=f"Approve with {number}").click()
    devices.computer.wait_for_url(site.base + "/", timeout=CONTINUES_WITHIN_MS)
