"""docker-compose.yml: valid under the Compose Specification and wired like `make up`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bazaar.gateway.config import DEFAULT_UPSTREAMS

SUITE = ("auth", "catalog", "orders")
INFRASTRUCTURE = ("postgres", "rabbitmq", "redis", "otel-collector", "jaeger")


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    loaded: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def schema(repo_root: Path) -> dict[str, Any]:
    """The vendored Compose Specification schema."""
    path = repo_root / "tests" / "deploy" / "schemas" / "compose-spec.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    jsonschema.Draft201909Validator.check_schema(loaded)
    return loaded


def _errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_validates_against_the_compose_specification(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert _errors(schema, compose) == []


def test_the_schema_check_catches_a_misspelt_key_and_a_bad_condition(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["gateway"]["depends_on"]["auth"]["condition"] = "service_happy"
    assert len(_errors(schema, broken)) == 2


def test_the_compose_suite_has_the_infrastructure_jobs_services_and_gateway(
    compose: dict[str, Any],
) -> None:
    names = set(compose["services"])
    expected = {*INFRASTRUCTURE, *SUITE, *(f"{s}-migrate" for s in SUITE), "gateway"}
    assert expected <= names


@pytest.mark.parametrize("name", SUITE)
def test_each_service_starts_after_its_migration_job_succeeded_and_the_broker_is_healthy(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    job = compose["services"][f"{name}-migrate"]
    assert service["depends_on"][f"{name}-migrate"] == {
        "condition": "service_completed_successfully"
    }
    assert service["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert job["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert job["restart"] == "no"
    assert "migrate" in " ".join(job["command"])
    assert service["environment"][f"{name.upper()}_AMQP_URL"].startswith("amqp://")
    assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert "/readyz" in " ".join(service["healthcheck"]["test"])


def test_the_gateway_waits_for_every_service_to_be_ready_and_reaches_each_by_name(
    compose: dict[str, Any],
) -> None:
    gateway = compose["services"]["gateway"]
    for name in (*SUITE, "redis"):
        assert gateway["depends_on"][name] == {"condition": "service_healthy"}
    upstreams = json.loads(gateway["environment"]["GATEWAY_UPSTREAMS"])
    assert set(upstreams) == set(DEFAULT_UPSTREAMS)
    for name, upstream in upstreams.items():
        port = compose["services"][name]["healthcheck"]["test"][-1].split(":")[2][:4]
        assert upstream["url"] == f"http://{name}:{port}"
    assert gateway["environment"]["GATEWAY_REDIS_URL"] == "redis://redis:6379/0"


def test_only_the_gateway_and_the_operator_consoles_publish_ports(
    compose: dict[str, Any],
) -> None:
    published = {name for name, s in compose["services"].items() if s.get("ports")}
    assert published == {"gateway", "jaeger", "rabbitmq"}
    # The consoles listen on the loopback of the host only; the gateway is the one door.
    assert all(p.startswith("127.0.0.1:") for p in compose["services"]["jaeger"]["ports"])
    assert all(p.startswith("127.0.0.1:") for p in compose["services"]["rabbitmq"]["ports"])


def test_every_image_is_pinned_and_every_build_has_its_dockerfile(
    compose: dict[str, Any], repo_root: Path
) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name
        if "build" in service:
            assert (repo_root / service["build"]["dockerfile"]).is_file(), name
            assert service["build"]["context"] == "."


def test_every_mounted_file_exists(compose: dict[str, Any], repo_root: Path) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (repo_root / source).is_file(), source


def test_the_traces_pipeline_ends_in_jaeger(repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / "deploy/compose/otel-collector.yaml").read_text())
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    (exporter,) = pipeline["exporters"]
    assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"


def test_every_bazaar_variable_in_the_compose_file_is_one_a_process_reads(
    compose: dict[str, Any], unknown_variables: Callable[[list[str]], list[str]]
) -> None:
    names = [
        variable
        for service in compose["services"].values()
        if str(service["image"]).startswith("bazaar/")
        for variable in service.get("environment", {})
    ]
    assert unknown_variables(names) == []
    assert unknown_variables(["CATALOG_DATABSE_URL"]) == ["CATALOG_DATABSE_URL"]
