"""Audit one page in the browser as it is now: axe-core, no horizontal scroll on a phone, screenshots.

``audit_page(page, name)`` is meant for every page and state the product has: it runs axe-core
(``axe-playwright-python``) at desktop width and at phone width and fails on any serious or critical violation,
checks that the page needs no horizontal scroll at 360 px, and saves ``<name>-desktop.png`` (1280x800) and
``<name>-phone.png`` (390x844) under :data:`SHOTS` (``build/screenshots/``; ``MFA_TEST_SHOTS`` names another
folder). The viewport is put back as it was, so a test goes on from the same page in the same state.

Screenshots are for people to look at; nothing compares them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.components import require_component

if TYPE_CHECKING:
    from playwright.sync_api import Page

SHOTS = Path(os.environ.get("MFA_TEST_SHOTS") or Path(__file__).resolve().parents[2] / "build" / "screenshots")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
NARROWEST = {"width": 360, "height": 740}
BLOCKING = ("serious", "critical")


def axe_problems(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, as ``rule (impact): targets``."""
    try:
        from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
    except ImportError as error:
        require_component("axe-playwright-python", f"cannot import it ({error})")
    results: Any = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
            for v in results.response["violations"] if v["impact"] in BLOCKING]


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no horizontal scroll)."""
    overflow: int = page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - document.documentElement.clientWidth")
    return overflow


def audit_page(page: Page, name: str) -> None:
    """axe at desktop and phone width, no horizontal scroll at 360 px, and both screenshots (see the module)."""
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name), f"screenshot names are lower-case words: {name!r}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    try:
        problems: list[str] = []
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            problems += [f"{label}: {p}" for p in axe_problems(page)]
            page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        page.set_viewport_size(NARROWEST)
        overflow = horizontal_overflow(page)
        assert not problems, f"{name}: {problems}"
        assert overflow <= 0, f"{name}: {overflow} px of horizontal scroll at {NARROWEST['width']} px"
    finally:
        if before is not None:
            page.set_viewport_size(before)
