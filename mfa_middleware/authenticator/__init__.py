"""``mfa-authenticator``: the console reference authenticator of the device protocol (``docs/push-protocol.md``).

It keeps its accounts (device keys, the server's signing key, the base URL) in a JSON file readable only by the
user (:mod:`.keystore`), talks to the server with :mod:`.client`, and is driven by the commands in :mod:`.cli`.
"""

from __future__ import annotations

from .client import DeviceClient, PendingRequest
from .keystore import Account, KeyStore, KeyStoreError

__all__ = ["Account", "DeviceClient", "KeyStore", "KeyStoreError", "PendingRequest"]
