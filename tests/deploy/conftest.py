"""Fixtures of the deployment checks: the repository, the settings every process reads."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest
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
