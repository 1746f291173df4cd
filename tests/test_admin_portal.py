"""The admin portal (``/_mfa/admin``): who gets in (attacks first), then every action through its confirmation,
with CSRF, a fresh second factor and an audit row naming the acting administrator."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Iterator

import pyotp
import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import update
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from mfa_middleware import MFAMiddleware
from mfa_middleware.pages.admin import MAX_IMPORT_ROWS, MAX_UPLOAD, SALT_CONFIRM
from mfa_middleware.store.schema import users
from tests.admin_support import PASSWORD, Admin, token_of
from tests.support.mfa import Browser, Clock, csrf_of, make_middleware

XSS = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>'


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mw(sqlite_url: str, clock: Clock) -> Iterator[MFAMiddleware]:
    middleware = make_middleware(sqlite_url, clock, methods={"enabled": ["totp"], "remember_device": "14d"},
                                 basic={"admins_may_create": True})
    rt = middleware.runtime
    rt.accounts.add("root", actor="test", password=PASSWORD, is_admin=True)
    rt.accounts.add("other", actor="test", password=PASSWORD, is_admin=True)
    rt.accounts.add("bob", actor="test", password=PASSWORD, email="bob@example.com", groups=["sales"])
    rt.accounts.add("carol", actor="test", password=PASSWORD, state="disabled", groups=["ops"])
    yield middleware
    rt.close()


@pytest.fixture
def admin(mw: MFAMiddleware, clock: Clock) -> Admin:
    return Admin(mw, clock)


def events(mw: MFAMiddleware, event: str, username: str | None = None) -> list[tuple[str, str, str]]:
    return [(r.actor, r.result, str(r.username)) for r in mw.runtime.store.list_audit(limit=1000, event=event,
                                                                                       username=username)]


def is_portal(text: str) -> bool:
    return 'aria-label="Admin portal"' in text


# -- who gets in -------------------------------------------------------------------------------------------------
def test_not_signed_in_goes_to_sign_in_and_comes_back(mw: MFAMiddleware, clock: Clock) -> None:
    browser = Browser(mw)
    answer = browser.get("/_mfa/admin?q=bo")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/_mfa/login?next=/_mfa/admin%3Fq%3Dbo"
    first = browser.login("root", PASSWORD, "/_mfa/admin")
    assert first.headers["Location"].endswith("/_mfa/enroll")
    _, done = browser.enroll(clock)
    assert done.headers["Location"] == "/_mfa/admin"
    assert is_portal(browser.get("/_mfa/admin").text)


def test_a_non_admin_gets_a_page_with_a_way_on(mw: MFAMiddleware, clock: Clock) -> None:
    bob = Browser(mw)
    bob.sign_in_and_enroll("bob", PASSWORD, clock)
    for path in ("/_mfa/admin", "/_mfa/admin/user?name=root", "/_mfa/admin/audit?format=csv", "/_mfa/admin/usage"):
        page = bob.get(path)
        assert page.status_code == 403 and not is_portal(page.text), path
        assert "for administrators" in page.text and 'href="/_mfa/"' in page.text
    refused = bob.post("/_mfa/admin/action", {"action": "unblock", "name": "bob", "csrf_token": "x"})
    assert refused.status_code == 403 and "for administrators" in refused.text
    assert ("bob", "refused", "bob") in events(mw, "admin")


def test_an_admin_flag_in_an_old_cookie_is_not_enough(mw: MFAMiddleware, admin: Admin) -> None:
    """The store, not the session cookie, says who is an administrator now."""
    root = mw.runtime.store.get_user("root")
    assert root is not None
    mw.runtime.store.update_user(root.id, now=admin.clock.now, is_admin=False)
    assert admin.get("").status_code == 403


@pytest.mark.parametrize("secret", [
    pytest.param("password", id="primary-password"),
    pytest.param("app-password", id="app-password"),
])
def test_basic_credentials_never_open_the_portal(mw: MFAMiddleware, secret: str) -> None:
    root = mw.runtime.store.get_user("root")
    assert root is not None
    _, app_password = mw.runtime.app_passwords.create(root, "mail", actor="test")
    word = PASSWORD if secret == "password" else app_password
    header = "Basic " + base64.b64encode(f"root:{word}".encode()).decode()
    client = Browser(mw)
    for path in ("/_mfa/admin", "/_mfa/admin/audit?format=csv"):
        answer = client.get(path, headers={"Authorization": header})
        assert answer.status_code == 303 and answer.headers["Location"].startswith("/_mfa/login"), path
        assert not is_portal(answer.text) and "audit_export" not in answer.text


def test_a_remembered_device_alone_is_refused_then_a_step_up_opens(mw: MFAMiddleware, clock: Clock) -> None:
    browser = Browser(mw)
    secret = browser.sign_in_and_enroll("root", PASSWORD, clock)

    def sign_out() -> None:
        logout = browser.get("/_mfa/logout")
        browser.post("/_mfa/logout", {"csrf_token": csrf_of(logout.text)})

    sign_out()
    clock.advance(30)
    browser.login("root", PASSWORD, "/hello")
    page = browser.get("/_mfa/verify")
    assert browser.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now), "remember": "1",
                                         "csrf_token": csrf_of(page.text)}).status_code == 303
    sign_out()
    again = browser.login("root", PASSWORD, "/_mfa/admin")
    assert again.headers["Location"] == "/_mfa/admin"  # the device stood in for the second factor
    refused = browser.get("/_mfa/admin")
    assert refused.status_code == 403 and not is_portal(refused.text)
    assert "remembered device is not enough" in refused.text
    assert 'href="/_mfa/step-up?fresh=1&amp;next=/_mfa/admin"' in refused.text
    clock.advance(30)
    assert browser.get("/_mfa/step-up?fresh=1&next=/_mfa/admin").headers["Location"] == "/_mfa/verify"
    page = browser.get("/_mfa/verify")
    done = browser.post("/_mfa/verify", {"code": pyotp.TOTP(secret).at(clock.now), "csrf_token": csrf_of(page.text)})
    assert done.headers["Location"] == "/_mfa/admin"
    assert is_portal(browser.get("/_mfa/admin").text)
    assert ("root", "refused", "root") in events(mw, "admin")


def test_a_bypass_session_is_refused_with_sign_out_offered(mw: MFAMiddleware, clock: Clock) -> None:
    browser = Browser(mw)
    browser.sign_in_and_enroll("root", PASSWORD, clock)
    logout = browser.get("/_mfa/logout")
    browser.post("/_mfa/logout", {"csrf_token": csrf_of(logout.text)})
    mw.runtime.accounts.bypass("root", actor="test", seconds=600, reason="lost phone")
    assert browser.login("root", PASSWORD, "/_mfa/admin").headers["Location"] == "/_mfa/admin"
    refused = browser.get("/_mfa/admin")
    assert refused.status_code == 403 and "one-time bypass" in refused.text
    assert 'href="/_mfa/logout"' in refused.text


def test_an_exempt_admin_is_asked_for_a_second_factor(mw: MFAMiddleware, clock: Clock) -> None:
    mw.runtime.accounts.set_state("root", "disabled", actor="test")
    browser = Browser(mw)
    assert browser.login("root", PASSWORD, "/hello").status_code == 303
    refused = browser.get("/_mfa/admin")
    assert refused.status_code == 403 and "Verify now" in refused.text


# -- forged, stale and borrowed requests -----------------------------------------------------------------------------
def test_stale_or_missing_csrf_changes_nothing(mw: MFAMiddleware, admin: Admin, clock: Clock) -> None:
    old_csrf = admin.csrf()
    admin.step_up()  # a new session: the old token is bound to the old one
    for token in (old_csrf, "", "forged"):
        answer = admin.post("/action", {"action": "unlock", "name": "bob", "csrf_token": token})
        assert answer.status_code == 403 and "Form expired" in answer.text
        bulk = admin.post("/bulk", MultiDict([("state", "disabled"), ("user", "bob"), ("csrf_token", token)]))
        assert bulk.status_code == 403
        confirm = admin.post("/confirm", {"token": "x", "csrf_token": token})
        assert confirm.status_code == 403 and "Form expired" in confirm.text
    assert events(mw, "user_unlock") == []


def test_a_tampered_confirmation_applies_nothing(mw: MFAMiddleware, admin: Admin) -> None:
    page = admin.confirm_page("reset_mfa", "bob")
    token = token_of(page.text)
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]
    session = admin.browser.cookie("mfa_session")
    assert session is not None
    other_key = URLSafeSerializer("not the site's key", salt=SALT_CONFIRM).dumps(
        {"a": "root", "s": "x", "op": "reset_mfa", "u": ["root"], "p": {}, "t": admin.clock.now})
    for bad in (flipped, other_key, token + "x", ""):
        answer = admin.post("/confirm", {"token": bad, "csrf_token": csrf_of(page.text)})
        assert answer.status_code == 403 and "Nothing was changed" in answer.text
    assert events(mw, "user_reset_mfa") == []
    assert ("admin:root", "refused", "None") in events(mw, "admin")


def test_another_admins_confirmation_is_refused(mw: MFAMiddleware, admin: Admin, clock: Clock) -> None:
    other = Admin(mw, clock, "other")
    page = other.confirm_page("block", "bob", reason="phished", days="5")
    token = token_of(page.text)
    answer = admin.post("/confirm", {"token": token, "csrf_token": admin.csrf()})
    assert answer.status_code == 403 and "another session or administrator" in answer.text
    user = mw.runtime.store.get_user("bob")
    assert user is not None and not user.blocked(clock.now)


def test_a_confirmation_expires(mw: MFAMiddleware, admin: Admin, clock: Clock) -> None:
    page = admin.confirm_page("unlock", "bob")
    admin.step_up()  # fresh again, but the page is too old (and of the session before)
    answer = admin.post("/confirm", {"token": token_of(page.text), "csrf_token": admin.csrf()})
    assert answer.status_code == 403
    assert events(mw, "user_unlock") == []


def test_changes_need_a_fresh_second_factor(mw: MFAMiddleware, admin: Admin, clock: Clock) -> None:
    page = admin.confirm_page("revoke_sessions", "bob")
    clock.advance(11 * 60)  # still signed in (the inactivity timeout is 30 min), the second factor is old
    assert is_portal(admin.get("").text)
    late = admin.post("/confirm", {"token": token_of(page.text), "csrf_token": admin.csrf()})
    assert late.status_code == 403 and "Verify again" in late.text
    ask = admin.confirm_page("revoke_sessions", "bob")
    assert ask.status_code == 403 and "step-up?fresh=1&amp;next=/_mfa/admin/user%3Fname%3Dbob" in ask.text
    assert events(mw, "sessions_revoked") == []
    admin.step_up()
    assert admin.act("revoke_sessions", "bob").status_code == 200
    assert events(mw, "sessions_revoked") == [("admin:root", "success", "bob")]


# -- hostile content is shown as text ------------------------------------------------------------------------------
def test_markup_in_names_reasons_and_user_agents_is_escaped_everywhere(mw: MFAMiddleware, admin: Admin) -> None:
    rt = mw.runtime
    bob = rt.store.get_user("bob")
    assert bob is not None
    rt.store.update_user(bob.id, now=admin.clock.now, display_name=XSS, email=XSS + "@example.com")
    # A name no account service would accept, as a directory import might still bring one.
    rt.store._run(lambda c: c.execute(update(users).where(users.c.username == "carol").values(username=XSS)))
    rt.fraud.report(bob, "voice", now=admin.clock.now, client_ip="10.0.0.9", user_agent=XSS, reference="r1")
    rt.audit.write("primary", "failure", now=admin.clock.now, actor="bob", username="bob", client_ip="10.0.0.9",
                   user_agent=XSS)
    admin.act("block", "bob", reason=XSS, days="2")
    for path in ("", "?q=script", "/user?name=bob", "/fraud", "/audit", "/audit?user=bob", "/usage"):
        page = admin.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in admin.get("/user?name=bob").text


def test_the_audit_export_cannot_become_spreadsheet_formulas(mw: MFAMiddleware, admin: Admin) -> None:
    for agent in ('=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)"):
        mw.runtime.audit.write("primary", "failure", now=admin.clock.now, actor="bob", username="bob",
                               client_ip="10.0.0.9", user_agent=agent)
    answer = admin.get("/audit?format=csv&user=bob")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    agents = [r["user_agent"] for r in rows if r["user_agent"]]
    assert len(agents) == 4 and all(a.startswith("'") for a in agents), agents
    assert ("admin:root", "audit_export", "None") in events(mw, "admin")


def test_the_export_streams_every_page(mw: MFAMiddleware, admin: Admin) -> None:
    for i in range(2300):
        mw.runtime.store.write_audit(at=admin.clock.now + i, actor="x", username="bob", event="probe",
                                     result="success")
    rows = list(csv.DictReader(io.StringIO(admin.get("/audit?format=csv&event=probe").text)))
    assert len(rows) == 2300 and len({r["id"] for r in rows}) == 2300


# -- users: search, filters, pages -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("query", "expected"), [
    pytest.param("", ["bob", "carol", "other", "root"], id="everyone"),
    pytest.param("q=BOB", ["bob"], id="name-any-case"),
    pytest.param("q=example.com", ["bob"], id="email"),
    pytest.param("group=ops", ["carol"], id="group"),
    pytest.param("state=disabled", ["carol"], id="state"),
    pytest.param("method=totp", ["root"], id="method"),
    pytest.param("blocked=yes", ["bob"], id="blocked"),
    pytest.param("locked=yes", [], id="locked"),
    pytest.param("state=bogus", ["bob", "carol", "other", "root"], id="unknown-state-ignored"),
])
def test_search_and_filters(mw: MFAMiddleware, admin: Admin, query: str, expected: list[str]) -> None:
    mw.runtime.accounts.block("bob", actor="test", reason="test")
    page = admin.get("?" + query)
    assert re.findall(r'name="user" value="([^"]+)"', page.text) == expected


def test_pages_forward_and_back(mw: MFAMiddleware, admin: Admin) -> None:
    rt = mw.runtime
    for i in range(120):
        rt.store.create_user(f"u{i:03d}", now=admin.clock.now)
    def names(html: str) -> list[str]:
        return re.findall(r'name="user" value="([^"]+)"', html)

    def follow(html: str, rel: str) -> str:
        found = re.search(rf'href="([^"]+)" rel="{rel}"', html)
        assert found is not None, rel
        return found.group(1).replace("&amp;", "&").removeprefix("/_mfa/admin")

    first = admin.get("?q=u")
    assert names(first.text)[:2] == ["u000", "u001"] and len(names(first.text)) == 50
    assert "Previous" not in first.text
    second = admin.get(follow(first.text, "next"))
    assert names(second.text)[0] == "u050"
    back = admin.get(follow(second.text, "prev"))
    assert names(back.text) == names(first.text)
    last = admin.get("?q=u&last=1")
    assert names(last.text)[-1] == "u119" and len(names(last.text)) == 50 and 'rel="next"' not in last.text


# -- actions ---------------------------------------------------------------------------------------------------------
def test_bulk_state_change_of_selected_users(mw: MFAMiddleware, admin: Admin) -> None:
    page = admin.post("/bulk", MultiDict([("csrf_token", admin.csrf()), ("state", "enforced"), ("user", "bob"),
                                          ("user", "carol"), ("user", "nobody")]))
    assert page.status_code == 200 and "Enforce 3 user(s)" in page.text
    done = admin.post("/confirm", {"token": token_of(page.text), "csrf_token": csrf_of(page.text)})
    assert done.status_code == 200 and "2 user(s) changed" in done.text and "nobody" in done.text
    assert [mw.runtime.store.get_user(n).state for n in ("bob", "carol")] == ["enforced", "enforced"]  # type: ignore
    assert ("admin:root", "success", "carol") in events(mw, "user_state")
    assert ("admin:root", "bulk_state", "None") in events(mw, "admin")


@pytest.mark.parametrize(("form", "message"), [
    pytest.param([("state", "enforced")], "Select at least one user", id="none-selected"),
    pytest.param([("state", "root"), ("user", "bob")], "Choose what to do", id="bad-state"),
])
def test_bulk_mistakes_say_what_to_do(admin: Admin, form: list[tuple[str, str]], message: str) -> None:
    answer = admin.post("/bulk", MultiDict([("csrf_token", admin.csrf()), *form]))
    assert answer.status_code == 400 and message in answer.text


def test_every_user_action(mw: MFAMiddleware, admin: Admin, clock: Clock) -> None:
    rt = mw.runtime
    bob = Browser(mw)
    bob.sign_in_and_enroll("bob", PASSWORD, clock)
    user = rt.store.get_user("bob")
    assert user is not None
    rt.app_passwords.create(user, "mail", actor="test")
    rt.store.update_user(user.id, now=clock.now)
    assert "1</dd>" in admin.get("/user?name=bob").text
    steps = [
        ("delete_app_passwords", {}, "app_password_revoke"),
        ("forget_devices", {}, None),
        ("revoke_sessions", {}, "sessions_revoked"),
        ("block", {"reason": "phished", "days": "3"}, "user_block"),
        ("unblock", {}, "user_unblock"),
        ("unlock", {}, "user_unlock"),
        ("bypass", {"reason": "lost phone", "minutes": "30"}, "user_bypass"),
        ("reset_mfa", {}, "user_reset_mfa"),
    ]
    for action, form, event in steps:
        done = admin.act(action, "bob", **form)
        assert done.status_code == 200 and "Change applied" in done.text, (action, done.text)
        if event is not None:
            assert events(mw, event, "bob")[0][:2] == ("admin:root", "success"), action
    user = rt.store.get_user("bob")
    assert user is not None
    assert rt.store.list_app_passwords(user.id) == [] and rt.store.list_methods(user.id) == []
    assert user.state == "enabled" and not user.blocked(clock.now) and user.bypass_until is not None
    ended = bob.get("/hello")  # the session ended
    assert ended.status_code in (302, 303) and "/_mfa/login" in ended.headers["Location"]
    block = [r for r in rt.store.list_audit(username="bob", event="user_block")][0]
    assert block.detail["reason"] == "phished"


@pytest.mark.parametrize(("action", "form", "message"), [
    pytest.param("block", {"reason": " ", "days": "3"}, "Give a reason", id="block-no-reason"),
    pytest.param("block", {"reason": "x", "days": "0"}, "between 1 and 3650", id="block-zero-days"),
    pytest.param("bypass", {"reason": "x", "minutes": "99999"}, "between 1 and 1440", id="bypass-too-long"),
    pytest.param("bypass", {"reason": "x" * 400, "minutes": "5"}, "under 300", id="bypass-long-reason"),
    pytest.param("explode", {}, "Unknown action", id="unknown-action"),
])
def test_action_mistakes_say_what_to_do(admin: Admin, action: str, form: dict[str, str], message: str) -> None:
    answer = admin.confirm_page(action, "bob", **form)
    assert answer.status_code == 400 and message in answer.text


def test_unknown_user_pages_offer_a_way_back(admin: Admin) -> None:
    page = admin.get("/user?name=nobody")
    assert page.status_code == 404 and 'href="/_mfa/admin"' in page.text
    assert admin.get("/nothing-here").status_code == 404


# -- CSV import ------------------------------------------------------------------------------------------------------
def upload(admin: Admin, data: bytes) -> TestResponse:
    """POST a file to the import page (the multipart body built here: the test client spools big ones to a file)."""
    boundary = "----admin-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{admin.csrf()}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"users.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return admin.post("/import", body, content_type=f"multipart/form-data; boundary={boundary}")  # type: ignore


def test_import_preview_then_apply(mw: MFAMiddleware, admin: Admin) -> None:
    data = ('\ufeffUsername,State\r\n"bob","enforced"\r\ncarol,disabled\r\nnobody,enabled\r\nroot,sideways\r\n'
            'bob,enabled\r\n\r\n"Zoë",enabled\r\nthree,cells,here\r\n').encode()
    preview = upload(admin, data)
    assert preview.status_code == 200, preview.text
    text = preview.text
    assert "1 change," in text and "1 already so" in text and "1 unknown user" in text and "4 bad rows" in text
    assert mw.runtime.store.get_user("bob").state == "enabled"  # type: ignore[union-attr]
    assert "Zoë" in text  # non-ASCII shown as written, as a bad username
    done = admin.post("/confirm", {"token": token_of(text), "csrf_token": csrf_of(text)})
    assert done.status_code == 200 and "1 user(s) changed" in done.text
    assert mw.runtime.store.get_user("bob").state == "enforced"  # type: ignore[union-attr]
    assert ("admin:root", "import", "None") in events(mw, "admin")


def test_a_stale_preview_applies_nothing(mw: MFAMiddleware, admin: Admin) -> None:
    preview = upload(admin, b"bob,enforced\ncarol,enabled\n").text
    mw.runtime.accounts.set_state("carol", "enforced", actor="test")  # someone else moved carol meanwhile
    answer = admin.post("/confirm", {"token": token_of(preview), "csrf_token": csrf_of(preview)})
    assert answer.status_code == 409 and "Nothing was applied" in answer.text
    assert mw.runtime.store.get_user("bob").state == "enabled"  # type: ignore[union-attr]


@pytest.mark.parametrize(("data", "status", "message"), [
    pytest.param(b"x" * (MAX_UPLOAD + 10), 413, "", id="too-large"),
    pytest.param(b"".join(b"u%d,enabled\n" % i for i in range(MAX_IMPORT_ROWS + 1)), 400, "more than", id="rows"),
    pytest.param(b"\xff\xfeb\x00o\x00b\x00", 400, "not UTF-8", id="not-utf8"),
    pytest.param(b"", 400, "Choose a CSV file", id="empty"),
    pytest.param(b'"bob,enforced\n', 200, "Nothing to change", id="unclosed-quote"),
])
def test_bad_uploads_change_nothing(mw: MFAMiddleware, admin: Admin, data: bytes, status: int, message: str) -> None:
    answer = upload(admin, data)
    assert answer.status_code == status
    assert message in answer.text
    assert events(mw, "user_state") == []


def test_security_headers_on_portal_pages(admin: Admin) -> None:
    for path in ("", "/user?name=bob", "/audit?format=csv", "/usage", "/admin.css"):
        answer = admin.get(path)
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], path
        if path != "/admin.css":
            assert answer.headers["Cache-Control"] == "no-store", path
