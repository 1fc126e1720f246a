"""The Dockerfiles: multi-stage with uv and the lock, cached dependency layer, non-root runtime."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOYABLES = {
    "auth": "services/auth",
    "catalog": "services/catalog",
    "orders": "services/orders",
    "gateway": "gateway",
}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    args: str
    stage: int


def _parse(text: str) -> list[Instruction]:
    joined = re.sub(r"\\\n", " ", text)
    instructions: list[Instruction] = []
    stage = -1
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), args.strip(), stage))
    return instructions


def _members() -> list[str]:
    """Every workspace member's directory (its pyproject.toml must reach the image)."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        found += [str(p.parent.relative_to(ROOT)) for p in ROOT.glob(f"{pattern}/pyproject.toml")]
    return sorted(found)


@pytest.fixture(params=sorted(DEPLOYABLES))
def image(request: pytest.FixtureRequest) -> tuple[str, list[Instruction]]:
    """A deployable's name and its parsed Dockerfile."""
    name = str(request.param)
    return name, _parse((ROOT / DEPLOYABLES[name] / "Dockerfile").read_text())


def test_every_deployable_of_the_workspace_has_a_dockerfile() -> None:
    deployables = {m for m in _members() if m != "shared"}
    assert deployables == set(DEPLOYABLES.values())


def test_the_build_is_multi_stage_from_pinned_images(image: tuple[str, list[Instruction]]) -> None:
    _name, instructions = image
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2
    args = {
        i.args.split("=")[0]: i.args.split("=", 1)[1] for i in instructions if i.keyword == "ARG"
    }
    for source in froms:
        reference = source.split()[0]
        reference = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], reference)
        _, _, tag = reference.rpartition(":")
        assert tag and tag != "latest" and "/" not in tag, reference


def test_dependencies_are_installed_from_the_lock_before_the_source_is_copied(
    image: tuple[str, list[Instruction]],
) -> None:
    name, instructions = image
    syncs = [n for n, i in enumerate(instructions) if i.keyword == "RUN" and "uv sync" in i.args]
    assert len(syncs) == 2
    first, second = (instructions[n].args for n in syncs)
    for sync in (first, second):
        assert "--locked" in sync and "--no-dev" in sync and f"--package bazaar-{name}" in sync
    assert "--no-install-workspace" in first
    copies = [(n, i.args) for n, i in enumerate(instructions) if i.keyword == "COPY"]
    before = " ".join(args for n, args in copies if n < syncs[0])
    assert "uv.lock" in before
    for member in _members():
        assert f"{member}/pyproject.toml" in before, member
    assert "/src" not in before  # the source comes after: editing it keeps the dependency layer
    after = " ".join(args for n, args in copies if syncs[0] < n < syncs[1])
    assert f"{DEPLOYABLES[name]}/src" in after


def test_the_runtime_stage_is_non_root_without_uv_or_build_tools(
    image: tuple[str, list[Instruction]],
) -> None:
    _name, instructions = image
    final = max(i.stage for i in instructions)
    runtime = [i for i in instructions if i.stage == final]
    (user,) = [i.args for i in runtime if i.keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric, so runAsNonRoot can be checked
    text = " ".join(i.args for i in runtime)
    assert "--from=uv" not in text and " uv " not in f" {text} "
    for tool in ("gcc", "build-essential", "make", "git"):
        assert not re.search(rf"\b{tool}\b", text), tool
    copied = [i.args for i in runtime if i.keyword == "COPY"]
    assert copied and all(c.startswith("--from=build") for c in copied)


def test_the_image_serves_its_port_checks_health_and_runs_the_service(
    image: tuple[str, list[Instruction]], settings_classes: dict[str, type[BaseSettings]]
) -> None:
    name, instructions = image
    final = max(i.stage for i in instructions)
    runtime = {i.keyword: i.args for i in instructions if i.stage == final}
    port = settings_classes[f"{name.upper()}_"].model_fields["port"].default
    assert runtime["EXPOSE"] == str(port)
    assert f"{name.upper()}_PORT={port}" in runtime["ENV"]
    assert f"{name.upper()}_ENVIRONMENT=production" in runtime["ENV"]
    assert "/healthz" in runtime["HEALTHCHECK"] and "--timeout" in runtime["HEALTHCHECK"]
    assert json.loads(runtime["CMD"]) == [f"bazaar-{name}", "serve"]


def test_the_build_context_holds_only_what_the_image_copies(
    image: tuple[str, list[Instruction]],
) -> None:
    name, instructions = image
    ignore = ROOT / DEPLOYABLES[name] / "Dockerfile.dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything out, then an allow-list
    allowed = [p[1:] for p in patterns if p.startswith("!")]
    sources = [
        source
        for i in instructions
        if i.keyword == "COPY" and not i.args.startswith("--from")
        for source in i.args.split()[:-1]
    ]
    for source in sources:
        assert any(fnmatch.fnmatch(source, a) for a in allowed), source
        assert (ROOT / source).exists(), source
    assert not any(a.startswith(("tests", ".venv", ".git", ".env")) for a in allowed)
