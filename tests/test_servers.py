"""``mfa_middleware.servers.waitress_options``: the waitress settings each ``trusted_proxies`` value needs.

waitress itself checks the options (``Adjustments``), so each row is also built into waitress's own settings,
with warnings as errors: an option waitress would reject or deprecate fails here, not at an operator's start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from waitress.adjustments import Adjustments  # type: ignore[import-untyped]

from mfa_middleware.servers import (
    FORWARD_AUTH_WAITRESS_OPTIONS,
    single_proxy_address,
    waitress_options,
)
from tests.support.mfa import make_config

OWN_CHECK = {"clear_untrusted_proxy_headers": False}


def waitress_check(address: str) -> dict[str, Any]:
    return {"trusted_proxy": address, "trusted_proxy_count": 1,
            "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"}, "clear_untrusted_proxy_headers": True}


@pytest.mark.parametrize(("proxies", "expected"), [
    pytest.param([], {}, id="none-waitress-keeps-deleting-the-headers"),
    pytest.param(["127.0.0.1"], waitress_check("127.0.0.1"), id="one-address-waitress-checks"),
    pytest.param(["10.0.0.5/32"], waitress_check("10.0.0.5"), id="host-network-is-one-address"),
    pytest.param(["::1"], waitress_check("::1"), id="one-v6-address"),
    pytest.param(["10.0.0.0/24"], OWN_CHECK, id="network-middleware-checks"),
    pytest.param(["127.0.0.1", "10.0.0.5"], OWN_CHECK, id="two-addresses-middleware-checks"),
])
def test_waitress_options(tmp_path: Path, proxies: list[str], expected: dict[str, Any]) -> None:
    config = make_config(f"sqlite:///{tmp_path / 'mfa.db'}", trusted_proxies=proxies)
    options = waitress_options(config)
    assert options == expected
    assert "*" not in str(options.get("trusted_proxy")), "never trust every peer"
    adjustments = Adjustments(host="127.0.0.1", port=0, **options)
    assert adjustments.trusted_proxy == expected.get("trusted_proxy")


def test_waitress_options_reads_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "mfa.toml"
    path.write_text(f'secret_keys = ["{"k" * 40}"]\nencryption_key = "{"A" * 43}="\n'
                    'database = "sqlite:///mfa.db"\ntrusted_proxies = ["10.0.0.5"]\n', encoding="utf-8")
    assert waitress_options(path)["trusted_proxy"] == "10.0.0.5"
    assert waitress_options(str(path))["trusted_proxy"] == "10.0.0.5"


def test_forward_auth_keeps_the_headers_and_the_peer(tmp_path: Path) -> None:
    assert FORWARD_AUTH_WAITRESS_OPTIONS == OWN_CHECK
    Adjustments(host="127.0.0.1", port=0, **FORWARD_AUTH_WAITRESS_OPTIONS)
    config = make_config(f"sqlite:///{tmp_path / 'mfa.db'}", trusted_proxies=["10.0.0.5", "10.0.0.6"])
    assert single_proxy_address(config) is None
