"""Policies over the rendered manifests: what a reviewer of any Bazaar deployment checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bazaar.shared.cli import GRACEFUL_SHUTDOWN_SECONDS
from bazaar.shared.db import CLOSE_TIMEOUT_SECONDS

OVERLAYS = ("dev", "prod")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
Render = Callable[[str], list[dict[str, Any]]]
#: Who may open a connection to whom inside the namespace (NetworkPolicy ingress rules).
CALLERS = {
    "auth": {"gateway", "catalog", "orders"},
    "catalog": {"gateway", "orders"},
    "orders": {"gateway"},
    "redis": {"gateway"},
    "gateway": set(),
}


#: The FastAPI services (served by `bazaar.shared.cli.serve`, a database pool each).
SERVICES = ("auth", "catalog", "orders")


def _of(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = obj["spec"]["template"]["spec"]
    return pod


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are understood here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_non_root_read_only_without_escalation_or_capabilities(
    rendered: Render, overlay: str
) -> None:
    for obj in _of(rendered(overlay), *WORKLOADS):
        pod = _pod(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(
    rendered: Render, overlay: str
) -> None:
    for obj in _of(rendered(overlay), *WORKLOADS):
        for container in _pod(obj)["containers"]:
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_has_a_fixed_tag_never_latest(rendered: Render, overlay: str) -> None:
    for obj in _of(rendered(overlay), *WORKLOADS):
        for container in _pod(obj)["containers"]:
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag and tag not in ("", "latest"), image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_probes_readyz_for_readiness_and_healthz_for_liveness(
    rendered: Render, overlay: str
) -> None:
    for obj in _of(rendered(overlay), "Deployment"):
        (container,) = _pod(obj)["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        ports = {p["name"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["port"] in ports
        assert _pod(obj)["topologySpreadConstraints"], obj["metadata"]["name"]
    for obj in _of(rendered(overlay), "StatefulSet"):
        for container in _pod(obj)["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container


def test_prod_runs_several_replicas_each_covered_by_a_pdb_and_an_hpa(rendered: Render) -> None:
    objects = rendered("prod")
    budgets = _of(objects, "PodDisruptionBudget")
    scalers = _of(objects, "HorizontalPodAutoscaler")
    deployments = _of(objects, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"auth", "catalog", "orders", "gateway"}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        assert deployment["spec"]["replicas"] >= 2, name
        assert any(_selects(b["spec"]["selector"], _pod_labels(deployment)) for b in budgets), name
        (hpa,) = [
            h
            for h in scalers
            if h["spec"]["scaleTargetRef"]
            == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        ]
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"], name
    for budget in budgets:
        # A budget that allows no disruption would block every node drain.
        assert budget["spec"].get("maxUnavailable", 1) >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_selected_by_a_network_policy_and_ingress_is_denied_by_default(
    rendered: Render, overlay: str
) -> None:
    objects = rendered(overlay)
    policies = _of(objects, "NetworkPolicy")
    defaults = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert any(
        "ingress" not in p["spec"] and p["spec"]["policyTypes"] == ["Ingress"] for p in defaults
    )
    for obj in _of(objects, *WORKLOADS):
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], _pod_labels(obj))
        ]
        assert own or obj["kind"] == "Job", f"{obj['metadata']['name']} has no policy of its own"


def _callers(policies: list[dict[str, Any]], labels: dict[str, str]) -> tuple[set[str], list[Any]]:
    """Who may call pods with these labels: pods of the namespace by name, and outside peers."""
    inside: set[str] = set()
    outside: list[Any] = []
    for policy in policies:
        if not _selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']} lets anyone in"
            for peer in rule["from"]:
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    outside.append(peer)
                else:
                    inside.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    return inside, outside


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside_and_each_service_only_from_its_callers(
    rendered: Render, overlay: str
) -> None:
    objects = rendered(overlay)
    policies = _of(objects, "NetworkPolicy")
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    ingress_controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }
    for obj in _of(objects, "Deployment", "StatefulSet"):
        name = obj["metadata"]["name"]
        inside, outside = _callers(policies, _pod_labels(obj))
        assert inside == CALLERS[name], name
        expected_outside = [ingress_controller] if name == "gateway" else []
        # Prometheus may scrape the API pods; nothing else from outside reaches them.
        assert [p for p in outside if p != prometheus] == expected_outside, name
    (ingress,) = _of(objects, "Ingress")
    backends = {
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"gateway"}
    assert all(s["spec"]["type"] == "ClusterIP" for s in _of(objects, "Service"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_selects_pods_that_serve_its_target_port(
    rendered: Render, overlay: str
) -> None:
    objects = rendered(overlay)
    workloads = _of(objects, "Deployment", "StatefulSet")
    for service in _of(objects, "Service"):
        (target,) = [
            w
            for w in workloads
            if _selects({"matchLabels": service["spec"]["selector"]}, _pod_labels(w))
        ]
        names = {p["name"] for c in _pod(target)["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configuration_names_only_settings_that_exist_and_agrees_across_processes(
    rendered: Render, overlay: str, unknown_variables: Callable[[list[str]], list[str]]
) -> None:
    objects = rendered(overlay)
    config = {k: v for m in _of(objects, "ConfigMap") for k, v in m["data"].items()}
    secret_names = [
        variable["name"]
        for obj in _of(objects, *WORKLOADS)
        for c in _pod(obj)["containers"]
        for variable in c.get("env", [])
    ]
    assert unknown_variables([*config, *secret_names]) == []
    # One issuer for all: a token auth signs must verify at the gateway and in every service.
    issuers = {v for k, v in config.items() if k.endswith("_JWT_ISSUER")}
    assert len(issuers) == 1
    assert {k.split("_")[0] for k in config if k.endswith("_JWT_ISSUER")} == {
        "AUTH", "CATALOG", "ORDERS", "GATEWAY"
    }  # fmt: skip
    services = {
        s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in _of(objects, "Service")
    }
    for name, upstream in json.loads(config["GATEWAY_UPSTREAMS"]).items():
        assert upstream["url"] == f"http://{name}:{services[name]}"
    assert config["GATEWAY_REDIS_URL"] == f"redis://redis:{services['redis']}/0"
    assert config["ORDERS_CATALOG_URL"] == f"http://catalog:{services['catalog']}"
    expected = "production" if overlay == "prod" else "development"
    assert {v for k, v in config.items() if k.endswith("_ENVIRONMENT")} == {expected}


def test_migrations_run_as_jobs_with_the_service_image_and_its_settings(rendered: Render) -> None:
    objects = rendered("prod")
    for name in ("auth", "catalog", "orders"):
        (job,) = [j for j in _of(objects, "Job") if j["metadata"]["name"] == f"{name}-migrate"]
        (deployment,) = [d for d in _of(objects, "Deployment") if d["metadata"]["name"] == name]
        (migrate,) = _pod(job)["containers"]
        (serve,) = _pod(deployment)["containers"]
        assert migrate["command"] == [f"bazaar-{name}", "migrate"]
        # The broker's queues and bindings are a deploy step too, before any new pod serves.
        (topology,) = _pod(job)["initContainers"]
        assert topology["command"] == [f"bazaar-{name}", "topology"]
        for step in (migrate, topology):
            assert step["image"] == serve["image"]
            # Production settings refuse to load without every secret, migrations included.
            assert step["env"] == serve["env"] and step["envFrom"] == serve["envFrom"]
            assert step["securityContext"] == serve["securityContext"]
            assert step["resources"] == migrate["resources"]
        assert _pod(job)["restartPolicy"] == "Never"


def test_without_argo_cd_the_deployments_are_applied_only_after_every_migration_job(
    rendered: Callable[[str], list[dict[str, Any]]], repo_root: Path
) -> None:
    # Every service publishes to the others' queues: no pod before all Jobs ran `topology`.
    label = "bazaar/starts-after"
    for overlay in ("dev", "prod"):
        for obj in rendered(overlay):
            labelled = obj["metadata"].get("labels", {}).get(label) == "migrations"
            assert labelled == (obj["kind"] == "Deployment"), (obj["kind"], obj["metadata"])
    guide = (repo_root / "deploy" / "README.md").read_text()
    first = guide.index(f"kubectl apply -k deploy/k8s/overlays/prod -l '{label}!=migrations'")
    wait = guide.index("wait --for=condition=complete job/auth-migrate job/catalog-migrate")
    rest = guide.index("kubectl apply -k deploy/k8s/overlays/prod ", wait)
    assert first < wait < rest


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_service_pod_is_given_the_time_its_shutdown_can_take(
    rendered: Render, overlay: str
) -> None:
    # preStop, then SIGTERM: requests in flight get their grace, then the lifespan closes
    # the resources, the database pool within its bound; Kubernetes must not SIGKILL first.
    deployments = {o["metadata"]["name"]: o for o in _of(rendered(overlay), "Deployment")}
    for name in SERVICES:
        pod = _pod(deployments[name])
        [container] = [c for c in pod["containers"] if c["name"] == name]
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        needed = pre_stop + GRACEFUL_SHUTDOWN_SECONDS + CLOSE_TIMEOUT_SECONDS
        assert pod["terminationGracePeriodSeconds"] > needed, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_every_process_where_its_pods_say_through_a_service_monitor(
    rendered: Render, overlay: str
) -> None:
    objects = rendered(overlay)
    services = _of(objects, "Service")
    monitors = _of(objects, "ServiceMonitor")
    scraped: set[str] = set()
    for monitor in monitors:
        # The job label is the Service's name: the rules and dashboards select on it.
        (service,) = [
            s for s in services if _selects(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        (endpoint,) = monitor["spec"]["endpoints"]
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        (deployment,) = [
            d
            for d in _of(objects, "Deployment")
            if _selects({"matchLabels": service["spec"]["selector"]}, _pod_labels(d))
        ]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"
        assert str(port["port"]) == annotations["prometheus.io/port"]
        assert monitor.get("metadata", {}).get("namespace") == service["metadata"]["namespace"]
        scraped.add(service["metadata"]["name"])
    assert scraped == {"auth", "catalog", "orders", "gateway"}
