"""Passkeys and security keys (WebAuthn), through the ``webauthn`` library (py_webauthn).

Rules:

- **One passkey, one method.** Each passkey or security key a user registers is its own method row (kind
  ``webauthn``) with the name the user gave it ("YubiKey 5", "Laptop") and one credential in
  ``mfa_webauthn_credentials`` (migration 0010). Removing the method removes the credential.
- **The challenge is the server's.** Each ceremony (a registration for an enrollment, an assertion for a sign-in
  attempt) has a row in ``mfa_webauthn_challenges`` with 32 random bytes, valid 5 minutes. The browser's response
  is checked against that row, never against a challenge the browser echoes. A row moves once from ``pending`` to
  ``answered`` (the script posted the response: :meth:`WebAuthnFactor.handle`) and once from ``answered`` to
  ``used`` (checked by :meth:`WebAuthnFactor.verify` or :meth:`WebAuthnFactor.enroll_finish`), each in one
  conditional UPDATE: a replayed response, a second check or two servers at once accept at most once.
- **Checked under the attempt count.** The posting route only stores the response (after checking that it is
  well-formed JSON of the right shape, at most :data:`MAX_RESPONSE_CHARS`; anything else is a 400 that changes
  nothing). The signature is checked in :meth:`WebAuthnFactor.verify`, which the sign-in service calls after it
  reserved the attempt, so every check counts against the lockout like a typed code.
- **What an assertion must satisfy:** the credential is the one of the method this attempt uses (so another
  user's, or another of this user's, passkeys fail); ``clientDataJSON`` has type ``webauthn.get``, this attempt's
  challenge and one of the configured origins; the authenticator data's RP id hash is the configured RP id's; user
  presence always, user verification when ``user_verification = "required"``; a valid signature with the stored
  public key. Then the sign count: when either the stored or the new count is non-zero, the new one must be
  greater (a cloned authenticator lags behind), else the answer is refused and audited as
  ``webauthn``/``counter_regression``. The count moves in a conditional UPDATE (from the value read), once.
- **Registration** checks the same origin and RP id, the challenge of the enrollment, UV when required, and with
  ``attestation = "direct"`` and an ``aaguids`` allow-list, the authenticator model (a "none" attestation names
  a model nobody attested, and is refused); a credential id registered already (to anyone) is refused.
- **Attestation roots.** With ``attestation_roots`` (vendor root certificates, read at start-up), the library
  checks every attestation's certificate chain against them (``pem_root_certs_bytes_by_fmt``), and a registration
  must carry such a chain: a "none" attestation or a self attestation (no certificate) is refused, and an
  attestation certificate that names a model (the FIDO AAGUID extension, OID 1.3.6.1.4.1.45724.1.1.4) must name
  the model the authenticator data says. Without roots, a packed attestation signed by a certificate the client
  made itself passes the allow-list: the list then keeps honest users to the listed models and no more.
- **Passwordless sign-in** (``passwordless = true``) is :mod:`.passwordless`: a discoverable-credential assertion
  asked for on the forms sign-in page, bound to the browser, that stands for both steps.
- **Trust model of the routes.** ``options.json`` and ``assertion`` are :attr:`Access.SIGN_IN` (the pending
  cookie and, for the POST, the attempt's CSRF token). ``register/<token>`` is :attr:`Access.PUBLIC` because the
  first enrollment happens before any session: the 32-byte random token is shown only on the enrollment page, it
  only lets a response be stored, and the response must still carry the ceremony's server-side challenge and be
  confirmed by the enrollment form (the pending cookie or the session, with its CSRF token). ``webauthn.js`` is a
  static script (the pages' CSP allows no inline script).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from webauthn import (generate_authentication_options, generate_registration_options, options_to_json,
                      verify_authentication_response, verify_registration_response)
from cryptography import x509
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, parse_attestation_object
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.parse_authentication_credential_json import parse_authentication_credential_json
from webauthn.helpers.parse_registration_credential_json import parse_registration_credential_json
from webauthn.helpers.structs import (AttestationConveyancePreference, AttestationFormat, AuthenticationCredential,
                                      AuthenticatorSelectionCriteria, AuthenticatorTransport,
                                      PublicKeyCredentialDescriptor, RegistrationCredential, ResidentKeyRequirement,
                                      UserVerificationRequirement)
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ...services.audit import AuditLog
from ...store import MethodRecord, Store, UserRecord
from ...store.sql import WebAuthnChallengeRecord
from ..base import (Access, EnrollError, EnrollField, EnrollmentView, FactorContext, FactorRoute, Interaction, Outcome,
                    Prompt, RouteContext, Verification)

#: how long a ceremony's challenge may be answered (seconds)
CEREMONY_TTL = 5 * 60
#: the FIDO extension of an attestation certificate that names the authenticator model (id-fido-gen-ce-aaguid)
AAGUID_EXTENSION = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
#: the longest response the script may post (a passkey's response is well under 2,000 characters; an attestation
#: with a certificate chain a few thousand)
MAX_RESPONSE_CHARS = 12_000
MAX_NAME = 60
_SCRIPT = (resources.files(__name__) / "templates" / "webauthn.js").read_text(encoding="utf-8")
_PASSWORDLESS_SCRIPT = (resources.files(__name__) / "templates" / "passwordless.js").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class WebAuthnSettings:
    """What the method needs from ``[methods.webauthn]`` (checked by the configuration loader)."""

    rp_id: str
    origins: tuple[str, ...]
    rp_name: str = "Sign-in"
    user_verification: str = "preferred"  # preferred | required
    attestation: str = "none"  # none | direct
    aaguids: tuple[str, ...] = ()
    prefix: str = "/_mfa"
    #: a passkey with user verification may sign in alone (see :mod:`.passwordless`)
    passwordless: bool = False
    #: vendor attestation root certificates (PEM, one each); with them an attestation must chain to one
    attestation_roots: tuple[bytes, ...] = ()

    @property
    def uv_required(self) -> bool:
        return self.user_verification == "required"


class BadResponse(ValueError):
    """What the browser posted is not a WebAuthn response of the expected kind; the message says why."""


def parse_response(raw: str, purpose: str) -> RegistrationCredential | AuthenticationCredential:
    """Parse a posted response (``purpose``: register | authenticate) or raise :class:`BadResponse`."""
    if not raw:
        raise BadResponse("no response was posted")
    if len(raw) > MAX_RESPONSE_CHARS:
        raise BadResponse(f"the response is longer than {MAX_RESPONSE_CHARS} characters")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadResponse("the response is not JSON") from None
    if not isinstance(data, dict):
        raise BadResponse("the response is not a JSON object")
    try:
        if purpose == "register":
            return parse_registration_credential_json(data)
        return parse_authentication_credential_json(data)
    except (WebAuthnException, ValueError, TypeError, KeyError, AttributeError):
        raise BadResponse(f"the response is not a {'registration' if purpose == 'register' else 'sign-in'} "
                          "response") from None


def _json(value: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, content_type="application/json",
                    headers={"Cache-Control": "no-store"})


class WebAuthnFactor:
    """A passkey or security key (``webauthn``): see the module docstring for the rules."""

    kind = "webauthn"
    label = "Passkey or security key"
    description = "Use a passkey on this device, your phone, or a security key such as a YubiKey."
    interaction = Interaction.CEREMONY
    templates = __name__
    enroll_fields: tuple[EnrollField, ...] = (
        EnrollField("name", "Name for this passkey", "text", "off",
                    "Like \u201cYubiKey 5\u201d or \u201cWork laptop\u201d, so you can tell your passkeys apart.",
                    MAX_NAME),
    )
    standalone = True
    max_per_user = 10
    routes: tuple[FactorRoute, ...] = (
        FactorRoute("/webauthn/webauthn.js", "script", Access.PUBLIC, ("GET",)),
        FactorRoute("/webauthn/passwordless.js", "passwordless_script", Access.PUBLIC, ("GET",)),
        FactorRoute("/webauthn/options.json", "options", Access.SIGN_IN, ("GET",)),
        FactorRoute("/webauthn/assertion", "assertion", Access.SIGN_IN, ("POST",)),
        FactorRoute("/webauthn/register/<token>", "register", Access.PUBLIC, ("POST",)),
    )

    def __init__(self, store: Store, audit: AuditLog, settings: WebAuthnSettings) -> None:
        if not settings.rp_id or not settings.origins:
            raise ValueError("the webauthn method needs an RP id and at least one origin")
        self.store, self.audit, self.settings = store, audit, settings

    # -- ceremonies ------------------------------------------------------------------------------------------
    def _new_challenge(self, user: UserRecord, method: MethodRecord, sign_in_id: str, purpose: str,
                       now: float) -> WebAuthnChallengeRecord:
        challenge_id = self.store.add_webauthn_challenge(
            user.id, method.id, sign_in_id, purpose, bytes_to_base64url(secrets.token_bytes(32)),
            secrets.token_urlsafe(32), now=now, expires_at=now + CEREMONY_TTL)
        found = self.store.webauthn_challenge_of_attempt(method.id, sign_in_id)
        assert found is not None and found.id == challenge_id
        return found

    @staticmethod
    def _live(ch: WebAuthnChallengeRecord | None, now: float) -> bool:
        return ch is not None and ch.status != "used" and now < ch.expires_at

    @staticmethod
    def _enroll_id(method: MethodRecord) -> str:
        return f"enroll-{method.id}"

    def _uv(self) -> UserVerificationRequirement:
        return (UserVerificationRequirement.REQUIRED if self.settings.uv_required
                else UserVerificationRequirement.PREFERRED)

    def _descriptor(self, credential_id: str, transports: tuple[str, ...]) -> PublicKeyCredentialDescriptor:
        known = {t.value for t in AuthenticatorTransport}
        return PublicKeyCredentialDescriptor(id=base64url_to_bytes(credential_id),
                                             transports=[AuthenticatorTransport(t) for t in transports if t in known])

    def registration_options(self, user: UserRecord, ch: WebAuthnChallengeRecord) -> str:
        """``navigator.credentials.create`` options (JSON) for an enrollment's ceremony."""
        existing = self.store.webauthn_credentials_of_user(user.id)
        options = generate_registration_options(
            rp_id=self.settings.rp_id, rp_name=self.settings.rp_name, user_name=user.username,
            user_id=f"mfa-user-{user.id}".encode("ascii"), user_display_name=user.display_name or user.username,
            challenge=base64url_to_bytes(ch.challenge), timeout=CEREMONY_TTL * 1000,
            attestation=(AttestationConveyancePreference.DIRECT if self.settings.attestation == "direct"
                         else AttestationConveyancePreference.NONE),
            authenticator_selection=AuthenticatorSelectionCriteria(resident_key=ResidentKeyRequirement.PREFERRED,
                                                                   user_verification=self._uv()),
            exclude_credentials=[self._descriptor(c.credential_id, c.transports) for c in existing])
        return options_to_json(options)

    def authentication_options(self, method: MethodRecord, ch: WebAuthnChallengeRecord) -> str:
        """``navigator.credentials.get`` options (JSON) for a sign-in's ceremony: only this method's credential."""
        credential = self.store.webauthn_credential_of_method(method.id)
        allow = [] if credential is None else [self._descriptor(credential.credential_id, credential.transports)]
        options = generate_authentication_options(
            rp_id=self.settings.rp_id, challenge=base64url_to_bytes(ch.challenge), timeout=CEREMONY_TTL * 1000,
            allow_credentials=allow, user_verification=self._uv())
        return options_to_json(options)

    def _refused(self, user: UserRecord, ctx: FactorContext, result: str, **detail: object) -> Verification:
        self.audit.write("webauthn", result, now=ctx.now, actor=user.username, username=user.username,
                         client_ip=ctx.client_ip, user_agent=ctx.user_agent, **detail)
        return Verification(Outcome.REJECTED)

    def _take(self, ch: WebAuthnChallengeRecord | None, purpose: str, now: float) -> WebAuthnChallengeRecord | None:
        """The ceremony's answered row, now used (once), or None."""
        if ch is None or ch.purpose != purpose or ch.status != "answered" or ch.answer is None:
            return None
        return ch if self.store.use_webauthn_challenge(ch.id, now=now) else None

    # -- the Factor protocol ---------------------------------------------------------------------------------
    def enroll_begin(self, user: UserRecord, inputs: Mapping[str, str], ctx: FactorContext) -> EnrollmentView:
        name = " ".join((inputs.get("name") or "").split())
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise EnrollError(f"Give this passkey a name of 1 to {MAX_NAME} characters, like \u201cYubiKey 5\u201d "
                              "or \u201cWork laptop\u201d.")
        taken = {m.label.casefold() for m in self.store.list_methods(user.id) if m.kind == self.kind}
        if name.casefold() in taken:
            raise EnrollError("You have a passkey with that name already. Choose another name.")
        self.store.delete_methods(user.id, unconfirmed_only=True)  # one enrollment in flight per user
        method_id = self.store.add_method(user.id, self.kind, name, None, now=ctx.now)
        method = self.store.get_method(method_id)
        assert method is not None
        self._new_challenge(user, method, self._enroll_id(method), "register", ctx.now)
        return self.enroll_view(user, method, ctx)

    def enroll_view(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> EnrollmentView:
        ch = self.store.webauthn_challenge_of_attempt(method.id, self._enroll_id(method))
        fields = {"name": method.label}
        if ch is not None and ch.purpose == "register" and ch.status == "pending" and ctx.now < ch.expires_at:
            fields["options"] = self.registration_options(user, ch)
            fields["register"] = f"{self.settings.prefix}/webauthn/register/{ch.token}"
        return EnrollmentView(method_id=method.id, fields=fields)

    def enroll_finish(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
                      ctx: FactorContext) -> Verification:
        if method.confirmed or method.user_id != user.id or method.kind != self.kind:
            return Verification(Outcome.REJECTED)
        ch = self._take(self.store.webauthn_challenge_of_attempt(method.id, self._enroll_id(method)), "register",
                        ctx.now)
        if ch is None:
            return self._retry(user, method, ctx, Verification(Outcome.REJECTED))
        result = self._check_registration(user, method, ch, ctx)
        if not result.accepted:
            return self._retry(user, method, ctx, result)
        if not self.store.confirm_method(method.id, user.id, step=None, now=ctx.now,
                                         only_if_first=ctx.first_method_only):
            return Verification(Outcome.REPLAYED)
        self.audit.write("webauthn", "registered", now=ctx.now, actor=user.username, username=user.username,
                         client_ip=ctx.client_ip, user_agent=ctx.user_agent, method=str(method.id), label=method.label)
        return result

    def _retry(self, user: UserRecord, method: MethodRecord, ctx: FactorContext,
               result: Verification) -> Verification:
        """A failed registration: a fresh ceremony for the next try (the used or expired one is spent)."""
        if not self._live(self.store.webauthn_challenge_of_attempt(method.id, self._enroll_id(method)), ctx.now):
            self._new_challenge(user, method, self._enroll_id(method), "register", ctx.now)
        return result

    def _check_registration(self, user: UserRecord, method: MethodRecord, ch: WebAuthnChallengeRecord,
                            ctx: FactorContext) -> Verification:
        assert ch.answer is not None
        try:
            credential = parse_response(ch.answer, "register")
            assert isinstance(credential, RegistrationCredential)
            roots = list(self.settings.attestation_roots)
            verified = verify_registration_response(
                credential=credential, expected_challenge=base64url_to_bytes(ch.challenge),
                expected_rp_id=self.settings.rp_id, expected_origin=list(self.settings.origins),
                require_user_verification=self.settings.uv_required,
                pem_root_certs_bytes_by_fmt={fmt: roots for fmt in AttestationFormat} if roots else None)
        except (BadResponse, WebAuthnException) as exc:
            return self._refused(user, ctx, "registration_refused", reason=str(exc)[:200])
        aaguid = verified.aaguid.lower()
        if self.settings.attestation_roots:
            unproven = self._unproven_model(credential, aaguid)
            if unproven is not None:
                return self._refused(user, ctx, "registration_refused", reason=unproven)
        if self.settings.aaguids and verified.fmt == AttestationFormat.NONE:
            # No attestation statement: the AAGUID is only what the client says, so it cannot pass the allow-list.
            return self._refused(user, ctx, "registration_refused", reason="no attestation of the authenticator model")
        if self.settings.aaguids and aaguid not in self.settings.aaguids:
            return self._refused(user, ctx, "registration_refused", reason=f"authenticator model {aaguid} not allowed")
        transports = tuple(t.value for t in (credential.response.transports or []))
        added = self.store.add_webauthn_credential(
            user.id, method.id, bytes_to_base64url(verified.credential_id), verified.credential_public_key,
            sign_count=verified.sign_count, transports=transports, aaguid=aaguid, name=method.label, now=ctx.now)
        if added is None:
            return self._refused(user, ctx, "registration_refused", reason="credential registered already")
        return Verification(Outcome.ACCEPTED)

    @staticmethod
    def _unproven_model(credential: RegistrationCredential, aaguid: str) -> str | None:
        """With attestation roots: why this (library-verified) registration does not prove its model, or None.
        The library checked the chain of any certificates given against the roots; here a chain must exist (a
        "none" or self attestation proves nothing), and a leaf naming a model must name the one attested."""
        statement = parse_attestation_object(credential.response.attestation_object)
        if statement.fmt == AttestationFormat.NONE or not statement.att_stmt.x5c:
            return "no attestation certificate chain to a configured root (none or self attestation)"
        try:
            leaf = x509.load_der_x509_certificate(statement.att_stmt.x5c[0])
            named = leaf.extensions.get_extension_for_oid(AAGUID_EXTENSION).value
        except x509.ExtensionNotFound:
            return None
        except ValueError:
            return "the attestation certificate cannot be read"
        raw = named.value if isinstance(named, x509.UnrecognizedExtension) else b""
        if raw != b"\x04\x10" + bytes.fromhex(aaguid.replace("-", "")):  # a DER OCTET STRING of the 16 bytes
            return "the attestation certificate names another authenticator model than the authenticator data"
        return None

    def begin(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> None:
        """A ceremony for the attempt, unless it has a live one (a reload makes none; a used or expired one is
        replaced, so a retry after a counted failure gets a fresh challenge)."""
        if ctx.attempt_id and not self._live(self.store.webauthn_challenge_of_attempt(method.id, ctx.attempt_id),
                                             ctx.now):
            self._new_challenge(user, method, ctx.attempt_id, "authenticate", ctx.now)

    def prompt(self, user: UserRecord, method: MethodRecord, ctx: FactorContext) -> Prompt:
        base = f"{self.settings.prefix}/webauthn"
        return Prompt(Interaction.CEREMONY, f"Use your passkey \u201c{method.label}\u201d.",
                      {"options": f"{base}/options.json", "answer": f"{base}/assertion",
                       "script": f"{base}/webauthn.js", "name": method.label})

    def verify(self, user: UserRecord, method: MethodRecord, response: Mapping[str, str],
               ctx: FactorContext) -> Verification:
        if not method.confirmed or method.user_id != user.id or method.kind != self.kind or not ctx.attempt_id:
            return Verification(Outcome.REJECTED)
        latest = self.store.webauthn_challenge_of_attempt(method.id, ctx.attempt_id)
        if latest is not None and latest.status == "pending" and ctx.now < latest.expires_at:
            return Verification(Outcome.PENDING)  # the form came without a ceremony: nothing to check yet
        if latest is not None and latest.status == "used":
            return Verification(Outcome.REPLAYED)
        ch = self._take(latest, "authenticate", ctx.now)
        if ch is None:
            return Verification(Outcome.REJECTED)  # expired
        return self.check_assertion(user, method, ch, ctx)

    def check_assertion(self, user: UserRecord, method: MethodRecord, ch: WebAuthnChallengeRecord,
                        ctx: FactorContext) -> Verification:
        """Check a used ceremony's stored assertion (see the module docstring for what it must satisfy)."""
        assert ch.answer is not None
        stored = self.store.webauthn_credential_of_method(method.id)
        if stored is None or stored.user_id != user.id:
            return self._refused(user, ctx, "refused", reason="the method has no credential")
        try:
            credential = parse_response(ch.answer, "authenticate")
            assert isinstance(credential, AuthenticationCredential)
        except BadResponse as exc:
            return self._refused(user, ctx, "refused", reason=str(exc))
        if not secrets.compare_digest(bytes(credential.raw_id), base64url_to_bytes(stored.credential_id)):
            return self._refused(user, ctx, "refused", reason="not the credential of this method",
                                 method=str(method.id))
        try:
            # The counter is compared below (0 here: the library's own comparison would hide the regression
            # among other failures); the signature is checked first, so only a signed counter is believed.
            verified = verify_authentication_response(
                credential=credential, expected_challenge=base64url_to_bytes(ch.challenge),
                expected_rp_id=self.settings.rp_id, expected_origin=list(self.settings.origins),
                credential_public_key=stored.public_key, credential_current_sign_count=0,
                require_user_verification=self.settings.uv_required)
        except WebAuthnException as exc:
            return self._refused(user, ctx, "refused", reason=str(exc)[:200], method=str(method.id))
        new = verified.new_sign_count
        if (new > 0 or stored.sign_count > 0) and new <= stored.sign_count:
            return self._refused(user, ctx, "counter_regression", method=str(method.id), label=method.label,
                                 reason=f"sign count {new} is not above {stored.sign_count}")
        if not self.store.advance_webauthn_sign_count(stored.id, stored.sign_count, new, now=ctx.now):
            return Verification(Outcome.REPLAYED)  # another check of this credential won the race
        return Verification(Outcome.ACCEPTED)

    # -- routes ------------------------------------------------------------------------------------------------
    def store_response(self, ch: WebAuthnChallengeRecord | None, purpose: str, raw: str, now: float) -> Response:
        """Keep a posted response on its ceremony: 200 once; a 400 naming what is wrong (nothing changes)."""
        try:
            parse_response(raw, purpose)
        except BadResponse as exc:
            return _json({"error": f"Refused: {exc}."}, 400)
        if ch is None or ch.purpose != purpose or not self.store.answer_webauthn_challenge(ch.id, raw, now=now):
            return _json({"error": "This ceremony has expired or was answered already. Reload the page."}, 409)
        return _json({"status": "answered"})

    def handle(self, route: str, rctx: RouteContext, **args: str) -> Response:
        if route in ("script", "passwordless_script"):
            if route == "passwordless_script" and not self.settings.passwordless:
                raise NotFound()
            return Response(_SCRIPT if route == "script" else _PASSWORDLESS_SCRIPT,
                            content_type="text/javascript; charset=utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})
        if route == "register":
            token = args.get("token", "")
            ch = self.store.webauthn_challenge_by_token(token) if 0 < len(token) <= 64 else None
            return self.store_response(ch, "register", rctx.request.form.get("credential", ""), rctx.now)
        if rctx.method is None or rctx.user is None or not rctx.factor_context.attempt_id:
            raise NotFound()
        ch = self.store.webauthn_challenge_of_attempt(rctx.method.id, rctx.factor_context.attempt_id)
        if route == "options":
            if ch is None or ch.status != "pending" or rctx.now >= ch.expires_at or ch.purpose != "authenticate":
                return _json({"error": "This sign-in's passkey request has expired. Reload the page."}, 409)
            return Response(self.authentication_options(rctx.method, ch), content_type="application/json",
                            headers={"Cache-Control": "no-store"})
        if route == "assertion":
            return self.store_response(ch, "authenticate", rctx.request.form.get("credential", ""), rctx.now)
        raise NotFound()


__all__ = ["AAGUID_EXTENSION", "CEREMONY_TTL", "MAX_RESPONSE_CHARS", "BadResponse", "WebAuthnFactor",
           "WebAuthnSettings",
           "parse_response"]
