"""Podman as `make images` and `make images-test` run it: with this repository's settings.

Every podman command gets CONTAINERS_CONF and CONTAINERS_REGISTRIES_CONF pointing at
deploy/images/, never the machine's /etc/containers. Storage is podman's default for root
(/var/lib/containers/storage, overlay), shared with any other podman user of the machine:
a storage.conf naming the driver would make podman's own clean-up processes (started by
conmon without it) refuse a database another podman created first, and every container's
exit would then wait podman's full 20 s timeout.
Debian's podman, runc and debootstrap are installed when missing (root needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The settings podman reads (containers.conf, registries.conf) and the stand-ins' Containerfiles.
CONFIG = ROOT / "deploy" / "images"
#: What the targets write: SBOMs, build logs, test logs (ignored by git).
BUILD = ROOT / "build" / "images"
#: Debian's packages and the command each provides.
PACKAGES = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}


def say(line: str) -> None:
    """One line of progress on stdout, at once."""
    sys.stdout.write(f"images: {line}\n")
    sys.stdout.flush()


class ImagesError(RuntimeError):
    """A step of `make images` or `make images-test` failed; the message says which and why."""


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with podman pointed at deploy/images/."""
    env = dict(os.environ)
    env.update(
        CONTAINERS_CONF=str(CONFIG / "containers.conf"),
        CONTAINERS_REGISTRIES_CONF=str(CONFIG / "registries.conf"),
    )
    env.update(extra or {})
    return env


def podman(
    *args: str, check: bool = True, timeout: float | None = 600, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `podman args`: output captured (or appended to `log`); ImagesError when it fails."""
    argv = ["podman", *args]
    if log is not None:
        with log.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            done = subprocess.run(
                argv,
                env=environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
    else:
        done = subprocess.run(
            argv, env=environment(), capture_output=True, text=True, timeout=timeout, check=False
        )
    if check and done.returncode != 0:
        where = f"; see {log}" if log is not None else f": {(done.stderr or done.stdout).strip()}"
        raise ImagesError(f"`podman {' '.join(args[:2])} …` exited {done.returncode}{where}")
    return done


def image_exists(reference: str) -> bool:
    """Whether `reference` is in local storage (nothing is pulled)."""
    return podman("image", "exists", reference, check=False).returncode == 0


def image_id(reference: str) -> str:
    """The local image's id."""
    return podman("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()


def image_label(reference: str, label: str) -> str:
    """A label of the local image ('' when it has none)."""
    done = podman("image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', reference)
    value = done.stdout.strip()
    return "" if value == "<no value>" else value


def storage_use() -> str:
    """Where podman keeps images on this machine, and how much the folder holds."""
    root = podman("info", "--format", "{{.Store.GraphRoot}}").stdout.strip()
    done = subprocess.run(["du", "-sb", root], capture_output=True, text=True, check=False)
    size = done.stdout.split()[0] if done.returncode == 0 else ""
    return f"{root}: {int(size) / 2**30:.1f} GiB" if size.isdigit() else root


def qualified(reference: str) -> str:
    """A reference as Docker reads it: `python:3.11` is `docker.io/library/python:3.11`."""
    first, _, rest = reference.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        path = reference if rest else f"library/{reference}"
        return f"docker.io/{path}"
    return reference


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file (for an error message)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def ensure_tools(needed: Sequence[str] = tuple(PACKAGES)) -> None:
    """Install the Debian packages among `needed` whose command is missing (apt-get, as root)."""
    missing = [package for package in needed if shutil.which(PACKAGES[package]) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise ImagesError(f"{', '.join(missing)} missing and apt-get is not available")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    say(f"installing Debian's {', '.join(missing)}")
    for argv in (
        ["apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=120"],
        ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=120", *missing],
    ):
        done = subprocess.run(
            [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ImagesError(f"`{' '.join(argv)}` failed:\n{done.stdout[-2000:]}{done.stderr}")
