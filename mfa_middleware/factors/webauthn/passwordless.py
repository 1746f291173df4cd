"""Passwordless sign-in with a passkey (``[methods.webauthn] passwordless = true``).

A passkey that verified its user (PIN, fingerprint, face) is something the user has and something they know or
are: it may stand for both steps. The forms sign-in page offers "Sign in with a passkey"; the browser asks the
authenticator for a discoverable credential (empty ``allowCredentials``, ``userVerification: "required"``) and
the page posts the assertion. Nobody is known until the credential is found.

Rules:

- **The challenge is the server's, bound to the browser, used once.** :meth:`PasswordlessSignIn.options` makes 32
  random bytes, valid :data:`LOGIN_TTL` seconds, kept in ``mfa_webauthn_logins`` with the SHA-256 of the browser's
  anonymous pre-sign-in cookie (the one the forms page's CSRF token is bound to). The assertion is checked against
  the row taken, once, in one conditional UPDATE, for THIS browser's cookie: an assertion (or a challenge) made in
  another browser cannot sign this one in (login CSRF), a replay or a race takes nothing, and asking again drops the
  browser's earlier challenge. The pages check the CSRF token of both POSTs.
- **The credential decides who signs in**, and must be a confirmed ``webauthn`` method's (a removed passkey, or
  one of an enrollment never confirmed, is unknown). The assertion's user handle must be the one its owner was
  registered with (``mfa-user-<id>``).
- **Counted like a password.** The attempt is reserved on the lockout (the user's and the client address's
  counters) before the signature is checked; an unknown credential, a bad or expired answer counts against the
  client address. Any failure is kept as a failure of that user; a success clears that address's
  failures on the user and the user's run of consecutive failures (``Lockout.succeeded``, as for the forms
  sign-in); failures from other addresses stay counted.
- **What the assertion must satisfy:** everything a second-factor assertion must (origin, RP id hash, user
  presence, signature, a sign count that grows: a regression is refused and audited as
  ``webauthn``/``counter_regression``), and user verification ALWAYS, whatever ``user_verification`` says: a
  passkey registered without it can still be a second factor, never both.
- **Only a user who may sign in.** After a valid assertion the user's current record decides (the sign-in state
  machine): blocked gets the blocked page (as after a correct password); locked, a revocation written since the
  ceremony began (sessions revoked) and an MFA-exempt (``disabled``) user, who signs in with the password, get
  the forms page's one failure message (these refusals are not wrong secrets: audited, not counted). A success is
  a full session (level 2, methods ``("passwordless", "webauthn")``), audited as ``passwordless``/``success``.
- **Forms only.** The pages offer and accept it only where ``forms`` is a primary method and the server did not
  pass REMOTE_USER: where the server names the user, that name decides, and a passkey is the second factor. The
  Basic path never looks at passkeys.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from webauthn import generate_authentication_options, options_to_json, verify_authentication_response
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import AuthenticationCredential, UserVerificationRequirement

from ...core.signin_flow import Stage, UserFacts, stage_of
from . import BadResponse, WebAuthnFactor, parse_response

if TYPE_CHECKING:
    from ...services.audit import AuditLog
    from ...services.lockout import Attempt, Client, Lockout
    from ...store import Store, UserRecord

#: how long a passwordless ceremony may be answered (seconds)
LOGIN_TTL = 2 * 60


class PasswordlessOutcome(str, Enum):
    SIGNED_IN = "signed_in"
    INVALID = "invalid"  # the forms page's one failure message
    BLOCKED = "blocked"  # only after a valid assertion, as after a correct password
    EXPIRED = "expired"  # no live ceremony of this browser: ask again


@dataclass(frozen=True, slots=True)
class PasswordlessResult:
    outcome: PasswordlessOutcome
    user: UserRecord | None = None
    locked_until: float | None = None


def user_handle(user_id: int) -> bytes:
    """The WebAuthn user handle a user's passkeys are registered with (see ``registration_options``)."""
    return f"mfa-user-{user_id}".encode("ascii")


def browser_binding(anonymous_cookie: str) -> str:
    """What a ceremony is bound to: the SHA-256 of the browser's anonymous pre-sign-in cookie (never the cookie)."""
    return hashlib.sha256(anonymous_cookie.encode("utf-8")).hexdigest()


