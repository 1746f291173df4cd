"""OATH hardware tokens: one-time codes (``otp``) and the token inventory (``inventory``).

The inventory is imported by an administrator (``mfa-admin tokens import``) and kept in ``mfa_oath_tokens``
(see :mod:`mfa_middleware.services.oath_tokens`); a user activates an assigned or unassigned token by its serial
number and a current code.
"""

from __future__ import annotations
