"""Offline stand-ins for the base images the Dockerfiles name, made where no registry answers.

A base image already in local storage (pulled from its registry, or a stand-in made earlier)
is used as it is. A missing one is made here, from the registries this machine reaches, and
tagged with exactly the name the Dockerfiles use:

- `python:<version>-slim-<suite>`: Debian <suite> from Debian's archive (debootstrap
  minbase with Debian's python<version>), built by deploy/images/python.Containerfile;
- `ghcr.io/astral-sh/uv:<version>`: the static uv and uvx binaries of PyPI's musllinux wheel
  of that version, built by deploy/images/uv.Containerfile.

Each stand-in carries the label `org.opencontainers.image.description` saying what it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from images_manifest import Deployable
from images_podman import BUILD, CONFIG, ImagesError, image_exists, podman, qualified, say, tail

#: Where debootstrap fetches Debian (BAZAAR_DEBIAN_MIRROR overrides it).
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: Where uv's wheel comes from (PEP 691 JSON; BAZAAR_PYPI_SIMPLE overrides it).
PYPI_SIMPLE = "https://pypi.org/simple"
#: Marks an image made here (its value says from what).
STAND_IN_LABEL = "org.opencontainers.image.description"
_PYTHON = re.compile(r"^docker\.io/library/python:(?P<version>3\.\d+)-slim-(?P<suite>[a-z]+)$")
_UV = re.compile(r"^ghcr\.io/astral-sh/uv:(?P<version>\d+\.\d+\.\d+)$")
#: What debian:<suite>-slim leaves out (debuerreotype's slimming), kept out of upgrades too.
_SLIM = """\
# As debian:{suite}-slim: no manuals, documentation (but copyrights), info pages or locales.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
_SOURCES = """\
Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {security}
Suites: {suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def bases(images: list[Deployable]) -> list[str]:
    """The external images the Dockerfiles build from (ARG defaults applied), qualified."""
    found: list[str] = []
    for image in images:
        text = re.sub(r"\\\n", " ", image.dockerfile.read_text())
        args: dict[str, str] = {}
        stages: set[str] = set()

        for line in text.splitlines():
            keyword, _, rest = line.strip().partition(" ")
            if keyword.upper() == "ARG" and "=" in rest:
                name, _, default = rest.strip().partition("=")
                args[name] = default
            elif keyword.upper() == "FROM":
                words = [w for w in rest.split() if not w.startswith("--")]
                source = re.sub(r"\$\{(\w+)\}", _value_of(args), words[0])
                if len(words) >= 3 and words[1].upper() == "AS":
                    stages.add(words[2])
                if source not in stages and source != "scratch":
                    reference = qualified(source)
                    if reference not in found:
                        found.append(reference)
    return found


def _value_of(args: dict[str, str]) -> Callable[[re.Match[str]], str]:
    """A substitution of `${NAME}` by the ARG's default."""
    return lambda match: args[match[1]]


def can_stand_in(reference: str) -> bool:
    """Whether a stand-in can be made here for the (qualified) image `reference`."""
    return bool(_PYTHON.match(reference) or _UV.match(reference))


def ensure(reference: str) -> str:
    """Make `reference` present: "present", or "stand-in made" when it was missing."""
    if image_exists(reference):
        return "present"
    BUILD.mkdir(parents=True, exist_ok=True)
    log = BUILD / f"stand-in-{re.sub(r'[^a-z0-9.]+', '-', reference)}.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="stand-in-", dir=BUILD) as work:
        try:
            if match := _PYTHON.match(reference):
                _python(reference, match["version"], match["suite"], Path(work), log)
            elif match := _UV.match(reference):
                _uv(reference, match["version"], Path(work), log)
            else:
                raise ImagesError(
                    f"{reference} is not in local storage and no stand-in can be made for it: "
                    f"`podman pull {reference}` where its registry can be reached"
                )
        finally:
            _unmount_under(Path(work))  # a debootstrap that failed may leave /proc mounted
    return "stand-in made"


def _unmount_under(directory: Path) -> None:
    """Unmount whatever is mounted below `directory`, deepest first, before it is removed."""
    prefix = str(directory.resolve()) + "/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for mountpoint in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False)


