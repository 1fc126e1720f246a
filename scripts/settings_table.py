"""Print every environment variable of every Bazaar process as Markdown tables (deploy/README.md).

    .venv/bin/python scripts/settings_table.py

Defaults come from the settings classes themselves, never from this machine's environment.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

DEPLOYABLES = ("auth", "catalog", "orders", "gateway")
#: Settings whose value holds a credential though their type is not SecretStr.
SECRET_BY_CONTENT = {"clients"}


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def rows(name: str) -> list[tuple[str, str, bool]]:
    """(variable, default as a Markdown cell, is secret) for every setting of one process."""
    module = importlib.import_module(f"bazaar.{name}.config")
    cls: type[BaseSettings] = getattr(module, f"{name.title()}Settings")
    prefix = str(cls.model_config.get("env_prefix", ""))
    found = []
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        variable = alias if isinstance(alias, str) else f"{prefix}{field}".upper()
        default = info.get_default(call_default_factory=True)
        secret = "SecretStr" in str(info.annotation) or field in SECRET_BY_CONTENT
        text = json.dumps(_plain(default)) if not isinstance(default, str) else default
        cell = f"`{text}`" if len(text) <= 60 else f"long: `bazaar-{name} settings` prints it"
        found.append((variable, cell, secret))
    return found


def main() -> int:
    """Print one table per process."""
    for name in DEPLOYABLES:
        sys.stdout.write(f"\n### {name}\n\n| variable | default | secret |\n| --- | --- | --- |\n")
        for variable, default, secret in rows(name):
            sys.stdout.write(f"| `{variable}` | {default} | {'yes' if secret else ''} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
