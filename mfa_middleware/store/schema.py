"""The store's tables (SQLAlchemy Core). Changes go through a migration in ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        String, Table, Text, UniqueConstraint)

metadata = MetaData()

users = Table(
    "mfa_users", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("email", String(320)),
    Column("display_name", String(200)),
    Column("groups", Text, nullable=False, default=""),  # comma-separated group names
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("state", String(16), nullable=False, default="enabled"),  # disabled | enabled | enforced
    Column("password_hash", String(255)),  # argon2id; NULL: no local password (Windows sign-in only)
    Column("failed_count", Integer, nullable=False, default=0),  # failures in the current lockout window
    Column("consecutive_failures", Integer, nullable=False, default=0),  # reset only by a successful sign-in
    Column("last_failed_at", Float),
    Column("locked_until", Float),
    Column("blocked_until", Float),  # blocked users are refused everywhere until then (or unblocked)
    Column("blocked_reason", String(300)),
    Column("bypass_until", Float),  # a one-time bypass of the second factor, consumed at the next sign-in
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

methods = Table(
    "mfa_methods", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),  # totp, ...
    Column("label", String(100), nullable=False),
    Column("secret", LargeBinary),  # encrypted with the configured encryption key
    Column("confirmed", Boolean, nullable=False, default=False),
    Column("last_step", BigInteger),  # TOTP: the last accepted time step, consumed atomically
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("is_default", Boolean, nullable=False, default=False),  # the method the verify page starts with
    Column("detail", LargeBinary),  # the method's own data (an email address...), encrypted like ``secret``
    Index("ix_mfa_methods_user", "user_id"),
)

backup_codes = Table(
    "mfa_backup_codes", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
    Column("lookup", String(32), nullable=False),  # keyed digest: finds the row without trying every hash
    Column("code_hash", String(255), nullable=False),  # argon2id
    Column("created_at", Float, nullable=False),
    Column("used_at", Float),
    Index("ix_mfa_backup_codes_lookup", "user_id", "lookup"),
)

challenges = Table(
    "mfa_challenges", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
    Column("sign_in_id", String(64), nullable=False),  # the sign-in attempt (or enrollment) the code is bound to
    Column("code_hash", String(128), nullable=False),  # keyed digest of the one-time code
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float),
    Index("ix_mfa_challenges_attempt", "method_id", "sign_in_id"),
    Index("ix_mfa_challenges_user_at", "user_id", "created_at"),
)

# "Remember this device": a browser that may skip the second factor until expires_at. Rows are deleted when the
# device is forgotten, when the user's methods change, and with every user-wide revocation (Store.add_revocation).
devices = Table(
    "mfa_devices", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", String(64), nullable=False, unique=True),  # SHA-256 of the random id in the cookie
    Column("name", String(100), nullable=False),  # from the user agent ("Firefox on Windows")
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("expires_at", Float, nullable=False),
    Index("ix_mfa_devices_user", "user_id"),
)

revocations = Table(
    "mfa_revocations", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(128), nullable=False),
    Column("session_id", String(64)),  # NULL: every session of the user issued at or before not_before
    Column("not_before", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_mfa_revocations_created", "created_at"),
    Index("ix_mfa_revocations_user", "username", "not_before"),
)

audit = Table(
    "mfa_audit", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("username", String(128)),
    Column("event", String(64), nullable=False),
    Column("result", String(32), nullable=False),
    Column("client_ip", String(64)),
    Column("user_agent", String(300)),
    Column("detail", Text),
    Column("request_id", String(64)),  # the request that wrote the row (as in the log lines: mfa_middleware.logs)
    Index("ix_mfa_audit_user_at", "username", "at"),
    Index("ix_mfa_audit_at", "at"),
)

app_passwords = Table(
    "mfa_app_passwords", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(100), nullable=False),
    Column("lookup", String(32), nullable=False),  # truncated SHA-256 of the password: finds the row to verify
    Column("password_hash", String(255), nullable=False),  # argon2id
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("last_used_ip", String(64)),
    UniqueConstraint("user_id", "label", name="uq_mfa_app_passwords_label"),
    Index("ix_mfa_app_passwords_lookup", "user_id", "lookup"),
)

client_failures = Table(
    "mfa_client_failures", metadata,
    Column("client_ip", String(64), primary_key=True),
    Column("failed_count", Integer, nullable=False, default=0),
    Column("last_failed_at", Float, nullable=False),
    Column("locked_until", Float),
)

#: how many of a user's failures in the current window came from each client address (regulation): a success from
#: an address takes that address's failures off the user's (and the address's) counters, and no others
user_address_failures = Table(
    "mfa_user_address_failures", metadata,
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), primary_key=True),
    Column("client_ip", String(64), primary_key=True),
    Column("failed_count", Integer, nullable=False, default=0),
    Column("last_failed_at", Float, nullable=False),
)

oath_tokens = Table(
    "mfa_oath_tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("serial", String(64), nullable=False),  # as printed on the token
    # NULL: in the pool (unassigned); a deleted user's tokens go back to the pool
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="SET NULL")),
    Column("kind", String(8), nullable=False),  # totp | hotp
    Column("secret", LargeBinary, nullable=False),  # the Base32 key, encrypted with the configured encryption key
    Column("digits", Integer, nullable=False),  # 6 or 8
    Column("period", Integer),  # TOTP: 30 or 60 seconds; NULL for HOTP
    Column("counter", BigInteger),  # HOTP: the next counter value expected, moved forward atomically
    Column("last_step", BigInteger),  # TOTP: the last accepted time step, consumed atomically
    Column("manufacturer", String(100)),
    Column("model", String(100)),
    Column("imported_at", Float, nullable=False),
    Column("last_used_at", Float),
    # set when the user activates the token: the method row that signs in with it
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="SET NULL")),
    UniqueConstraint("serial", name="uq_mfa_oath_tokens_serial"),
    UniqueConstraint("method_id", name="uq_mfa_oath_tokens_method"),
    Index("ix_mfa_oath_tokens_user", "user_id"),
)


# -- phone methods: send caps and fraud reports ---------------------------------------------------------------
# One row per text message or call handed to a phone gateway (refused by the gateway or not: a send that failed
# still counts, so an attacker gets no free retries). The caps of Store.reserve_phone_send count these rows.
# number_key is a keyed HMAC of the E.164 number (see mfa_middleware.services.phone_limits): the table holds no
# phone number. Old rows are removed by Store.prune_phone_sends (nothing reads rows older than a day).
phone_sends = Table(
    "mfa_phone_sends", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("number_key", String(64), nullable=False),  # hex HMAC-SHA256 of the E.164 number
    Column("country", String(4), nullable=False),  # ISO 3166 region of the number ("GB")
    Column("channel", String(8), nullable=False),  # text | call
    Column("purpose", String(16), nullable=False),  # sign_in | enroll
    Column("at", Float, nullable=False),
    Index("ix_mfa_phone_sends_user_at", "user_id", "at"),
    Index("ix_mfa_phone_sends_number_at", "number_key", "at"),
    Index("ix_mfa_phone_sends_country_at", "country", "at"),
)

# "This was not me": one row per fraud report (phone call answered 0#, push denied as fraud). reference is a
# digest of the challenge or attempt the report ends; it is unique, so a replayed report writes one row.
fraud_reports = Table(
    "mfa_fraud_reports", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("username", String(128), nullable=False),
    Column("method_kind", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("client_ip", String(64)),
    Column("user_agent", String(300)),
    Column("reference", String(64), nullable=False),
    Column("blocked_until", Float),  # NULL: the report did not block the user
    Column("notified", String(300), nullable=False, default=""),  # notifications that succeeded ("email,webhook")
    UniqueConstraint("reference", name="uq_mfa_fraud_reports_reference"),
    Index("ix_mfa_fraud_reports_at", "at"),
    Index("ix_mfa_fraud_reports_user_at", "username", "at"),
)

# -- phone calls (the voice method) ---------------------------------------------------------------------------
# One row per call placed for a sign-in attempt or an enrollment. token_digest is the SHA-256 of the one-time id
# in the call's callback URLs (the id itself is never stored). status moves once, atomically, from "pending" to
# approved | fraud | failed (only before expires_at), and "approved" moves once to "used" when the sign-in
# consumes it.
calls = Table(
    "mfa_calls", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
    Column("sign_in_id", String(64), nullable=False),
    Column("token_digest", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | approved | fraud | failed | used
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("answered_at", Float),
    UniqueConstraint("token_digest", name="uq_mfa_calls_token"),
    Index("ix_mfa_calls_attempt", "method_id", "sign_in_id"),
)

# -- passkeys and security keys (the webauthn method) ------------------------------------------------------------
# One credential per method row (kind "webauthn"): a user has as many passkeys as method rows. credential_id is
# the authenticator's id (base64url), unique over everyone; sign_count only ever grows (a conditional UPDATE).
webauthn_credentials = Table(
    "mfa_webauthn_credentials", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
    Column("credential_id", String(1400), nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # COSE key
    Column("sign_count", BigInteger, nullable=False, default=0),
    Column("transports", String(200), nullable=False, default=""),  # comma-separated
    Column("aaguid", String(36), nullable=False, default=""),
    Column("name", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    UniqueConstraint("credential_id", name="uq_mfa_webauthn_credential"),
    Index("ix_mfa_webauthn_credentials_method", "method_id"),
)

# One row per ceremony (a registration for an enrollment, an assertion for a sign-in attempt). The challenge is
# kept here and never taken from the browser; status moves once from "pending" to "answered" (the browser's
# response is stored) and once from "answered" to "used" (checked), each in one conditional UPDATE.
webauthn_challenges = Table(
    "mfa_webauthn_challenges", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
    Column("sign_in_id", String(64), nullable=False),
    Column("purpose", String(16), nullable=False),  # register | authenticate
    Column("challenge", String(128), nullable=False),  # base64url
    Column("token", String(64), nullable=False),  # where a registration's response is posted
    Column("status", String(16), nullable=False),  # pending | answered | used
    Column("answer", Text),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    UniqueConstraint("token", name="uq_mfa_webauthn_challenge_token"),
    Index("ix_mfa_webauthn_challenges_attempt", "method_id", "sign_in_id"),
)


# Passwordless sign-in ceremonies (migration 0013): the challenge of a discoverable-credential assertion asked for
# on the forms sign-in page, before anyone is known. ``binding`` is the SHA-256 (hex) of the browser's anonymous
# pre-sign-in cookie, so only the browser that asked may use it; status moves once from "pending" to "used" in one
# conditional UPDATE; a browser holds at most one pending row (asking again replaces it).
webauthn_logins = Table(
    "mfa_webauthn_logins", metadata,
    Column("id", Integer, primary_key=True),
    Column("binding", String(64), nullable=False),
    Column("challenge", String(128), nullable=False),  # base64url
    Column("status", String(16), nullable=False),  # pending | used
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    UniqueConstraint("challenge", name="uq_mfa_webauthn_login_challenge"),
    Index("ix_mfa_webauthn_logins_binding", "binding"),
)

# -- push approval (the push method's device protocol) ------------------------------------------------------------
# A registration token (its SHA-256 only) lets one device register once within its lifetime; a device is the push
# method's authenticator with its public key; a request is one sign-in's question to a device, whose status moves
# once from "pending" (only before expires_at) and "approved" moves once to "used"; a nonce is kept until its
# timestamp could no longer be accepted, so a replayed device request is refused.
push_registrations = Table(
    "mfa_push_registrations", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
    Column("token_digest", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float),
    UniqueConstraint("token_digest", name="uq_mfa_push_registrations_token"),
)

push_devices = Table(
    "mfa_push_devices", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", String(64), nullable=False),  # the device's public name for itself (not a secret)
    Column("public_key", LargeBinary, nullable=False),  # DER SubjectPublicKeyInfo, Ed25519 or P-256
    Column("algorithm", String(16), nullable=False),  # ed25519 | es256
    Column("name", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen_at", Float),
    # the device's push channel (Web Push subscription or webhook URL), SecretBox-encrypted JSON: its endpoint and
    # keys are capabilities (whoever holds them can wake the device)
    Column("channel", LargeBinary),
    UniqueConstraint("account_id", name="uq_mfa_push_devices_account"),
    UniqueConstraint("method_id", name="uq_mfa_push_devices_method"),
)

push_requests = Table(
    "mfa_push_requests", metadata,
    Column("id", Integer, primary_key=True),
    Column("public_id", String(64), nullable=False),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("method_id", Integer, ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", Integer, ForeignKey("mfa_push_devices.id", ondelete="CASCADE"), nullable=False),
    Column("sign_in_id", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("choices", String(16), nullable=False),  # "12,47,85": the numbers the device offers
    Column("site", String(200), nullable=False),
    Column("host", String(255), nullable=False),
    Column("client_ip", String(64), nullable=False),
    Column("user_agent", String(300), nullable=False),
    Column("status", String(16), nullable=False),  # pending | approved | denied | failed | fraud | used
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("answered_at", Float),
    UniqueConstraint("public_id", name="uq_mfa_push_requests_public_id"),
    Index("ix_mfa_push_requests_attempt", "method_id", "sign_in_id"),
    Index("ix_mfa_push_requests_user", "user_id", "created_at"),
    Index("ix_mfa_push_requests_device", "device_id", "status"),
)

push_nonces = Table(
    "mfa_push_nonces", metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("mfa_push_devices.id", ondelete="CASCADE"), nullable=False),
    Column("nonce", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
    UniqueConstraint("device_id", "nonce", name="uq_mfa_push_nonces"),
    Index("ix_mfa_push_nonces_expiry", "expires_at"),
)

# Sessions made (migration 0015): one row when a sign-in issues a session cookie, never on an authenticated request
# (the hot path reads and writes no store). The security info page lists them and signs out the others by writing a
# revocation of each session id; ``ended_at`` marks the rows ended that way (or by signing out).
sessions = Table(
    "mfa_sessions", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
    Column("sid", String(64), nullable=False),  # the session id the signed cookie carries (not a secret alone)
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),  # the absolute timeout: the row means nothing after it
    Column("client_ip", String(64)),
    Column("user_agent", String(300)),
    Column("methods", String(200), nullable=False, default=""),  # comma-separated, e.g. "forms,totp"
    Column("ended_at", Float),
    UniqueConstraint("sid", name="uq_mfa_sessions_sid"),
    Index("ix_mfa_sessions_user", "user_id", "expires_at"),
)