def _python(reference: str, version: str, suite: str, work: Path, log: Path) -> None:
    say(f"{reference}: missing; making a stand-in from Debian {suite} (debootstrap, ~1 min)")
    started = time.monotonic()
    mirror = os.environ.get("BAZAAR_DEBIAN_MIRROR", DEBIAN_MIRROR)
    rootfs = work / "rootfs"
    packages = f"ca-certificates,netbase,tzdata,python{version}"
    _run(
        ["debootstrap", "--variant=minbase", f"--include={packages}", suite, str(rootfs), mirror],
        log,
        "debootstrap",
    )
    (rootfs / "etc/dpkg/dpkg.cfg.d/slim").write_text(_SLIM.format(suite=suite))
    for pattern in ("usr/share/doc/*/*", "usr/share/man/*", "usr/share/info/*"):
        for path in rootfs.glob(pattern):
            if path.name != "copyright":
                _remove(path)
    for pattern in ("usr/share/locale/*", "usr/share/groff/*", "usr/share/lintian/overrides/*"):
        for path in rootfs.glob(pattern):
            _remove(path)
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
        for path in rootfs.glob(pattern):
            _remove(path)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    security = mirror.removesuffix("/debian") + "/debian-security"
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
        _SOURCES.format(mirror=mirror, security=security, suite=suite)
    )
    upstream = _package_version(rootfs, f"python{version}")
    _run(
        [
            *("tar", "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*"),
            *("--exclude=./sys/*", "-C", str(rootfs), "-cf", str(work / "rootfs.tar"), "."),
        ],
        log,
        "tar",
    )
    _remove(rootfs)
    podman(
        "build",
        "--pull=never",
        "--network=host",
        "--format=docker",
        "--file",
        str(CONFIG / "python.Containerfile"),
        "--build-arg",
        f"PYTHON=python{version}",
        "--build-arg",
        f"PYTHON_VERSION={upstream}",
        "--label",
        f"{STAND_IN_LABEL}=offline stand-in for {reference}: Debian {suite} (debootstrap "
        f"minbase) with Debian's python{version} {upstream}, made by scripts/images.py",
        "--tag",
        reference,
        str(work),
        log=log,
        timeout=1800,
    )
    say(f"{reference}: stand-in made, Python {upstream} ({time.monotonic() - started:.0f} s)")


def _package_version(rootfs: Path, package: str) -> str:
    """The upstream version of an installed Debian package (`3.11.2` of `3.11.2-6+deb12u6`)."""
    status = (rootfs / "var/lib/dpkg/status").read_text()
    for stanza in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.M):
            match = re.search(r"^Version: (?:\d+:)?([^-\s]+)", stanza, re.M)
            if match:
                return match[1]
    raise ImagesError(f"{package} is not installed in the stand-in")


def _uv(reference: str, version: str, work: Path, log: Path) -> None:
    say(f"{reference}: missing; making a stand-in from PyPI's uv {version} wheel")
    started = time.monotonic()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[
        platform.machine().lower()
    ]
    index = os.environ.get("BAZAAR_PYPI_SIMPLE", PYPI_SIMPLE).rstrip("/")
    request = urllib.request.Request(
        f"{index}/uv/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # the index is https
        files = json.load(answer)["files"]
    wheel = next(
        (
            f
            for f in files
            if f["filename"].startswith(f"uv-{version}-")
            and f"musllinux_1_1_{arch}" in f["filename"]
            and f["filename"].endswith(".whl")
        ),
        None,
    )
    if wheel is None:
        raise ImagesError(f"PyPI has no musllinux {arch} wheel of uv {version}")
    path = work / wheel["filename"]
    with urllib.request.urlopen(wheel["url"], timeout=300) as answer, path.open("wb") as out:
        shutil.copyfileobj(answer, out)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != wheel["hashes"]["sha256"]:
        raise ImagesError(f"{wheel['filename']}: SHA-256 {digest} is not the index's")
    with zipfile.ZipFile(path) as archive:
        for program in ("uv", "uvx"):
            target = work / program
            target.write_bytes(archive.read(f"uv-{version}.data/scripts/{program}"))
            target.chmod(0o755)
    path.unlink()
    podman(
        "build",
        "--pull=never",
        "--format=docker",
        "--file",
        str(CONFIG / "uv.Containerfile"),
        "--label",
        f"{STAND_IN_LABEL}=offline stand-in for {reference}: uv and uvx of PyPI's "
        f"{wheel['filename']} (sha256 {digest}), made by scripts/images.py",
        "--tag",
        reference,
        str(work),
        log=log,
    )
    took = time.monotonic() - started
    say(f"{reference}: stand-in made from {wheel['filename']} ({took:.0f} s)")


def _run(argv: list[str], log: Path, what: str) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise ImagesError(f"{what} exited {done.returncode}; see {log}:\n{tail(log)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
