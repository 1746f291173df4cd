"""The package's layers, checked from the source: a change that makes two layers import each other fails here.

- ``core`` is pure: it imports nothing of the package's outer layers (adapters, pages, services, factors, store,
  runtime, gateways, primary).
- ``adapters`` and ``pages`` never import each other (cookies live below both, in ``web``); only the composition
  root, :mod:`mfa_middleware.middleware`, knows both.
- ``factors`` and ``services`` never import ``pages`` or ``adapters``.
- a service takes its dependencies in its constructor: no service module imports the runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mfa_middleware"


def imported_modules(path: Path) -> set[str]:
    """Every ``mfa_middleware.*`` module a source file imports (also inside functions and TYPE_CHECKING)."""
    module = "mfa_middleware." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mfa_middleware"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("mfa_middleware"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def files_of(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def offenders(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files_of(layer):
        for target in sorted(imported_modules(path)):
            if any(target == f"mfa_middleware.{f}" or target.startswith(f"mfa_middleware.{f}.") for f in forbidden):
                bad.append(f"{path.relative_to(PACKAGE)} imports {target}")
    return bad


@pytest.mark.parametrize(("layer", "forbidden"), [
    pytest.param("core", ("adapters", "pages", "services", "factors", "store", "runtime", "gateways", "primary",
                          "middleware"), id="core-is-pure"),
    pytest.param("adapters", ("pages", "middleware"), id="adapters-not-pages"),
    pytest.param("pages", ("adapters", "middleware"), id="pages-not-adapters"),
    pytest.param("factors", ("pages", "adapters", "middleware", "runtime"), id="factors-below-pages"),
    pytest.param("services", ("pages", "adapters", "middleware", "runtime"), id="services-take-dependencies"),
    pytest.param("primary", ("pages", "adapters", "middleware", "runtime"), id="primary-below-pages"),
    pytest.param("web", ("pages", "adapters", "middleware", "runtime", "services"), id="web-below-both"),
])
def test_layers_do_not_import_upwards(layer: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(layer, forbidden) == []


def test_the_checker_sees_relative_imports_inside_functions(tmp_path: Path) -> None:
    """The checker itself can fail: a relative import hidden in a function is found."""
    source = PACKAGE / "adapters" / "gate.py"
    found = imported_modules(source)
    assert "mfa_middleware.web.cookies" in found
    assert "mfa_middleware.runtime" in found
