"""deploy/k8s: each overlay renders, and every object is valid for the pinned Kubernetes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

OVERLAYS = ("dev", "prod")
Render = Callable[[str], list[dict[str, Any]]]


def _validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_the_kubernetes_schema(
    rendered: Render, kubernetes_version: str, overlay: str
) -> None:
    problems = []
    for obj in rendered(overlay):
        try:
            _validate(obj, kubernetes_version)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert problems == []


def test_the_schema_check_refuses_a_misspelt_field_and_a_wrong_type(
    rendered: Render, kubernetes_version: str
) -> None:
    deployment = next(o for o in rendered("prod") if o["kind"] == "Deployment")
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            _validate(broken, kubernetes_version)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_has_the_whole_suite_in_its_own_namespace(
    rendered: Render, overlay: str
) -> None:
    objects = rendered(overlay)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for name in ("auth", "catalog", "orders", "gateway"):
        assert {("Deployment", name), ("Service", name), ("HorizontalPodAutoscaler", name)} <= kinds
        assert ("PodDisruptionBudget", name) in kinds
        assert ("NetworkPolicy", name) in kinds
        assert any(k == "ConfigMap" and n.startswith(f"{name}-") for k, n in kinds)
    for name in ("auth", "catalog", "orders"):
        assert ("Job", f"{name}-migrate") in kinds
    assert {("Ingress", "gateway"), ("StatefulSet", "redis"), ("Service", "redis")} <= kinds
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    name = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace") == name for o in objects if o is not namespace)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_is_committed_only_references_to_secrets(
    rendered: Render, overlay: str
) -> None:
    objects = rendered(overlay)
    assert [o for o in objects if o["kind"] == "Secret"] == []
    for obj in objects:
        for container in _containers(obj):
            for variable in container.get("env", []):
                assert "value" not in variable, f"{variable['name']} is set in plain text"
                assert variable["valueFrom"]["secretKeyRef"]["name"].endswith("-secrets")


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    template = obj.get("spec", {}).get("template", {})
    containers: list[dict[str, Any]] = template.get("spec", {}).get("containers", [])
    return containers
