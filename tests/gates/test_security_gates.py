"""The security gates of `make test`: the secret scan against its audited baseline, and the
audit of the locked dependencies (scripts/gates)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATES = ROOT / "scripts" / "gates"
#: An AWS access key id in shape (detect-secrets' AWS plugin), built here so that this file
#: holds none.
FAKE_KEY = "AKIA" + "Z7Q4" * 4


def _gate(name: str) -> ModuleType:
    """A gate script as a module (scripts/gates is no package)."""
    if f"gate_{name}" in sys.modules:
        return sys.modules[f"gate_{name}"]
    spec = importlib.util.spec_from_file_location(f"gate_{name}", GATES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(script: str, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, str(GATES / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


# --- secret scan -------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60)


def _baseline(repo: Path, *, judged: bool) -> None:
    """`detect-secrets scan` of the repository as the baseline, each finding judged or not."""
    scanned = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    data = json.loads(scanned)
    for findings in data["results"].values():
        for finding in findings:
            if judged:
                finding["is_secret"] = False
    (repo / ".secrets.baseline").write_text(json.dumps(data, indent=2))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one harmless file, and its baseline."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "settings.py").write_text("TIMEOUT = 5\n")
    _git(tmp_path, "add", "settings.py")
    _baseline(tmp_path, judged=True)
    return tmp_path


def test_a_secret_the_baseline_does_not_hold_fails_the_scan_naming_its_file(repo: Path) -> None:
    assert _run("secret_scan.py", "--root", str(repo)).returncode == 0
    (repo / "settings.py").write_text(f"TIMEOUT = 5\nAWS_ACCESS_KEY_ID = '{FAKE_KEY}'\n")
    done = _run("secret_scan.py", "--root", str(repo))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "NEW  settings.py:2 AWS Access Key" in done.stderr


def test_a_judged_finding_passes_even_moved_but_not_copied_into_another_file(repo: Path) -> None:
    (repo / "settings.py").write_text(f"AWS_ACCESS_KEY_ID = '{FAKE_KEY}'\n")
    _baseline(repo, judged=True)
    (repo / "settings.py").write_text(f"# moved down\n\nAWS_ACCESS_KEY_ID = '{FAKE_KEY}'\n")
    assert _run("secret_scan.py", "--root", str(repo)).returncode == 0
    (repo / "other.py").write_text(f"KEY = '{FAKE_KEY}'\n")
    _git(repo, "add", "other.py")
    done = _run("secret_scan.py", "--root", str(repo))
    assert done.returncode == 1
    assert "NEW  other.py:1" in done.stderr


def test_a_baseline_entry_nobody_judged_fails_the_scan(repo: Path) -> None:
    (repo / "settings.py").write_text(f"AWS_ACCESS_KEY_ID = '{FAKE_KEY}'\n")
    _baseline(repo, judged=False)
    done = _run("secret_scan.py", "--root", str(repo))
    assert done.returncode == 1
    assert "UNJUDGED  settings.py:1 AWS Access Key" in done.stderr


def test_the_committed_baseline_is_judged_entry_by_entry() -> None:
    data = json.loads((ROOT / ".secrets.baseline").read_text())
    unjudged = [
        f"{name}:{finding['line_number']}"
        for name, findings in data["results"].items()
        for finding in findings
        if finding.get("is_secret") is not False
    ]
    assert unjudged == []


# --- dependency audit ----------------------------------------------------------------------


def test_every_package_the_lock_takes_from_the_registry_is_audited_and_no_workspace_member() -> (
    None
):
    requirements = _gate("dependency_audit").locked_requirements(ROOT / "uv.lock")
    names = {line.split("==")[0] for line in requirements}
    assert {"fastapi", "asyncpg", "pytest", "pip-audit"} <= names
    assert not {n for n in names if n.startswith("bazaar")}
    assert all("==" in line for line in requirements)


def _dep(name: str, *vulns: str, fix: str = "") -> dict[str, Any]:
    found = [{"id": v, "fix_versions": [fix] if fix else [], "aliases": []} for v in vulns]
    return {"name": name, "version": "1.0", "vulns": found}


def _unaudited(name: str) -> dict[str, Any]:
    reason = f"Dependency not found on PyPI and could not be audited: {name} (1.0)"
    return {"name": name, "skip_reason": reason}


def test_a_known_vulnerability_fails_the_audit_with_the_versions_that_fix_it() -> None:
    verdict = _gate("dependency_audit").judge(
        {"dependencies": [_dep("good"), _dep("bad", "GHSA-xxxx-yyyy-zzzz", fix="1.2")]}
    )
    assert verdict.status == 1
    assert "  VULNERABLE  bad 1.0: GHSA-xxxx-yyyy-zzzz (fixed in 1.2)" in verdict.lines


def test_an_audit_of_nothing_is_an_outage_warned_but_a_partial_one_fails() -> None:
    judge = _gate("dependency_audit").judge
    outage = judge({"dependencies": [_unaudited("a"), _unaudited("b")]})
    assert outage.status == 0
    assert "WARNING: SKIPPED" in outage.lines[0]
    partial = judge({"dependencies": [_dep("a"), _unaudited("b")]})
    assert partial.status == 1
    assert "  NOT AUDITED  b" in partial.lines
    assert judge({"dependencies": [_dep("a"), _dep("b")]}).status == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_vulnerability_service_is_a_visible_warning_not_a_pass_in_silence(
    tmp_path: Path,
) -> None:
    pinned = tmp_path / "requirements.txt"
    pinned.write_text("idna==3.10\n")
    proxy = f"http://127.0.0.1:{_closed_port()}"
    done = _run(
        "dependency_audit.py",
        "--requirements",
        str(pinned),
        env={"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "", "no_proxy": ""},
    )
    assert done.returncode == 0, done.stderr
    assert "dependency audit: WARNING: SKIPPED, the vulnerability service cannot be reached" in (
        done.stderr
    )


@pytest.mark.slow
def test_a_vulnerable_pin_fails_the_audit_where_the_service_answers(tmp_path: Path) -> None:
    pinned = tmp_path / "requirements.txt"
    pinned.write_text("urllib3==1.26.0\n")  # CVE-2021-33503 among others, fixed in 1.26.5
    done = _run("dependency_audit.py", "--requirements", str(pinned))
    if "WARNING: SKIPPED" in done.stderr:
        pytest.skip("the vulnerability service cannot be reached from here")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "VULNERABLE  urllib3 1.26.0" in done.stderr