class PasswordlessSignIn:
    """The passwordless ceremony and its check (see the module docstring). Built by the pages per request."""

    def __init__(self, store: Store, audit: AuditLog, lockout: Lockout, factor: WebAuthnFactor) -> None:
        self.store, self.audit, self.lockout, self.factor = store, audit, lockout, factor

    @property
    def enabled(self) -> bool:
        return self.factor.settings.passwordless

    def options(self, anonymous_cookie: str, now: float) -> str:
        """``navigator.credentials.get`` options (JSON) for a new ceremony of this browser."""
        challenge = secrets.token_bytes(32)
        self.store.add_webauthn_login(browser_binding(anonymous_cookie), bytes_to_base64url(challenge), now=now,
                                      expires_at=now + LOGIN_TTL)
        options = generate_authentication_options(
            rp_id=self.factor.settings.rp_id, challenge=challenge, timeout=LOGIN_TTL * 1000, allow_credentials=[],
            user_verification=UserVerificationRequirement.REQUIRED)
        return options_to_json(options)

    def _audit(self, result: str, user: UserRecord | None, client: Client, now: float, **detail: object) -> None:
        name = user.username if user is not None else None
        self.audit.write("passwordless", result, now=now, actor=name or "anonymous", username=name,
                         client_ip=client.ip, user_agent=client.user_agent, **detail)

    def _failed(self, attempt: Attempt | None, user: UserRecord | None, client: Client, now: float,
                reason: str) -> PasswordlessResult:
        """A failed attempt, counted (reserved first when it was not yet) and audited."""
        if attempt is None:
            attempt = self.lockout.reserve(user, client, now)
        self.lockout.failed("passwordless", attempt, user, client, now, reason=reason)
        locked = attempt.locked_until if attempt.user is not None and attempt.user.started_lock else None
        return PasswordlessResult(PasswordlessOutcome.INVALID, locked_until=locked)

    def sign_in(self, raw: str, anonymous_cookie: str, client: Client, now: float) -> PasswordlessResult:
        """Check a posted assertion for the browser holding ``anonymous_cookie``; see the module docstring."""
        try:
            credential = parse_response(raw, "authenticate")
            assert isinstance(credential, AuthenticationCredential)
            client_data = json.loads(credential.response.client_data_json)
            challenge = client_data["challenge"] if isinstance(client_data, dict) else None
            if not isinstance(challenge, str):
                raise BadResponse("the client data has no challenge")
        except (BadResponse, ValueError, UnicodeDecodeError) as exc:
            return self._failed(None, None, client, now, f"bad response: {exc}"[:200])
        # The ceremony is the server's and this browser's: the client's echo of it only finds the row.
        begun = self.store.use_webauthn_login(browser_binding(anonymous_cookie), challenge, now=now)
        if begun is None:
            self._failed(None, None, client, now, "no live ceremony of this browser")
            return PasswordlessResult(PasswordlessOutcome.EXPIRED)
        stored = self.store.webauthn_credential_by_id(bytes_to_base64url(bytes(credential.raw_id)))
        method = self.store.get_method(stored.method_id) if stored is not None else None
        user = self.store.get_user_by_id(stored.user_id) if stored is not None else None
        if (stored is None or method is None or user is None or not method.confirmed or method.kind != "webauthn"
                or method.user_id != user.id):
            return self._failed(None, None, client, now, "unknown credential")
        attempt = self.lockout.reserve(user, client, now)
        if not attempt.allowed:
            return self._failed(attempt, user, client, now, "locked")
        handle = credential.response.user_handle
        if handle is None or not secrets.compare_digest(bytes(handle), user_handle(user.id)):
            return self._failed(attempt, user, client, now, "the user handle is not the credential owner's")
        try:
            verified = verify_authentication_response(
                credential=credential, expected_challenge=base64url_to_bytes(challenge),
                expected_rp_id=self.factor.settings.rp_id, expected_origin=list(self.factor.settings.origins),
                credential_public_key=stored.public_key, credential_current_sign_count=0,
                require_user_verification=True)
        except WebAuthnException as exc:
            return self._failed(attempt, user, client, now, str(exc)[:200])
        new = verified.new_sign_count
        if (new > 0 or stored.sign_count > 0) and new <= stored.sign_count:
            self.audit.write("webauthn", "counter_regression", now=now, actor=user.username, username=user.username,
                             client_ip=client.ip, user_agent=client.user_agent, method=str(method.id),
                             label=method.label, reason=f"sign count {new} is not above {stored.sign_count}",
                             primary="passwordless")
            return self._failed(attempt, user, client, now, "counter regression")
        if not self.store.advance_webauthn_sign_count(stored.id, stored.sign_count, new, now=now):
            return self._failed(attempt, user, client, now, "the credential was used at the same time")
        # A valid passkey: now the user's current record decides (as after a correct password).
        user_now = self.store.get_user_by_id(user.id)
        if user_now is None:
            return self._failed(attempt, None, client, now, "the user is gone")
        revoked = self.store.sign_in_revoked(user_now.username, since=begun, session_id=f"passwordless:{challenge}")
        facts = UserFacts(exists=True, state=user_now.state,
                          confirmed_methods=len(self.store.list_methods(user_now.id)), blocked=user_now.blocked(now),
                          locked=user_now.locked(now), revoked=revoked)
        stage = stage_of(facts)
        if stage is Stage.BLOCKED:
            self.lockout.release(attempt, user_now, client)
            self._audit("blocked", user_now, client, now, method="webauthn")
            return PasswordlessResult(PasswordlessOutcome.BLOCKED, user_now)
        if stage is not Stage.VERIFY or user_now.state == "disabled":
            # Not a wrong secret: the reservation is given back, the refusal audited, the answer the same as one.
            self.lockout.release(attempt, user_now, client)
            self._audit("refused", user_now, client, now, method="webauthn",
                        reason="MFA-exempt user" if stage is Stage.VERIFY else f"sign-in {stage.value}")
            return PasswordlessResult(PasswordlessOutcome.INVALID)
        # As after the forms sign-in (services/signin.py): this attempt's reservations are given back, and only
        # this address's failures on the user are cleared; other addresses' failures stay counted.
        self.lockout.release(attempt, user_now, client)
        self.lockout.succeeded(user_now, client, now)
        self._audit("success", user_now, client, now, method="webauthn", label=method.label)
        return PasswordlessResult(PasswordlessOutcome.SIGNED_IN, user_now)


__all__ = ["LOGIN_TTL", "PasswordlessOutcome", "PasswordlessResult", "PasswordlessSignIn", "browser_binding",
           "user_handle"]
