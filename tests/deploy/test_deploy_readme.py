"""deploy/README.md documents every environment variable a Bazaar process reads."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings


def test_every_setting_of_every_process_is_in_the_deployment_guide(
    repo_root: Path, settings_classes: dict[str, type[BaseSettings]]
) -> None:
    guide = (repo_root / "deploy" / "README.md").read_text()
    missing = []
    for prefix, cls in settings_classes.items():
        for field, info in cls.model_fields.items():
            alias = info.validation_alias
            variable = alias if isinstance(alias, str) else f"{prefix}{field.upper()}"
            if f"`{variable}`" not in guide:
                missing.append(variable)
    # `.venv/bin/python scripts/settings_table.py` prints the tables to paste.
    assert missing == []


def test_every_secret_key_the_manifests_read_is_explained(repo_root: Path) -> None:
    guide = (repo_root / "deploy" / "README.md").read_text()
    base = repo_root / "deploy" / "k8s" / "base"
    keys = {
        line.split("key:")[1].strip()
        for path in base.glob("*/deployment.yaml")
        for line in path.read_text().splitlines()
        if line.strip().startswith("key:")
    }
    assert keys  # the manifests do read secrets
    assert [k for k in sorted(keys) if f"`{k}`" not in guide] == []
