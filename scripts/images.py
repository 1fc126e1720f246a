#!/usr/bin/env python3
"""Build the four images with podman and run them for real (`make images`, `make images-test`).

    uv run python scripts/images.py build [NAME ...]   the images, their SBOMs (build/images/)
    uv run python scripts/images.py test               the images as containers: the journey

`build` installs Debian's podman, runc and debootstrap when missing, makes an offline
stand-in for each base image the Dockerfiles name that is not in local storage
(images_standin), builds each Dockerfile unchanged (its own .dockerignore, BuildKit's cache
mounts, HEALTHCHECK kept: docker format) tagged with the name the Kubernetes base gives it,
then writes a CycloneDX SBOM per image (images_sbom). `test` is images_journey. Podman's
settings are deploy/images/ (images_podman), never the machine's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from images_journey import test
from images_manifest import Deployable, deployables
from images_podman import (
    BUILD,
    CONFIG,
    ROOT,
    ImagesError,
    ensure_tools,
    image_id,
    image_label,
    podman,
    say,
    storage_use,
    tail,
)
from images_sbom import write_sbom
from images_standin import STAND_IN_LABEL, bases, ensure

#: Build-time only (never in an image): the machine's certificate authorities, for uv.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _version(image: Deployable) -> str:
    project = tomllib.loads((image.directory / "pyproject.toml").read_text())["project"]
    return str(project["version"])


@contextmanager
def _trust_mounts() -> Iterator[list[str]]:
    """Volumes of every RUN step: this machine's CA bundle, and a home where uv is told to use it.

    A network that inspects TLS (as this machine's does) has its own authority, known to the
    machine but not to an image, and uv trusts only its own roots unless configured. The
    machine's bundle is mounted over the image's (a file every Debian image has) and a
    temporary /root holds ~/.config/uv/uv.toml (deploy/images/uv.toml): both paths exist in
    the image already, so nothing of either is left in a layer; the images are the same as
    built anywhere else.
    """
    bundle = os.environ.get("SSL_CERT_FILE") or CA_BUNDLE
    if not Path(bundle).is_file():
        yield []
        return
    with tempfile.TemporaryDirectory(prefix="build-home-", dir=BUILD) as home:
        config = Path(home) / ".config" / "uv"
        config.mkdir(parents=True)
        shutil.copyfile(CONFIG / "uv.toml", config / "uv.toml")
        yield ["--volume", f"{bundle}:{CA_BUNDLE}:ro", "--volume", f"{home}:/root"]


def build_image(image: Deployable) -> float:
    """Build one image from its Dockerfile, unchanged; seconds taken."""
    log = BUILD / f"{image.name}.build.log"
    log.write_text("")
    started = time.monotonic()
    try:
        with _trust_mounts() as trust:
            podman(
                "build",
                "--pull=never",  # bases come from local storage: real ones or stand-ins
                "--network=host",
                "--format=docker",  # OCI images have no HEALTHCHECK
                "--layers",
                "--file",
                str(image.dockerfile),
                "--ignorefile",
                str(image.ignorefile),
                *trust,
                "--label",
                f"org.opencontainers.image.version={_version(image)}",
                "--tag",
                image.image,
                str(ROOT),
                log=log,
                timeout=3600,
            )
    except ImagesError as error:
        raise ImagesError(f"{error}\n{tail(log)}") from error
    return time.monotonic() - started


def _size(reference: str) -> str:
    done = podman("image", "inspect", "--format", "{{.Size}}", reference)
    return f"{int(done.stdout.strip()) / 2**20:.0f} MiB"


def build(names: Sequence[str]) -> None:
    """`make images`: stand-ins for missing bases, the images, their SBOMs."""
    images = [i for i in deployables() if not names or i.name in names]
    unknown = set(names) - {i.name for i in images}
    if unknown:
        raise ImagesError(f"no image named {', '.join(sorted(unknown))}")
    ensure_tools()
    BUILD.mkdir(parents=True, exist_ok=True)
    for base in bases(images):
        if ensure(base) == "present":
            made = image_label(base, STAND_IN_LABEL).startswith("offline stand-in")
            say(f"{base}: present{' (an offline stand-in made earlier)' if made else ''}")
    for image in images:
        took = build_image(image)
        say(f"{image.image}: built in {took:.0f} s ({_size(image.image)})")
    for image in images:
        started = time.monotonic()
        path, written = write_sbom(image, image_id(image.image))
        took = time.monotonic() - started
        state = f"written ({took:.0f} s)" if written else "unchanged (same image)"
        say(f"{image.image}: SBOM {path.relative_to(ROOT)} {state}")
    say(
        f"podman's storage {storage_use()} (earlier builds' layers included: "
        "`podman image prune` drops them, and the build cache with them)"
    )


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so every `finally` cleans up


def main(argv: Sequence[str] | None = None) -> int:
    """Build or test the images; 0 when everything passed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_parser = sub.add_parser("build", help="the images and their SBOMs")
    build_parser.add_argument("names", nargs="*", help="only these (auth, catalog, …)")
    sub.add_parser("test", help="run the images and walk the journey through the gateway")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    try:
        if args.command == "build":
            build(args.names)
        else:
            ensure_tools(["podman", "runc"])
            test(deployables())
    except ImagesError as error:
        sys.stderr.write(f"images: error: {error}\n")
        return 1
    say(f"{args.command}: passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
