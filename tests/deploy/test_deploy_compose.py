"""docker-compose.yml: valid under the Compose Specification and wired like `make up`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings

from bazaar.gateway.config import DEFAULT_UPSTREAMS

SUITE = ("auth", "catalog", "orders")
INFRASTRUCTURE = ("postgres", "rabbitmq", "redis", "otel-collector", "jaeger")
MONITORING = ("prometheus", "alertmanager", "grafana")
#: The operator consoles: published on the host's loopback only.
CONSOLES = ("jaeger", "rabbitmq", *MONITORING)
#: Where `make up` runs each process (their settings' default ports).
PORTS = {"gateway": 8000, "auth": 8001, "catalog": 8002, "orders": 8003}


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
    expected = {
        *INFRASTRUCTURE,
        *MONITORING,
        *SUITE,
        *(f"{s}-migrate" for s in SUITE),
        "gateway",
    }
    assert expected <= names


@pytest.mark.parametrize("name", SUITE)
def test_each_service_starts_after_every_migration_job_succeeded_and_the_broker_is_healthy(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    job = compose["services"][f"{name}-migrate"]
    # Every job declares its own consumers' queues: a service publishing to them starts
    # only after all of them succeeded.
    for other in SUITE:
        assert service["depends_on"][f"{other}-migrate"] == {
            "condition": "service_completed_successfully"
        }
    assert service["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert job["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert job["restart"] == "no"
    assert "migrate" in " ".join(job["command"])
    # The broker's queues and bindings are declared before the service (or any other) starts.
    assert f"bazaar-{name} topology" in " ".join(job["command"])
    assert job["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert (
        job["environment"][f"{name.upper()}_AMQP_URL"]
        == (service["environment"][f"{name.upper()}_AMQP_URL"])
    )
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
    assert published == {"gateway", *CONSOLES}
    # The consoles listen on the loopback of the host only; the gateway is the one door.
    for name in CONSOLES:
        assert all(p.startswith("127.0.0.1:") for p in compose["services"][name]["ports"]), name


def test_no_two_services_publish_the_same_host_port(compose: dict[str, Any]) -> None:
    taken: dict[str, str] = {}
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            host = mapping.rsplit(":", 1)[0]  # [address:]host-port
            host = host if ":" in host else f"0.0.0.0:{host}"
            port = host.rsplit(":", 1)[1]
            clash = [other for key, other in taken.items() if key.rsplit(":", 1)[1] == port]
            assert not clash, f"{name} and {clash[0]} both publish port {port}"
            taken[host] = name


def test_every_image_is_pinned_and_every_build_has_its_dockerfile(
    compose: dict[str, Any], repo_root: Path
) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name
        if "build" in service:
            assert (repo_root / service["build"]["dockerfile"]).is_file(), name
            assert service["build"]["context"] == "."


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts from the repository: container path -> repository path."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source.removeprefix("./")
    return mounts


def test_every_mounted_file_or_folder_exists(compose: dict[str, Any], repo_root: Path) -> None:
    for service in compose["services"].values():
        for target, source in _mounts(service).items():
            path = repo_root / source
            # A folder is mounted where the target says so (no suffix); a file otherwise.
            if Path(target).suffix:
                assert path.is_file(), source
            else:
                assert path.is_dir() and any(path.iterdir()), f"{source}: no such folder or empty"


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


# --- monitoring: Prometheus, Alertmanager, Grafana (deploy/monitoring/) ---------------------


def _container_port(service: dict[str, Any]) -> int:
    """The port a suite process listens on in its container (its healthcheck asks it)."""
    found = re.search(r"127\.0\.0\.1:(\d+)/", " ".join(service["healthcheck"]["test"]))
    assert found is not None
    return int(found.group(1))


def _targets(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }


def _mounted_config(compose: dict[str, Any], repo_root: Path, name: str, target: str) -> Any:
    source = _mounts(compose["services"][name])[target]
    return yaml.safe_load((repo_root / source).read_text())


def test_compose_prometheus_scrapes_every_process_by_name_and_loads_the_mounted_rules(
    compose: dict[str, Any], repo_root: Path
) -> None:
    prometheus = compose["services"]["prometheus"]
    config_file = next(a.split("=", 1)[1] for a in prometheus["command"] if "config.file" in a)
    config = _mounted_config(compose, repo_root, "prometheus", config_file)
    targets = _targets(config)
    for name in PORTS:
        assert targets[name] == [f"{name}:{_container_port(compose['services'][name])}"], name
    # Rule paths are relative to the configuration file; each must match mounted rule files.
    mounts = _mounts(prometheus)
    for pattern in config["rule_files"]:
        resolved = PurePosixPath(config_file).parent / pattern
        folder = str(resolved.parent)
        assert folder in mounts, f"{resolved}: its folder is not mounted"
        matched = list((repo_root / mounts[folder]).glob(resolved.name))
        assert matched, f"{pattern} matches no file in {mounts[folder]}"
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    (address,) = _targets({"scrape_configs": [{"job_name": "", **alertmanagers}]})[""]
    host, port = address.split(":")
    assert compose["services"][host]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_compose_alertmanager_routes_everything_to_a_declared_receiver(
    compose: dict[str, Any], repo_root: Path
) -> None:
    command = compose["services"]["alertmanager"]["command"]
    config_file = next(a.split("=", 1)[1] for a in command if "config.file" in a)
    config = _mounted_config(compose, repo_root, "alertmanager", config_file)
    declared = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(route.get("receiver", config["route"]["receiver"]) in declared for route in routes)


def test_compose_grafana_provisions_the_prometheus_datasource_and_the_generated_dashboards(
    compose: dict[str, Any], repo_root: Path
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = repo_root / mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert (source["type"], source["uid"], source["url"]) == (
        "prometheus",
        "prometheus",
        f"http://prometheus:{port}",
    )
    (provider,) = yaml.safe_load((provisioning / "dashboards/bazaar.yml").read_text())["providers"]
    folder = mounts[provider["options"]["path"]]
    assert folder == "deploy/monitoring/dashboards"
    assert sorted(p.name for p in (repo_root / folder).glob("*.json")) == sorted(
        f"{name}.json" for name in ("overview", "orders", "messaging", "gateway")
    )
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (repo_root / folder / PurePosixPath(home).name).is_file()


def test_make_ups_prometheus_scrapes_the_same_jobs_on_the_loopback_at_make_ups_ports(
    repo_root: Path, settings_classes: dict[str, type[BaseSettings]]
) -> None:
    folder = repo_root / "deploy/monitoring/prometheus"
    local = yaml.safe_load((folder / "prometheus-local.yml").read_text())
    composed = yaml.safe_load((folder / "prometheus.yml").read_text())
    assert set(_targets(local)) == set(_targets(composed))
    assert local["rule_files"] == composed["rule_files"]
    for prefix, settings in settings_classes.items():
        name = prefix.removesuffix("_").lower()
        assert settings.model_fields["port"].default == PORTS[name]
        assert _targets(local)[name] == [f"127.0.0.1:{PORTS[name]}"]


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-local.yml"])
def test_each_prometheus_configuration_passes_promtool_with_its_rules(
    repo_root: Path, name: str
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (Debian's prometheus package; make test installs it)")
    done = subprocess.run(
        [promtool, "check", "config", name],
        cwd=repo_root / "deploy/monitoring/prometheus",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
