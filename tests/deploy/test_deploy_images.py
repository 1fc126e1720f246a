"""`make images` and `make images-test` (scripts/images*.py, deploy/images/), checked statically.

The targets themselves need podman and minutes (they are not part of `make test`); these
check what they rely on: podman's settings, the names the images get, the base images a
stand-in can be made for, and that the containers run as the manifests run the pods, with a
configuration production accepts.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
CONFIG = REPO / "deploy" / "images"

sys.path.insert(0, str(SCRIPTS))
try:
    from images_journey import RESERVED_PORTS, Run, settings
    from images_manifest import Deployable, deployables, policy
    from images_podman import qualified
    from images_standin import bases, can_stand_in
finally:
    sys.path.remove(str(SCRIPTS))

PREFIXES = {"auth": "AUTH_", "catalog": "CATALOG_", "orders": "ORDERS_", "gateway": "GATEWAY_"}


def _ulimit(entry: str) -> tuple[str, int, int]:
    name, _, limits = entry.partition("=")
    soft, _, hard = limits.partition(":")
    return name, int(soft), int(hard)


def test_podman_gets_the_settings_that_make_containers_start_on_these_machines() -> None:
    conf = tomllib.loads((CONFIG / "containers.conf").read_text())
    assert conf["engine"]["cgroup_manager"] == "cgroupfs"  # no systemd here
    assert conf["engine"]["runtime"] == "runc"  # Debian's runc, never crun
    assert conf["engine"]["events_logger"] == "file"  # no journal either
    limits = {
        name: (soft, hard)
        for name, soft, hard in map(_ulimit, conf["containers"]["default_ulimits"])
    }
    host = {
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[1],
    }
    assert set(limits) == set(host)
    for name, (soft, hard) in limits.items():
        # runc refuses to start a container asking for more than the host's hard limit.
        ceiling = host[name] if host[name] != resource.RLIM_INFINITY else hard
        assert 0 < soft <= hard <= ceiling, name


def test_short_image_names_are_read_as_docker_reads_them() -> None:
    registries = tomllib.loads((CONFIG / "registries.conf").read_text())
    assert registries["unqualified-search-registries"] == ["docker.io"]
    assert qualified("python:3.11-slim-bookworm") == "docker.io/library/python:3.11-slim-bookworm"
    assert qualified("bazaar/auth:0.1.0") == "docker.io/bazaar/auth:0.1.0"
    assert qualified("ghcr.io/astral-sh/uv:0.13.9") == "ghcr.io/astral-sh/uv:0.13.9"
    assert qualified("localhost:5000/bazaar/auth:1") == "localhost:5000/bazaar/auth:1"


def test_uv_in_the_build_is_told_to_trust_the_machines_certificates() -> None:
    assert tomllib.loads((CONFIG / "uv.toml").read_text()) == {"system-certs": True}


def _compose_images() -> set[str]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return {
        s["image"] for s in compose["services"].values() if s.get("image", "").startswith("bazaar/")
    }


def _manifest_images() -> set[str]:
    found = set()
    for path in (REPO / "deploy" / "k8s" / "base").glob("*/*.yaml"):
        found |= set(re.findall(r"image: (bazaar/\S+)", path.read_text()))
    return found


def _overlay_images(overlay: str) -> set[str]:
    path = REPO / "deploy" / "k8s" / "overlays" / overlay / "kustomization.yaml"
    return {f"{i['name']}:{i['newTag']}" for i in yaml.safe_load(path.read_text())["images"]}


def test_the_images_get_the_names_the_manifests_the_overlays_and_compose_use() -> None:
    images = deployables()
    built = {image.image for image in images}
    assert {image.name for image in images} == set(PREFIXES)
    assert built == _manifest_images()
    assert built == _compose_images()
    assert built == _overlay_images("dev") == _overlay_images("prod")
    for image in images:
        assert image.dockerfile.exists() and image.ignorefile.exists()
        # The tag is the version the package reports (/version, logs, the image's label).
        version = tomllib.loads((image.directory / "pyproject.toml").read_text())["project"]
        assert image.image.endswith(f":{version['version']}"), image.image


def test_a_stand_in_can_be_made_for_every_base_image_the_dockerfiles_name() -> None:
    found = bases(deployables())
    assert sorted(found) == [
        "docker.io/library/python:3.11-slim-bookworm",  # the ARG PYTHON_IMAGE default
        "ghcr.io/astral-sh/uv:0.13.9",
    ]
    assert all(can_stand_in(reference) for reference in found)
    assert not can_stand_in("docker.io/library/postgres:16.4-alpine")


def test_the_stand_ins_have_what_the_official_images_have_where_the_dockerfiles_look() -> None:
    python = (CONFIG / "python.Containerfile").read_text()
    assert "PATH=/usr/local/bin:" in python and "LANG=C.UTF-8" in python
    assert "PYTHON_VERSION=${PYTHON_VERSION}" in python
    for name in ("python3", "python"):  # what uv finds on PATH, what HEALTHCHECK runs
        assert re.search(rf"ln -s \S+ /usr/local/bin/{name}\b", python), name
    assert python.rstrip().endswith('CMD ["python3"]')
    uv = (CONFIG / "uv.Containerfile").read_text()
    assert "FROM scratch" in uv and "COPY uv uvx /" in uv and 'ENTRYPOINT ["/uv"]' in uv


def _pod_spec(path: Path) -> dict[str, Any]:
    for document in yaml.safe_load_all(path.read_text()):
        if document and document["kind"] in ("Deployment", "Job"):
            spec: dict[str, Any] = document["spec"]["template"]["spec"]
            return spec
    raise AssertionError(path)


CONTAINERS = [(d, False) for d in deployables()] + [
    (d, True) for d in deployables() if d.has_migrations
]


@pytest.mark.parametrize(
    ("image", "job"),
    CONTAINERS,
    ids=[f"{d.name}-{'migration' if job else 'server'}" for d, job in CONTAINERS],
)
def test_the_containers_run_as_the_manifests_run_the_pods(image: Deployable, job: bool) -> None:
    path = REPO / "deploy" / "k8s" / "base" / image.name
    pod = _pod_spec(path / ("migrate-job.yaml" if job else "deployment.yaml"))
    args = policy(image.name, job=job).podman_args()
    user = pod["securityContext"]["runAsUser"]
    assert args[args.index("--user") + 1] == f"{user}:{pod['securityContext']['runAsGroup']}"
    assert user != 0
    # Read-only, with exactly the manifests' emptyDir mounts writable (podman adds none).
    assert "--read-only" in args and "--read-only-tmpfs=false" in args
    tmpfs = [args[n + 1].split(":")[0] for n, a in enumerate(args) if a == "--tmpfs"]
    container = pod["containers"][0]
    assert tmpfs == [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert "size=67108864" in args[args.index("--tmpfs") + 1]  # sizeLimit: 64Mi
    assert "--cap-drop=ALL" in args
    assert args[args.index("--security-opt") + 1] == "no-new-privileges"
    memory = container["resources"]["limits"]["memory"]
    assert args[args.index("--memory") + 1] == str(int(memory.removesuffix("Mi")) * 2**20)
    grace = policy(image.name, job=job).grace_seconds
    assert grace == pod["terminationGracePeriodSeconds"]


def test_the_containers_configuration_is_one_production_accepts(
    monkeypatch: pytest.MonkeyPatch,
    settings_classes: dict[str, type[BaseSettings]],
    unknown_variables: Callable[[list[str]], list[str]],
) -> None:
    run = Run()
    try:
        run.secrets.update(
            {
                "amqp": f"amqp://bazaar-images-{run.id}:0123abcd@127.0.0.1:5672/bazaar-images",
                "redis": "redis://127.0.0.1:6379/0",
                "key-passphrase": "k" * 48,
                "admin-password": "a" * 48,
                "client-secret": "c" * 48,
            }
        )
        for name in ("auth", "catalog", "orders"):
            role = f"bazaar_images_{run.id}_{name}"
            run.secrets[f"{name}-database"] = f"postgresql://{role}:0123abcd@127.0.0.1:5432/{role}"
        files = settings(run)
        assert set(files) == set(PREFIXES)
        for name, file in files.items():
            assert Path(file).stat().st_mode & 0o077 == 0  # secrets: the owner's alone
            values = dict(line.split("=", 1) for line in Path(file).read_text().splitlines())
            assert unknown_variables(list(values)) == []
            with monkeypatch.context() as env:
                for key in list(os.environ):
                    if key.startswith(PREFIXES[name]):
                        env.delenv(key)
                for key, value in values.items():
                    env.setenv(key, value)
                # As the image sets it: production refuses development values.
                env.setenv(f"{PREFIXES[name]}ENVIRONMENT", "production")
                loaded = settings_classes[PREFIXES[name]](_env_file=None)
            effective = loaded.model_dump()
            assert effective["host"] == "127.0.0.1"  # host network: the loopback only
            assert effective["port"] == run.ports[name]
            assert run.ports[name] not in RESERVED_PORTS
    finally:
        shutil.rmtree(run.env_dir)
