"""Skip-or-fail policy for tests that need a real component (DESIGN.md section 6).

On a developer's machine a missing component (PostgreSQL binaries, Debian's
Chromium, Playwright, ...) skips the test with the reason.  In CI, where
``.ci/run`` exports ``MFA_TEST_REQUIRE_ALL=1``, the same situation fails the
test, so a broken CI image can never turn into a silently green run.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ALL_ENV = "MFA_TEST_REQUIRE_ALL"


def require_all() -> bool:
    """True when every component must be present (CI mode)."""
    return os.environ.get(REQUIRE_ALL_ENV) == "1"


def require_component(name: str, reason: str) -> NoReturn:
    """Skip the current test because component ``name`` is missing; fail in CI mode."""
    if require_all():
        pytest.fail(f"missing component {name}: {reason} ({REQUIRE_ALL_ENV}=1)")
    pytest.skip(f"missing component {name}: {reason}")
