""" "Remember this device": a browser that passed a second factor may skip it for a while (``[methods]
remember_device``, off by default, at most 365 days).

Trust model and rules:

- The device cookie is signed with its own itsdangerous salt (``SALT_DEVICE``), so no other token of the product
  (session, pending sign-in, CSRF) verifies as one, and it names the user by id AND name: a cookie of another
  user, a tampered one, or one of a user deleted and made again under the same name is refused.
- The cookie carries a random device id (144 bits); the store keeps only its SHA-256, with the user, a name from
  the user agent, when it was made, last used and when it expires. A device stands only while its row exists,
  belongs to the user, has not expired, was made at the time the cookie says, and no user-wide revocation was
  written since it was made.
- The user's credential epoch: every user-wide revocation (``mfa-admin user revoke-sessions``, a password change,
  re-registration with ``reset-mfa``, block, delete) deletes the user's device rows in the same transaction
  (``Store.add_revocation``), and removing a method forgets them too (:meth:`RememberedDevices.forget_all`). The
  revocation rows are also asked (``Store.sign_in_revoked`` since the device was made) while they are kept, so a
  revocation written by an older server that does not delete rows still ends the device.
- A device skips the SECOND factor only, and only on the sign-in pages after the primary step; the Basic path
  never reads it, and it is never asked for a user who is blocked or locked (the sign-in state machine stops those
  first). A session it gives records the method ``remembered_device`` and never counts as a fresh second factor
  (adding or removing methods asks for a real one).
- Every remember, use and forget writes an audit row; no row holds the device id.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from ..core.tokens import DeviceToken, TokenCodec
from ..store import Store, UserRecord
from ..store.sql import DeviceRecord
from .audit import AuditLog

#: the method a session records when a remembered device stood in for the second factor
REMEMBERED = "remembered_device"
#: remembered devices kept per user (the oldest goes first)
MAX_DEVICES_PER_USER = 20

_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chromium/", "Chromium"),
             ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (("Windows", "Windows"), ("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"),
            ("CrOS", "ChromeOS"), ("Mac OS X", "macOS"), ("Macintosh", "macOS"), ("Linux", "Linux"))


def device_name(user_agent: str) -> str:
    """A short name for a browser from its user agent ("Firefox on Windows"), for the user's list of devices."""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return str(browser or system)
    cleaned = re.sub(r"[^\w ./()-]", "", user_agent).strip()
    return cleaned[:60] or "Unknown browser"


def digest(device_id: str) -> str:
    return hashlib.sha256(device_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Remembered:
    """A device the pages just remembered: the cookie value and how long the browser should keep it."""

    token: str
    max_age: int


class RememberedDevices:
    def __init__(self, store: Store, codec: TokenCodec, audit: AuditLog, *, lifetime: float) -> None:
        self.store = store
        self.codec = codec
        self.audit = audit
        self.lifetime = lifetime  # seconds; 0: the feature is off

    @property
    def enabled(self) -> bool:
        return self.lifetime > 0

    @property
    def days(self) -> int:
        return max(1, round(self.lifetime / 86400))

    def remember(self, user: UserRecord, *, client_ip: str, user_agent: str, now: float) -> Remembered | None:
        """Remember the browser that just passed a second factor for ``user``; None when the feature is off."""
        if not self.enabled:
            return None
        device_id = secrets.token_urlsafe(18)
        name = device_name(user_agent)
        self.store.add_device(user.id, digest(device_id), name, now=now, expires_at=now + self.lifetime,
                              keep=MAX_DEVICES_PER_USER)
        self.audit.write("device", "remembered", now=now, actor=user.username, username=user.username,
                         client_ip=client_ip, user_agent=user_agent, label=name, until=now + self.lifetime)
        token = DeviceToken(user_id=user.id, username=user.username, device_id=device_id, created_at=now)
        return Remembered(self.codec.dump_device(token), int(self.lifetime))

    def recognise(self, user: UserRecord, token: str | None, *, client_ip: str, user_agent: str,
                  now: float) -> DeviceRecord | None:
        """The remembered device ``token`` names, when it still stands for ``user`` (see the module rules); its
        use is recorded. None for no cookie, a bad one, another user's, a forgotten, expired or ended device."""
        if not self.enabled or not token:
            return None
        device = self.codec.load_device(token)
        if device is None or device.user_id != user.id or device.username != user.username:
            return None
        row = self.store.find_device(digest(device.device_id))
        if (row is None or row.user_id != user.id or row.expires_at <= now or row.created_at != device.created_at
                or row.created_at > now):
            return None
        if self.store.sign_in_revoked(user.username, since=row.created_at, session_id=f"dev:{row.id}"):
            return None
        self.store.touch_device(row.id, now=now)
        self.audit.write("device", "used", now=now, actor=user.username, username=user.username,
                         client_ip=client_ip, user_agent=user_agent, label=row.name, method=REMEMBERED)
        return row

    def of_user(self, user: UserRecord, *, now: float) -> list[DeviceRecord]:
        return self.store.list_devices(user.id, now=now)

    def forget(self, user: UserRecord, device_row_id: int, *, actor: str, client_ip: str, user_agent: str,
               now: float) -> bool:
        """Forget one of the user's devices (the others stay)."""
        row = next((d for d in self.store.list_devices(user.id, now=now) if d.id == device_row_id), None)
        if not self.store.delete_device(user.id, device_row_id):
            return False
        self.audit.write("device", "forgotten", now=now, actor=actor, username=user.username, client_ip=client_ip,
                         user_agent=user_agent, label=row.name if row is not None else None)
        return True

    def forget_all(self, user: UserRecord, *, actor: str, client_ip: str, user_agent: str, now: float,
                   reason: str) -> int:
        """Forget every device of the user (their methods changed)."""
        count = self.store.delete_devices(user.id)
        if count:
            self.audit.write("device", "forgotten", now=now, actor=actor, username=user.username,
                             client_ip=client_ip, user_agent=user_agent, count=count, reason=reason)
        return count
