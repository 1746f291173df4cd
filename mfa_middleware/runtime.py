"""Wiring: everything one configuration needs at run time, built once and shared by the adapters, the pages
and the CLI. Nothing here is global; two runtimes in one process are independent."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher

from .config import Config
from .core.decision import DecisionSettings
from .core.facts import IPNetwork, parse_networks
from .core.policy import Policy
from .core.tokens import TokenCodec
from .factors import Factor, FactorRegistry
from .factors.backup_codes import BackupCodesFactor
from .factors.email import EmailCodeFactor, EmailSettings
from .factors.oath.factor import OathTokenFactor
from .factors.push import PushFactor, PushSettings
from .factors.sms import SmsCodeFactor, SmsSettings
from .factors.totp import TotpFactor
from .factors.voice import MobileCallFactor, PhoneCallFactor, VoiceSettings
from .factors.webauthn import WebAuthnFactor, WebAuthnSettings
from .gateways import EmailGateway, build_email_gateway
from .gateways.phone import PhoneGateway, build_phone_gateway
from .primary.base import PasswordMethod
from .primary.local import LocalPasswords
from .primary.remote_user import RemoteUserMethod
from .secretbox import SecretBox
from .services.accounts import Accounts
from .services.app_passwords import AppPasswords
from .services.audit import AuditLog
from .services.basic import BasicAuthenticator
from .services.devices import RememberedDevices
from .services.fraud import FraudReports
from .services.lockout import Lockout
from .services.oath_tokens import OathTokens
from .services.passwords import Passwords
from .services.phone_limits import PhoneSendGuard
from .services.regulation import Regulation
from .services.revocation import Listener, RevocationCache
from .services.signin import SignIn
from .store import Store
from .store.notify import NotificationListener

_T = TypeVar("_T")
#: how long counted phone sends are kept (the longest cap looks back a day)
PHONE_SENDS_KEPT = 2 * 86400
#: how long one-time rows (codes, calls, ceremonies, push requests) are kept after they expire
EXPIRED_KEPT = 86400


class Runtime:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time, store: Store | None = None,
                 password_hasher: PasswordHasher | None = None, primary: PasswordMethod | None = None) -> None:
        self.config = config
        self.clock = clock
        st = config.store
        self.store = store if store is not None else Store(
            config.database, timeout=st.timeout, busy_timeout=st.busy_timeout, pool_size=st.pool_size,
            max_overflow=st.max_overflow, pool_timeout=st.pool_timeout, pool_recycle=st.pool_recycle,
            transaction_pooler=st.transaction_pooler)
        self.codec = TokenCodec(config.secret_keys)
        self.box = SecretBox(config.encryption_keys)
        self.policy = Policy.from_config(config)
        self.trusted_proxies: tuple[IPNetwork, ...] = parse_networks(config.trusted_proxies)
        s = config.session
        self.revocations = RevocationCache(
            self.store, interval=s.revocation_interval, horizon=s.absolute_timeout + 60,
            # phone sends are counted over a day at most: older rows only take space
            housekeeping=(lambda now: self.store.prune_phone_sends(now - PHONE_SENDS_KEPT),
                          lambda now: self.store.prune_expired(now - EXPIRED_KEPT)),
            clock=clock, listener=_revocation_listener(config, self.store))
        self.decision_settings = DecisionSettings(
            prefix=config.prefix, absolute_timeout=s.absolute_timeout, inactivity_timeout=s.inactivity_timeout,
            refresh_after=min(s.refresh_after, s.inactivity_timeout / 2), revocation_grace=self.revocations.grace)
        self.passwords = Passwords(password_hasher)
        self.email_gateway: EmailGateway | None = (
            build_email_gateway(config.email, config.site_name) if config.email is not None else None)
        self.audit = AuditLog(self.store)
        self.phone_gateway: PhoneGateway | None = (
            build_phone_gateway(config.phone) if config.phone is not None else None)
        #: counts every text and call against the caps; the number digests' key is derived from the encryption
        #: keys, so it is the same on every server and across restarts
        self.phone_guard = PhoneSendGuard(self.store, self.audit, self.box.lookup_keys("phone numbers")[0],
                                          config.methods.sms.limits)
        self.fraud = FraudReports(self.store, self.audit, config.fraud, email_gateway=self.email_gateway,
                                  site_name=config.site_name)
        self.oath_tokens = OathTokens(self.store, self.box, self.audit, clock)
        self.factors = FactorRegistry()
        for kind in config.methods.enabled:
            self.factors.register(FACTORS[kind](self))
        self.lockout = Lockout(self.store, self.audit, self.revocations, config.lockout)
        self.regulation = Regulation(self.store, self.audit)
        #: the one place a password is checked, for the forms page and the Basic path alike
        self.primary: PasswordMethod = primary if primary is not None else LocalPasswords(self.store, self.passwords)
        self.remote_user = RemoteUserMethod(config.primary)
        self.accounts = Accounts(self.store, self.audit, self.passwords, clock)
        self.signin = SignIn(self.store, self.audit, self.factors, self.lockout, self.primary,
                             site_name=config.site_name)
        self.app_passwords = AppPasswords(self.store, self.audit, self.passwords, config.basic, clock)
        self.basic = BasicAuthenticator(self.store, self.audit, self.lockout, self.primary, self.passwords,
                                        config.basic)
        self.devices = RememberedDevices(self.store, self.codec, self.audit, lifetime=config.methods.remember_device)

    def close(self) -> None:
        self.revocations.close()
        self.store.close()


def _revocation_listener(config: Config, store: Store) -> Callable[[Callable[[], object]], Listener] | None:
    """PostgreSQL: revocations pushed by LISTEN/NOTIFY, on ``[store] listen_url`` or else ``database``
    (:mod:`mfa_middleware.store.notify`). SQLite: None (polling only)."""
    if store.engine.dialect.name != "postgresql":
        return None
    url = config.store.listen_url or config.database
    return lambda wake: NotificationListener(url, wake)


#: The second-factor methods, by kind: one line each (``[methods] enabled`` picks which are offered).
FACTORS: dict[str, Callable[[Runtime], Factor]] = {
    "totp": lambda rt: TotpFactor(rt.store, rt.box, rt.config.totp, max_per_user=rt.config.methods.max_authenticators),
    "email": lambda rt: EmailCodeFactor(rt.store, rt.box, _required(rt.email_gateway), EmailSettings(
        **vars(rt.config.methods.email))),
    "oath": lambda rt: OathTokenFactor(rt.store, rt.box, rt.oath_tokens,
                                       max_per_user=rt.config.methods.max_authenticators),
    "sms": lambda rt: SmsCodeFactor(rt.store, rt.box, _required(rt.phone_gateway), rt.phone_guard, rt.audit,
                                    SmsSettings(code_ttl=rt.config.methods.sms.code_ttl,
                                                allowed_countries=_required(rt.config.phone).allowed_countries,
                                                default_region=_required(rt.config.phone).default_region)),
    "mobile_voice": lambda rt: MobileCallFactor(rt.store, rt.box, _required(rt.phone_gateway), rt.phone_guard, rt.audit,
                                        rt.fraud, _required(rt.config.phone), VoiceSettings(
                                            prefix=rt.config.prefix,
                                            allowed_countries=_required(rt.config.phone).allowed_countries,
                                            default_region=_required(rt.config.phone).default_region,
                                            language=_required(rt.config.phone).language,
                                            voice=_required(rt.config.phone).voice,
                                            call_timeout=_required(rt.config.phone).call_timeout,
                                            public_url=_required(rt.config.phone).public_url,
                                            pin=rt.config.methods.voice.pin), rt.passwords),
    "voice": lambda rt: PhoneCallFactor(rt.store, rt.box, _required(rt.phone_gateway), rt.phone_guard, rt.audit,
                                        rt.fraud, _required(rt.config.phone), VoiceSettings(
                                            prefix=rt.config.prefix,
                                            allowed_countries=_required(rt.config.phone).allowed_countries,
                                            default_region=_required(rt.config.phone).default_region,
                                            language=_required(rt.config.phone).language,
                                            voice=_required(rt.config.phone).voice,
                                            call_timeout=_required(rt.config.phone).call_timeout,
                                            public_url=_required(rt.config.phone).public_url,
                                            pin=rt.config.methods.voice.pin), rt.passwords),
    "webauthn": lambda rt: WebAuthnFactor(rt.store, rt.audit, WebAuthnSettings(
        rp_id=rt.config.methods.webauthn.rp_id, origins=rt.config.methods.webauthn.origins, rp_name=rt.config.site_name,
        user_verification=rt.config.methods.webauthn.user_verification,
        attestation=rt.config.methods.webauthn.attestation, aaguids=rt.config.methods.webauthn.aaguids,
        prefix=rt.config.prefix, passwordless=rt.config.methods.webauthn.passwordless,
        attestation_roots=rt.config.methods.webauthn.attestation_roots)),
    "backup_codes": lambda rt: BackupCodesFactor(rt.store, rt.box, rt.passwords),
    "push": lambda rt: PushFactor(rt.store, rt.box, rt.audit, rt.fraud, PushSettings(
        prefix=rt.config.prefix, request_ttl=rt.config.methods.push.request_ttl,
        max_per_10_minutes=rt.config.methods.push.max_per_10_minutes,
        vapid_private_key=rt.config.methods.push.vapid_private_key, vapid_subject=rt.config.methods.push.vapid_subject,
        channel_hosts=rt.config.methods.push.channel_hosts, send_timeout=rt.config.methods.push.send_timeout),
        clock=rt.clock,
        max_per_user=rt.config.methods.max_authenticators),
}


def _required(value: _T | None) -> _T:
    if value is None:  # the configuration refuses "email" without [email], "sms" without [phone]
        raise AssertionError("the method needs a gateway its configuration table did not give")
    return value
