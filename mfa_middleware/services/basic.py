"""The HTTP Basic path: verify app passwords (or, where the user's state allows, the primary password), with a
verified-credential cache so a client that repeats the same credential does not pay argon2 each time.

Rules:

- The cache key is an HMAC-SHA256 of the username and password under a random per-process key; the
  password itself is never kept. An entry lives at most ``[basic] cache_ttl``.
- An entry is dropped, and the credential verified again against the store, when anything revoked it since it
  was verified: the app password (marker ``ap:<id>``), the user's primary password on the Basic path
  (``pw:<user>``, written when the user registers a method or changes state), a lockout (``lock:<user>``), or
  any user-wide revocation (block, reset, password change, revoke-sessions). Revocations reach every process
  within the revocation interval.
- State table (DESIGN.md section 4): the primary password is accepted for ``disabled`` users and for
  ``enabled`` users with no registered method; an ``enforced`` user gets "app password required".
- Trusted networks: from a network the route trusts (the gate says so, from the address the trusted-proxy chain
  gives), the primary password is accepted for any user who has no app password yet, as a credential of kind
  ``trusted_network`` that the decision lets through only from a trusted network (so a cached one is no good
  from elsewhere). Creating an app password revokes ``pw:<user>``: from then on only app passwords work.
- Every attempt that misses the cache is reserved on the same atomic counters as the forms and the second factor
  (per user and per client address) BEFORE any password is checked; a refused reservation (locked) means no
  password is checked at all. A success gives the reservation back (it neither counts nor resets).
- Unknown user, user without a local password, wrong password and locked account all give ``invalid`` after
  exactly one argon2 verification (a dummy where there is nothing to check); a banned client address gives
  ``banned`` (429 with Retry-After) after the same verification, whatever username it sent. Only a correct
  credential may lead to a distinct answer (blocked, app password required).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..core.basic import BasicCredentials, BasicFailure, VerifiedCredential
from ..core.decision import RevocationView
from ..core.networks import TRUSTED_NETWORK
from ..primary.usernames import canonical_username
from ..store import Store, StoreUnavailable, UserRecord
from . import app_passwords
from .lockout import Client, Lockout, lock_marker

if TYPE_CHECKING:
    from ..config import BasicConfig
    from ..primary.base import PasswordMethod
    from .audit import AuditLog
    from .passwords import Passwords


def primary_marker(username: str) -> str:
    return f"pw:{username}"


class BasicAuthenticator:
    def __init__(self, store: Store, audit: AuditLog, lockout: Lockout, primary: PasswordMethod,
                 passwords: Passwords, settings: BasicConfig) -> None:
        self.store, self.audit, self.lockout, self.primary = store, audit, lockout, primary
        self.passwords, self.settings = passwords, settings
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, VerifiedCredential] = OrderedDict()
        self._lock = threading.Lock()

    def _key_of(self, creds: BasicCredentials) -> bytes:
        return hmac.new(self._key, creds.username.encode() + b"\x00" + creds.password.encode(),
                        hashlib.sha256).digest()

    def cached(self, creds: BasicCredentials, *, now: float, view: RevocationView,
               key: bytes | None = None) -> VerifiedCredential | None:
        """The cached verification of ``creds`` if it is still good (no I/O), else None."""
        if key is None:
            key = self._key_of(creds)
        hit = self._cache.get(key)
        if hit is None:
            return None
        if (now - hit.verified_at < self.settings.cache_ttl
                and not view.stale_credential(hit.username, hit.marker, hit.verified_at)
                and not view.stale_credential(hit.username, lock_marker(hit.username), hit.verified_at)):
            return hit
        with self._lock:
            self._cache.pop(key, None)
        return None

    def authenticate(self, creds: BasicCredentials, *, client_ip: str, user_agent: str, now: float,
                     view: RevocationView, trusted_network: bool = False) -> VerifiedCredential | BasicFailure:
        key = self._key_of(creds)
        hit = self.cached(creds, now=now, view=view, key=key)
        if hit is not None:
            return hit
        try:
            result = self._verify(creds, client_ip=client_ip, user_agent=user_agent, now=now,
                                  trusted_network=trusted_network)
        except StoreUnavailable:
            return BasicFailure("unavailable")
        size = self.settings.cache_size
        if isinstance(result, VerifiedCredential) and size:
            with self._lock:
                self._cache[key] = result
                while len(self._cache) > size:
                    self._cache.popitem(last=False)
        return result

    def _verify(self, creds: BasicCredentials, *, client_ip: str, user_agent: str,
                now: float, trusted_network: bool = False) -> VerifiedCredential | BasicFailure:
        client = Client(client_ip, user_agent)
        name = canonical_username(creds.username)
        user = self.store.get_user(name) if name else None
        attempt = self.lockout.reserve(user, client, now)
        normalized = app_passwords.normalize(creds.password)
        checkable = user if user is not None and attempt.allowed else None
        candidates = (self.store.find_app_passwords(checkable.id, app_passwords.lookup_of(normalized))
                      if checkable is not None and normalized is not None else [])
        verified: VerifiedCredential | None = None
        primary_ok = False
        for candidate in candidates:  # found by the password's lookup: normally none, or the one that matches
            if self.passwords.verify(candidate.password_hash, normalized or ""):
                assert checkable is not None
                self.store.touch_app_password(candidate.id, now=now, client_ip=client_ip)
                verified = VerifiedCredential(checkable.username, checkable.groups, checkable.is_admin,
                                              "app_password", app_passwords.marker(candidate.id), now,
                                              checkable.email, checkable.display_name)
                label = candidate.label
                break
        else:
            # Exactly one password verification (the primary method's) when no app password matched: the user's, or
            # the dummy (unknown user, no local password, locked account or address).
            primary_ok = self.primary.check(checkable, creds.password, now)
        if verified is None and not primary_ok:
            self.lockout.failed("basic", attempt, user, client, now, reason="invalid")
            banned = self.lockout.banned_until(attempt)
            if banned is not None:  # the address is banned: the same answer whatever username was sent
                return BasicFailure("banned", banned)
            return BasicFailure("invalid")
        assert checkable is not None
        self.lockout.release(attempt, checkable, client)  # a correct credential: neither a failure nor a reset
        if checkable.blocked(now):
            self.audit.write("basic", "blocked", now=now, actor=checkable.username, username=checkable.username,
                           client_ip=client_ip, user_agent=user_agent)
            return BasicFailure("blocked")
        if verified is not None:
            self.audit.write("basic", "success", now=now, actor=checkable.username, username=checkable.username,
                           client_ip=client_ip, user_agent=user_agent, credential="app_password", label=label)
            return verified
        if not self.primary_allowed(checkable):
            if trusted_network and not self.store.list_app_passwords(checkable.id):
                self.audit.write("basic", "success", now=now, actor=checkable.username, username=checkable.username,
                                 client_ip=client_ip, user_agent=user_agent, credential="primary",
                                 reason="trusted_network")
                return VerifiedCredential(checkable.username, checkable.groups, checkable.is_admin, TRUSTED_NETWORK,
                                          primary_marker(checkable.username), now, checkable.email,
                                          checkable.display_name)
            self.audit.write("basic", "app_password_required", now=now, actor=checkable.username,
                           username=checkable.username, client_ip=client_ip, user_agent=user_agent)
            return BasicFailure("app_password_required")
        self.audit.write("basic", "success", now=now, actor=checkable.username, username=checkable.username,
                       client_ip=client_ip, user_agent=user_agent, credential="primary")
        return VerifiedCredential(checkable.username, checkable.groups, checkable.is_admin, "primary",
                                  primary_marker(checkable.username), now, checkable.email, checkable.display_name)

    def primary_allowed(self, user: UserRecord) -> bool:
        """DESIGN.md section 4: disabled users, and enabled users who have not registered a method."""
        if user.state == "disabled":
            return True
        return user.state == "enabled" and not self.store.list_methods(user.id)
