"""What the Kubernetes base says about each image: its name, and how its containers run.

`make images` tags each image with the name the base's Deployment gives it, and `make
images-test` runs each container as the base runs it (user, read-only root filesystem with
the same writable emptyDir mounts, dropped capabilities, no privilege escalation, memory and
CPU limits, grace period): read from deploy/k8s/base, never copied, so the two cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from images_podman import ROOT, ImagesError

BASE = ROOT / "deploy" / "k8s" / "base"
#: The repository's images: `bazaar/<name>:<tag>` in the manifests.
_OURS = re.compile(r"^bazaar/(?P<name>[a-z0-9-]+):(?P<tag>[\w.-]+)$")


@dataclass(frozen=True)
class Deployable:
    """One image of the repository: where its Dockerfile is and what the manifests call it."""

    name: str
    directory: Path
    image: str

    @property
    def dockerfile(self) -> Path:
        """Its Dockerfile (the build context is the repository root)."""
        return self.directory / "Dockerfile"

    @property
    def ignorefile(self) -> Path:
        """The Dockerfile's own .dockerignore (BuildKit's `<Dockerfile>.dockerignore`)."""
        return self.directory / "Dockerfile.dockerignore"

    @property
    def has_migrations(self) -> bool:
        """Whether it is a service with a database (a migration Job in the manifests)."""
        return (BASE / self.name / "migrate-job.yaml").exists()


@dataclass(frozen=True)
class Mount:
    """A writable emptyDir the container gets (a tmpfs under podman)."""

    path: str
    size: str | None


@dataclass(frozen=True)
class ContainerPolicy:
    """How the manifests run one container, as far as podman can run it the same way."""

    user: int
    group: int
    read_only: bool
    no_new_privileges: bool
    drop: tuple[str, ...]
    mounts: tuple[Mount, ...]
    memory: str | None
    cpus: str | None
    grace_seconds: int

    def podman_args(self) -> list[str]:
        """`podman run` options for this policy."""
        args = ["--user", f"{self.user}:{self.group}"]
        if self.read_only:
            # podman's --read-only adds writable /tmp, /run, /var/tmp of its own: only the
            # manifests' mounts are writable here.
            args += ["--read-only", "--read-only-tmpfs=false"]
        for mount in self.mounts:
            size = f",size={_bytes(mount.size)}" if mount.size else ""
            args += ["--tmpfs", f"{mount.path}:rw,nosuid,nodev,mode=1777{size}"]
        args += [f"--cap-drop={cap}" for cap in self.drop]
        if self.no_new_privileges:
            args += ["--security-opt", "no-new-privileges"]
        if self.memory:
            args += ["--memory", str(_bytes(self.memory))]
        if self.cpus:
            args += ["--cpus", _cpus(self.cpus)]
        return args


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _pod(path: Path, kind: str) -> dict[str, Any]:
    for document in _documents(path):
        if document.get("kind") == kind:
            spec: dict[str, Any] = document["spec"]["template"]["spec"]
            return spec
    raise ImagesError(f"no {kind} in {path.relative_to(ROOT)}")


def deployables() -> list[Deployable]:
    """Every image of the repository, from the base's Deployments, with its Dockerfile."""
    found: list[Deployable] = []
    for path in sorted(BASE.glob("*/deployment.yaml")):
        for container in _pod(path, "Deployment")["containers"]:
            match = _OURS.match(str(container["image"]))
            if match is None:
                continue  # Redis and the like: not built here
            name = match["name"]
            directory = next(
                (d for d in (ROOT / "services" / name, ROOT / name) if (d / "Dockerfile").exists()),
                None,
            )
            if directory is None:
                raise ImagesError(f"{path.relative_to(ROOT)} names {match[0]}: no Dockerfile")
            found.append(Deployable(name, directory, match[0]))
    return found


def policy(name: str, *, job: bool = False) -> ContainerPolicy:
    """How the base runs `name`'s server (its Deployment) or its migration (its Job)."""
    path = BASE / name / ("migrate-job.yaml" if job else "deployment.yaml")
    pod = _pod(path, "Job" if job else "Deployment")
    container = pod["containers"][0]
    pod_security = pod.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    if not security.get("runAsNonRoot") or "runAsUser" not in security:
        raise ImagesError(f"{path.relative_to(ROOT)}: the container does not run as non-root")
    sizes = {
        v["name"]: (v["emptyDir"] or {}).get("sizeLimit") for v in pod["volumes"] if "emptyDir" in v
    }
    mounts = tuple(
        Mount(m["mountPath"], sizes[m["name"]])
        for m in container.get("volumeMounts", [])
        if m["name"] in sizes and not m.get("readOnly")
    )
    limits = container.get("resources", {}).get("limits", {})
    return ContainerPolicy(
        user=int(security["runAsUser"]),
        group=int(security.get("runAsGroup", security["runAsUser"])),
        read_only=bool(security.get("readOnlyRootFilesystem")),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        drop=tuple(security.get("capabilities", {}).get("drop", ())),
        mounts=mounts,
        memory=limits.get("memory"),
        cpus=None if limits.get("cpu") is None else str(limits["cpu"]),
        grace_seconds=int(pod.get("terminationGracePeriodSeconds", 30)),
    )


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9, "": 1}


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`64Mi`, `1G`) in bytes."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G|)", quantity)
    if match is None:
        raise ImagesError(f"unsupported memory quantity {quantity!r}")
    return int(match[1]) * _UNITS[match[2]]


def _cpus(quantity: str) -> str:
    """A Kubernetes CPU quantity (`2`, `500m`) as podman's --cpus."""
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity
