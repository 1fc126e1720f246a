"""Policy as code (scripts/gates/checkov.sh): every exception to checkov's policies is made
where the excused thing is written and says why, and the gate fails on what they would let
through elsewhere."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

Render = Callable[[str], list[dict[str, Any]]]
ROOT = Path(__file__).resolve().parents[2]
GATE = ROOT / "scripts" / "gates" / "checkov.sh"
#: checkov reads `CKV_ID=reason` and splits it on "=": one "=" exactly, and a real reason.
ANNOTATION = re.compile(r"^CKV2?_[A-Z0-9_]+=[^=]{40,}$")
COMMENT = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z0-9_]+):\s*(.*)$")


def _skips(obj: dict[str, Any]) -> dict[str, str]:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return {k: v for k, v in annotations.items() if "checkov.io/skip" in k}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_exception_on_a_kubernetes_object_names_one_check_and_says_why(
    rendered: Render, overlay: str
) -> None:
    skips = {
        f"{obj['kind']}/{obj['metadata']['name']} {key}": value
        for obj in rendered(overlay)
        for key, value in _skips(obj).items()
    }
    assert skips, "no exception at all: then this test has nothing to check"
    assert {where: v for where, v in skips.items() if not ANNOTATION.match(v)} == {}


def test_every_exception_in_a_dockerfile_or_the_compose_file_says_why() -> None:
    files = [
        "docker-compose.yml",
        *sorted(
            str(p.relative_to(ROOT)) for p in ROOT.glob("**/Dockerfile") if ".venv" not in p.parts
        ),
    ]
    marks = [
        (name, number, match)
        for name in files
        for number, line in enumerate((ROOT / name).read_text().splitlines(), 1)
        if "checkov:skip" in line
        for match in [COMMENT.search(line)]
    ]
    assert marks, "no exception at all: then this test has nothing to check"
    bad = [f"{name}:{n}" for name, n, m in marks if m is None or len(m.group(2)) < 30]
    assert bad == []


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists() and shutil.which(found) is None:
        pytest.fail("uv is missing: `make deps` installs it into .tools/")
    return found


def _without_exceptions(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prod overlay as it would be without this project's fixes and exceptions."""
    stripped = []
    for obj in copy.deepcopy(objects):
        annotations = obj.get("metadata", {}).get("annotations") or {}
        for key in list(_skips(obj)):
            del annotations[key]
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            container["imagePullPolicy"] = "IfNotPresent"
        if obj["kind"] == "StatefulSet" and obj["metadata"]["name"] == "redis":
            pod["securityContext"]["runAsUser"] = 999
        stripped.append(obj)
    return stripped


@pytest.mark.slow
def test_the_gate_fails_on_each_violation_its_fixes_and_exceptions_cover(
    rendered: Render, tmp_path: Path
) -> None:
    manifests = tmp_path / "overlay-prod.yaml"
    manifests.write_text(yaml.safe_dump_all(_without_exceptions(rendered("prod"))))
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "\n".join(
            line
            for line in (ROOT / "docker-compose.yml").read_text().splitlines()
            if "checkov:skip" not in line
        )
    )
    done = subprocess.run(
        ["bash", str(GATE), str(manifests), str(compose)],
        capture_output=True,
        text=True,
        timeout=300,  # below the test watchdog's 600 s: this error is the clearer one
        env={**os.environ, "UV": _uv()},
        check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode != 0, report
    failed = set(re.findall(r"Check: (CKV2?_[A-Z0-9_]+):", report))
    expected = {"CKV_K8S_43", "CKV_K8S_35", "CKV_K8S_15", "CKV_K8S_40", "CKV_SECRET_6"}
    assert expected <= failed, report
    assert "checkov: FAILED" in done.stderr
