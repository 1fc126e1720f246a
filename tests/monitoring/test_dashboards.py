"""The Grafana dashboards: the committed JSON is what scripts/dashboards.py renders, and it is
shaped as compose's Grafana and the system test (every query against Prometheus) expect."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
COMMITTED = REPO / "deploy" / "monitoring" / "dashboards"
NAMES = ("overview", "orders", "messaging", "gateway")


def _rendered() -> dict[str, str]:
    sys.path.insert(0, str(SCRIPTS))
    try:
        from bazaar_dashboards import render_all

        return render_all()
    finally:
        sys.path.remove(str(SCRIPTS))


def _committed() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(COMMITTED.glob("*.json"))}


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def test_the_committed_dashboards_are_what_the_generator_renders() -> None:
    rendered = _rendered()
    assert sorted(rendered) == sorted(p.name for p in COMMITTED.glob("*.json"))
    for name, text in rendered.items():
        assert (COMMITTED / name).read_text() == text, (
            f"{name} differs from what scripts/dashboards.py renders: "
            "run `uv run python scripts/dashboards.py` and commit the result"
        )


def test_the_generators_check_names_a_file_edited_by_hand(tmp_path: Path) -> None:
    for path in COMMITTED.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    script = [sys.executable, str(SCRIPTS / "dashboards.py"), "--check", "--output", str(tmp_path)]
    clean = subprocess.run(script, capture_output=True, text=True, check=False, timeout=120)
    assert clean.returncode == 0, clean.stderr
    edited = json.loads((tmp_path / "orders.json").read_text())
    edited["title"] = "Edited in the UI"
    (tmp_path / "orders.json").write_text(json.dumps(edited))
    stale = subprocess.run(script, capture_output=True, text=True, check=False, timeout=120)
    assert stale.returncode == 1
    assert "orders.json" in stale.stderr and "overview.json" not in stale.stderr


def test_there_is_one_dashboard_per_view_each_with_its_own_uid_and_title() -> None:
    boards = _committed()
    assert sorted(boards) == sorted(NAMES)
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids) and all(u.startswith("bazaar-") for u in uids)
    assert all(b["title"].startswith("Bazaar / ") for b in boards.values())


@pytest.mark.parametrize("name", NAMES)
def test_every_query_asks_the_chosen_prometheus_and_every_variable_is_defined(
    name: str,
) -> None:
    board = _committed()[name]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert "datasource" in variables
    queries = 0
    for panel in _panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queries += 1
            assert target["datasource"] == panel["datasource"]
            used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used - variables)
    assert queries >= 6


@pytest.mark.parametrize("name", NAMES)
def test_panels_do_not_overlap_on_the_grid(name: str) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in _committed()[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, panel["title"]
        cells |= mine
