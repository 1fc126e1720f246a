"""Every package's image has what its code imports: each third-party import of a `src/` tree
is in the locked dependency closure of that package (what its Dockerfile installs)."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "bazaar-shared": ROOT / "shared",
    "bazaar-auth": ROOT / "services/auth",
    "bazaar-catalog": ROOT / "services/catalog",
    "bazaar-orders": ROOT / "services/orders",
    "bazaar-gateway": ROOT / "gateway",
}
#: Test fixtures ship with the library but run only under its `testing` extra.
EXTRA_ONLY = {"bazaar-shared": ("src/bazaar/shared/testing",)}


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(package: str) -> set[str]:
    """The distributions `uv sync --package <package>` installs (its own extras left out)."""
    lock = {
        entry["name"]: entry for entry in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    }
    seen: set[tuple[str, str]] = set()
    todo = [(package, "")]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        entry = lock.get(name, {})
        deps = (
            entry.get("optional-dependencies", {}).get(extra, [])
            if extra
            else entry.get("dependencies", [])
        )
        for dep in deps:
            todo.append((dep["name"], ""))
            todo.extend((dep["name"], wanted) for wanted in dep.get("extra", []))
    return {name for name, _ in seen}


def _imports(package: str) -> dict[str, str]:
    """Top-level modules imported by the package's code → a file importing each."""
    base = PACKAGES[package]
    found: dict[str, str] = {}
    for path in (base / "src").rglob("*.py"):
        relative = path.relative_to(base).as_posix()
        if relative.startswith(EXTRA_ONLY.get(package, ("//",))):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], relative)
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_third_party_import_is_a_locked_dependency_of_its_package(package: str) -> None:
    closure = _closure(package)
    providers = packages_distributions()
    missing = []
    for module, where in sorted(_imports(package).items()):
        if module in sys.stdlib_module_names or module in {"bazaar", "__future__"}:
            continue
        distributions = {_normalise(d) for d in providers.get(module, [module])}
        if not distributions & closure:
            missing.append(f"{module} ({where}; from {sorted(distributions)})")
    assert not missing, f"{package} imports what its image would not install: {missing}"
