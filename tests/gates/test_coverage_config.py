"""Branch coverage in `make test` measures every src/ tree of the workspace, subprocesses too."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_workspace_member_s_src_tree_is_measured() -> None:
    members = CONFIG["tool"]["uv"]["workspace"]["members"]
    trees = {
        str(member.relative_to(ROOT) / "src")
        for pattern in members
        for member in ROOT.glob(pattern)
        if (member / "pyproject.toml").exists() and (member / "src").is_dir()
    }
    assert len(trees) >= 5  # shared, three services, the gateway
    assert trees <= set(CONFIG["tool"]["coverage"]["run"]["source"])


def test_branches_and_subprocesses_are_measured_against_a_threshold() -> None:
    coverage = CONFIG["tool"]["coverage"]
    assert coverage["run"]["branch"] is True
    assert "subprocess" in coverage["run"]["patch"]
    assert coverage["report"]["include_namespace_packages"] is True
    assert coverage["report"]["fail_under"] > 0
