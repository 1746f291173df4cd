"""The console authenticator's key file.

Rules: one JSON file (default ``~/.config/mfa-authenticator/accounts.json``) holding each account's private key
(PKCS#8 DER, base64url), the server's public signing key and base URL, and optional TOTP secrets. It is created
with mode 0600 (its folder 0700) and written atomically (a temporary file in the same folder, then a rename). A file
that the group or others can read or write is refused, as is one owned by another user: a key anyone else can read
is no second factor.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class KeyStoreError(Exception):
    """The key file cannot be used (the message says why)."""


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mfa-authenticator" / "accounts.json"


@dataclass
class Account:
    account_id: str
    base_url: str
    server_key: str  # base64url raw Ed25519
    private_key: str  # base64url PKCS#8 DER
    algorithm: str
    site: str = ""
    username: str = ""
    name: str = ""
    channel: str = ""  # the push channel set for this account: "" (long-poll only) or "webhook <host>"


@dataclass
class TotpAccount:
    label: str
    secret: str
    digits: int = 6
    period: int = 30
    digest: str = "sha1"


@dataclass
class KeyStore:
    path: Path
    accounts: list[Account] = field(default_factory=list)
    totp: list[TotpAccount] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        if not path.exists():
            return cls(path)
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyStoreError(f"{path}: readable or writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                                f"run: chmod 600 {path}")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise KeyStoreError(f"{path}: owned by another user")
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, [Account(**a) for a in data.get("accounts", [])],
                       [TotpAccount(**t) for t in data.get("totp", [])])
        except (ValueError, TypeError, AttributeError) as exc:
            raise KeyStoreError(f"{path}: not a key file of this program ({exc})") from None

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {"version": 1, "accounts": [asdict(a) for a in self.accounts], "totp": [asdict(t) for t in self.totp]}
        fd, tmp = tempfile.mkstemp(prefix=".accounts-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def find(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.account_id == account_id), None)
