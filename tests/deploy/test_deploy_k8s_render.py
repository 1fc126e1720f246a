"""deploy/k8s: each overlay renders, and every object is valid for the pinned Kubernetes
(custom resources: for the vendored CRDs of tests/deploy/schemas)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

OVERLAYS = ("dev", "prod")
Render = Callable[[str], list[dict[str, Any]]]
Problems = Callable[[dict[str, Any]], list[str]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_the_kubernetes_schema(
    rendered: Render, manifest_problems: Problems, overlay: str
) -> None:
    problems = [
        f"{obj['kind']}/{obj['metadata']['name']}: {problem}"
        for obj in rendered(overlay)
        for problem in manifest_problems(obj)
    ]
    assert problems == []


def test_the_schema_check_refuses_a_misspelt_field_and_a_wrong_type(
    rendered: Render, manifest_problems: Problems
) -> None:
    deployment = next(o for o in rendered("prod") if o["kind"] == "Deployment")
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    for broken in (misspelt, wrong_type):
        assert manifest_problems(broken)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_has_a_service_monitor_per_process_and_the_rules(
    rendered: Render, overlay: str
) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered(overlay)}
    for name in ("auth", "catalog", "orders", "gateway"):
        assert ("ServiceMonitor", name) in kinds
    assert {("PrometheusRule", "bazaar-slo"), ("PrometheusRule", "bazaar-causes")} <= kinds


def test_custom_resources_are_checked_against_their_crd_schema(
    rendered: Render, manifest_problems: Problems
) -> None:
    # Neither kubernetes-validate nor a skip: the vendored prometheus-operator CRDs.
    objects = rendered("prod")
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    assert manifest_problems(monitor) == [] and manifest_problems(rule) == []
    misspelt = copy.deepcopy(monitor)
    misspelt["spec"]["endpoints"][0]["scrapeInterval"] = "15s"  # it is `interval`
    wrong_type = copy.deepcopy(monitor)
    wrong_type["spec"]["endpoints"][0]["port"] = 8000  # a port *name*
    bad_duration = copy.deepcopy(rule)
    bad_duration["spec"]["groups"][0]["rules"][0]["for"] = "2 minutes"
    same_group = copy.deepcopy(rule)
    same_group["spec"]["groups"].append(same_group["spec"]["groups"][0])
    bad_label = copy.deepcopy(rule)
    bad_label["metadata"]["labels"]["tier"] = 1  # label values are strings
    unknown = copy.deepcopy(monitor)
    unknown["kind"] = "PodMonitor"  # no vendored CRD: refused, not skipped
    for broken in (misspelt, wrong_type, bad_duration, same_group, bad_label, unknown):
        assert manifest_problems(broken), broken


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
