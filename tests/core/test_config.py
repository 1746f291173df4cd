"""Configuration: the documented shape loads; every bad input names the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mfa_middleware import ConfigError, load_config

KEY = Fernet.generate_key().decode()
GOOD = '''
secret_keys = ["env:MFA_SECRET_KEY"]
encryption_key = "env:MFA_ENCRYPTION_KEY"
database = "sqlite:///var/mfa.db"
default_policy = "deny"
[session]
absolute_timeout = "12h"
inactivity_timeout = "30m"
[primary]
methods = ["forms", "remote_user"]
[[rules]]
path = "/public/*"
policy = "bypass"
[[rules]]
path = "/admin/*"
policy = "two_factor"
groups = ["admins"]
[[rules]]
path = "/*"
policy = "two_factor"
'''
ENV = {"MFA_SECRET_KEY": "s" * 40, "MFA_ENCRYPTION_KEY": KEY}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mfa.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_documented_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), environ=ENV)
    assert config.secret_keys == ("s" * 40,)
    assert config.session.absolute_timeout == 12 * 3600 and config.session.inactivity_timeout == 1800
    assert config.primary.methods == ("forms", "remote_user")
    assert [r.policy for r in config.rules] == ["bypass", "two_factor", "two_factor"]
    assert config.rules[1].groups == ("admins",)
    # A relative SQLite path is relative to the config file's folder.
    assert config.database == f"sqlite:///{(tmp_path / 'var' / 'mfa.db').resolve()}"


@pytest.mark.parametrize(("change", "message"), [
    pytest.param(("default_policy = \"deny\"", "default_policy = \"allow\""), "default_policy", id="bad-policy"),
    pytest.param(("absolute_timeout = \"12h\"", "absolute_timeout = \"12 hours\""), "session.absolute_timeout",
                 id="bad-duration"),
    pytest.param(("absolute_timeout = \"12h\"", "absolute_timeout = \"0s\""), "session.absolute_timeout",
                 id="zero-duration"),
    pytest.param(("inactivity_timeout = \"30m\"", "inactivity_timeout = true"), "session.inactivity_timeout",
                 id="bool-duration"),
    pytest.param(("inactivity_timeout = \"30m\"", "inactivity_timeout = \"30m\"\ncolour = \"red\""),
                 "session.colour", id="unknown-session-key"),
    pytest.param(("default_policy = \"deny\"", "default_policy = \"deny\"\nsecret_key = \"x\""), "secret_key",
                 id="unknown-top-key"),
    pytest.param(("groups = [\"admins\"]", "groups = \"admins\""), "rules[1].groups", id="groups-not-list"),
    pytest.param(("groups = [\"admins\"]", "groups = [\"admins\"]\npolcy = \"x\""), "rules[1].polcy",
                 id="typo-in-rule"),
    pytest.param(("path = \"/public/*\"", "path = \"public/*\""), "rules[0].path", id="relative-rule-path"),
    pytest.param(("path = \"/public/*\"", "path_regex = \"(\""), "rules[0].path_regex", id="bad-regex"),
    pytest.param(("methods = [\"forms\", \"remote_user\"]", "methods = [\"kerberos\"]"), "primary.methods",
                 id="unknown-primary"),
    pytest.param(("database = \"sqlite:///var/mfa.db\"", "database = 5"), "database", id="database-type"),
    pytest.param(("[session]", "[session]\nrevocation_interval = \"-5s\""), "session.revocation_interval",
                 id="negative-duration"),
    pytest.param(("[session]", "[lockout]\nmax_failures = 1000\n[session]"), "lockout.max_failures",
                 id="lockout-over-nist-limit"),
])
def test_bad_values_name_file_and_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_environment_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MFA_ENCRYPTION_KEY is not set"):
        load_config(write(tmp_path, GOOD), environ={"MFA_SECRET_KEY": "s" * 40})


def test_short_secret_key_and_bad_encryption_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load_config(write(tmp_path, GOOD), environ={**ENV, "MFA_SECRET_KEY": "short"})
    with pytest.raises(ConfigError, match="encryption_key: not a valid key"):
        load_config(write(tmp_path, GOOD), environ={**ENV, "MFA_ENCRYPTION_KEY": "not-a-fernet-key"})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "secret_keys = ["), environ=ENV)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"site_name = \"caf\xe9\"")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)
