"""The primary sign-in protocol: how the first step proves who the user is.

Two shapes, one per way a credential arrives:

- :class:`PasswordMethod`: a username and a password typed into the forms page or sent in an HTTP Basic
  header. The local store (:class:`mfa_middleware.primary.local.LocalPasswords`) implements it today; LDAP and
  RADIUS will. The forms page and the Basic path both check a password through the one configured
  :class:`PasswordMethod` and nowhere else.
- :class:`ServerMethod`: the web server (IIS, Apache, nginx with Negotiate) authenticated the user and says
  who it is in the environ's ``REMOTE_USER``
  (:class:`mfa_middleware.primary.remote_user.RemoteUserMethod`); OpenID Connect will arrive the same way once
  its callback has verified the ID token.

A primary method never counts failures, writes audit rows or looks at lockouts: the caller reserves the attempt
on :class:`mfa_middleware.services.lockout.Lockout` first and passes ``None`` as the user when the attempt may
not be checked, so the method's cost (and answer) is the same for every failure.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..store import UserRecord


@runtime_checkable
class PasswordMethod(Protocol):
    #: the name in ``[primary] methods`` ("forms" for the local store)
    kind: str

    def check(self, user: UserRecord | None, password: str, now: float) -> bool:
        """True when ``password`` is ``user``'s. Exactly one expensive verification on every call, also when
        ``user`` is None (an unknown user, or an attempt the lockout refused): then it checks a dummy and is
        False. May update the stored credential on success (a rehash); never raises for a wrong password."""
        ...


@runtime_checkable
class ServerMethod(Protocol):
    #: the name in ``[primary] methods`` ("remote_user")
    kind: str

    def username(self, asserted: str) -> str | None:
        """The store username for a name the server asserted, or None when it cannot be mapped (a domain that is
        not allowed, an invalid name)."""
        ...
