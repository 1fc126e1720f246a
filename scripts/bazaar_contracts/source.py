"""Where contract documents come from: the work tree, a git revision, or a release's baseline.

The documents are `openapi/*.json` and `asyncapi/*.yaml` under `contracts/`; a baseline is
a copy of them as released, under `contracts/released/<version>/` with the same layout.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

CONTRACTS = "contracts"
PATTERNS = ("openapi/*.json", "asyncapi/*.yaml")
RELEASED = "released"
VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
#: The command `make test` takes its base from (the newest release tag reachable from HEAD).
DESCRIBE = ("git", "describe", "--tags", "--abbrev=0", "--match", "v*")

Documents = dict[str, Any]  # by path under contracts/: "openapi/orders.json" -> parsed


class SourceError(Exception):
    """The documents to compare against cannot be had."""


def parse(name: str, text: str) -> Any:
    """A document's text, parsed by its extension (YAML for .yaml/.yml, JSON otherwise)."""
    return yaml.safe_load(text) if name.endswith((".yaml", ".yml")) else json.loads(text)


def read_directory(root: Path) -> Documents:
    """The documents under `root` (a contracts/ folder or a release's baseline)."""
    return {
        path.relative_to(root).as_posix(): parse(path.name, path.read_text("utf-8"))
        for pattern in PATTERNS
        for path in sorted(root.glob(pattern))
    }


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise SourceError(f"git: {error}") from error
    if done.returncode != 0:
        raise SourceError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def read_revision(repo: Path, revision: str) -> Documents:
    """The documents under contracts/ as committed at `revision`."""
    listed = _git(repo, "ls-tree", "-r", "--name-only", revision, "--", f"{CONTRACTS}/")
    found: Documents = {}
    for line in listed.splitlines():
        relative = PurePosixPath(line).relative_to(CONTRACTS)
        if any(relative.match(pattern) for pattern in PATTERNS) and len(relative.parts) == 2:
            found[relative.as_posix()] = parse(line, _git(repo, "show", f"{revision}:{line}"))
    if not found:
        raise SourceError(f"no contract documents under {CONTRACTS}/ at {revision}")
    return found


def latest_release_tag(repo: Path) -> str | None:
    """The newest `v*` tag reachable from HEAD, if the clone has one."""
    try:
        done = subprocess.run(DESCRIBE, cwd=repo, capture_output=True, text=True, check=False)
    except OSError:  # no git here: as good as no tag
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _version(name: str) -> tuple[int, ...]:
    matched = VERSION.match(name)
    return tuple(int(n) for n in matched.groups()) if matched else ()


def newest_baseline(repo: Path) -> Path | None:
    """The committed baseline of the newest release, if any."""
    released = repo / CONTRACTS / RELEASED
    found = [p for p in released.glob("v*") if p.is_dir() and _version(p.name)]
    return max(found, key=lambda p: _version(p.name)) if found else None


@dataclass(frozen=True)
class Base:
    """The documents a change is judged against, and where they came from."""

    label: str
    documents: Documents


def resolve_base(repo: Path, requested: str | None = None) -> Base:
    """`requested` (a folder or a git revision); else the newest release tag; else its baseline."""
    if requested:
        folder = Path(requested) if Path(requested).is_absolute() else repo / requested
        if folder.is_dir():
            return Base(f"{requested} (folder)", read_directory(folder))
        return Base(f"{requested} (git)", read_revision(repo, requested))
    tag = latest_release_tag(repo)
    if tag is not None:
        return Base(f"{tag} (latest release tag)", read_revision(repo, tag))
    baseline = newest_baseline(repo)
    if baseline is not None:
        label = f"{baseline.name} (no release tag in this clone: committed baseline "
        return Base(f"{label}{baseline.relative_to(repo).as_posix()})", read_directory(baseline))
    raise SourceError(
        "nothing to compare against: no v* tag reachable from HEAD and no baseline under "
        f"{CONTRACTS}/{RELEASED}/ (cut a release: scripts/contracts_check.py --release vX.Y.Z)"
    )


def _uncommitted(repo: Path) -> list[str]:
    """Contract documents that differ from HEAD (none outside a git work tree)."""
    try:
        listed = _git(repo, "status", "--porcelain", "--", *(f"{CONTRACTS}/{p}" for p in PATTERNS))
    except SourceError:
        return []
    return [line[3:] for line in listed.splitlines()]


def write_baseline(repo: Path, version: str) -> Path:
    """Copy the committed documents to contracts/released/<version>/ (replacing what was there).

    Refused while a document differs from HEAD: the baseline must be what the tag will hold.
    """
    if not VERSION.match(version):
        raise SourceError(f"{version!r} is not a release version such as v0.1.0")
    if changed := _uncommitted(repo):
        raise SourceError(f"commit the contracts first: {', '.join(changed)} differ from HEAD")
    source, target = repo / CONTRACTS, repo / CONTRACTS / RELEASED / version
    if target.exists():
        shutil.rmtree(target)
    for name in read_directory(source):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
    return target
