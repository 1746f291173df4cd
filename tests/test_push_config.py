"""``[methods.push]``: its defaults, and every bad value refused with the key named."""

from __future__ import annotations

from typing import Any

import pytest

from mfa_middleware.config import ConfigError
from tests.support.mfa import make_config


def test_defaults() -> None:
    push = make_config("sqlite://", methods={"enabled": ["push"]}).methods.push
    assert (push.request_ttl, push.max_per_10_minutes) == (60, 5)


@pytest.mark.parametrize(("table", "message"), [
    pytest.param({"request_ttl": "5s"}, r"methods\.push\.request_ttl: must be between 15s and 10m", id="ttl-short"),
    pytest.param({"request_ttl": "1h"}, r"methods\.push\.request_ttl: must be between 15s and 10m", id="ttl-long"),
    pytest.param({"max_per_10_minutes": 0}, r"methods\.push\.max_per_10_minutes", id="cap-zero"),
    pytest.param({"max_per_10_minutes": 1000}, r"methods\.push\.max_per_10_minutes", id="cap-huge"),
    pytest.param({"colour": "blue"}, r"methods\.push\.colour", id="unknown-key"),
])
def test_bad_values_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("sqlite://", methods={"enabled": ["push"], "push": table})


def test_request_and_account_ids_never_read_as_command_line_options() -> None:
    """`mfa-authenticator deny ID` took an id starting with "-" for an option (1 id in 64)."""
    from mfa_middleware.factors.push import device_token

    ids = [device_token() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids) and all(len(i) == 22 for i in ids)
