"""A CycloneDX SBOM of each image's Python environment, read inside the image itself.

`cyclonedx-bom` (PyPI) is installed into a folder of its own under build/images/ (never a
project dependency) for the image's Python and platform, mounted read-only into a throwaway
container of the image (no network, read-only, as the image's user), and run there by the
image's base interpreter over /app/.venv: the SBOM lists what the image really holds, with
the deployable's pyproject.toml as the root component. Written to build/images/<name>.cdx.json,
with the image's reference and id among the metadata's properties; rewritten only when the
image changed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from images_manifest import Deployable
from images_podman import BUILD, ROOT, ImagesError, podman

#: The generator's version: pinned, so an SBOM changes only with the image.
CYCLONEDX_BOM = "7.5.0"
TOOL = BUILD / f".cyclonedx-bom-{CYCLONEDX_BOM}"
#: Where the tool is mounted in the container.
MOUNT = "/opt/cyclonedx"


def sbom_path(image: Deployable) -> Path:
    """Where `image`'s SBOM is written."""
    return BUILD / f"{image.name}.cdx.json"


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        raise ImagesError("uv is needed to install cyclonedx-bom (`make deps` installs it)")
    return found


def _python_version(reference: str) -> str:
    """The image's Python as major.minor (from its PYTHON_VERSION, as python images set it)."""
    done = podman(
        "image", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", reference
    )
    for line in done.stdout.splitlines():
        if line.startswith("PYTHON_VERSION="):
            return ".".join(line.split("=", 1)[1].split(".")[:2])
    raise ImagesError(f"{reference} sets no PYTHON_VERSION")


def _tool(python: str) -> Path:
    """cyclonedx-bom installed for the image's Python and platform (once)."""
    target = TOOL / f"py{python}"
    if (target / "cyclonedx_py").is_dir():
        return target
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower())
    done = subprocess.run(
        [
            _uv(),
            "pip",
            "install",
            "--quiet",
            "--no-config",
            "--target",
            str(target),
            "--python-version",
            python,
            "--python-platform",
            f"{arch or platform.machine()}-manylinux_2_28",
            "--only-binary",
            ":all:",
            f"cyclonedx-bom=={CYCLONEDX_BOM}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise ImagesError(f"installing cyclonedx-bom failed:\n{done.stderr}")
    return target


def write_sbom(image: Deployable, image_id: str) -> tuple[Path, bool]:
    """Write `image`'s SBOM unless the one there is of this very image; (path, written)."""
    path = sbom_path(image)
    if path.exists() and _property(json.loads(path.read_text()), "bazaar:image:id") == image_id:
        return path, False
    tool = _tool(_python_version(image.image))
    project = image.directory.relative_to(ROOT) / "pyproject.toml"
    done = podman(
        "run",
        "--rm",
        "--network=none",
        "--read-only",
        "--volume",
        f"{tool}:{MOUNT}:ro",
        "--workdir",
        MOUNT,
        image.image,
        # The base interpreter, not the venv's: the SBOM is of /app/.venv, not of the tool.
        "/usr/local/bin/python3",
        "-m",
        "cyclonedx_py",
        "environment",
        "--pyproject",
        f"/app/{project}",
        "--mc-type",
        "application",
        "--output-reproducible",
        "--output-format",
        "JSON",
        "--output-file",
        "-",
        "/app/.venv",
    )
    bom: dict[str, Any] = json.loads(done.stdout)
    properties = bom.setdefault("metadata", {}).setdefault("properties", [])
    properties += [
        {"name": "bazaar:image:reference", "value": image.image},
        {"name": "bazaar:image:id", "value": image_id},
    ]
    path.write_text(json.dumps(bom, indent=2) + "\n")
    return path, True


def _property(bom: dict[str, Any], name: str) -> str | None:
    for item in bom.get("metadata", {}).get("properties", []):
        if item.get("name") == name:
            return str(item.get("value"))
    return None
