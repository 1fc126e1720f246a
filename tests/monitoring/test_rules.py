"""The Prometheus rules of deploy/monitoring/prometheus/rules: valid for promtool, unit-tested
alert by alert (prometheus/tests/*.test.yml), each with a severity and a runbook section,
written against the documented metric names, and rendered unchanged into the Kubernetes
PrometheusRule objects."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bazaar.catalog.cli import COMMANDS as CATALOG
from bazaar.shared.cli import run
from bazaar.shared.messaging.operator import configure_parked

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "monitoring" / "prometheus"
RULES = PROMETHEUS / "rules"
UNIT_TESTS = PROMETHEUS / "tests"
RUNBOOKS = REPO / "deploy" / "monitoring" / "RUNBOOKS.md"
GUIDE = REPO / "deploy" / "README.md"
K8S_RULES = REPO / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrules.yaml"
SCRIPTS = REPO / "scripts"

#: Series Prometheus makes itself, not a process's metrics.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
#: PromQL words that look like names: operators and modifiers.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan"}  # fmt: skip


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run scripts/ensure-prometheus.sh (Debian's prometheus)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=300, check=False
    )


def _rule_files() -> list[Path]:
    files = sorted(RULES.glob("*.yml"))
    assert files, f"no rule file in {RULES}"
    return files


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in _rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def _alerts() -> list[dict[str, Any]]:
    return [r for r in _rules() if "alert" in r]


def test_promtool_finds_every_rule_file_valid() -> None:
    done = _run("check", "rules", *map(str, _rule_files()))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    tests = sorted(UNIT_TESTS.glob("*.test.yml"))
    assert tests, f"no promtool unit test in {UNIT_TESTS}"
    done = _run("test", "rules", *map(str, tests))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_unit_tested_firing_and_staying_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in sorted(UNIT_TESTS.glob("*.test.yml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert sorted(names - fires) == [], "never seen firing"
    assert sorted(names - quiet) == [], "never seen quiet"
    assert sorted((fires | quiet) - names) == [], "tests of alerts that do not exist"


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    for alert in _alerts():
        name = alert["alert"]
        assert re.fullmatch(r"Bazaar[A-Za-z]+", name), name
        assert alert["labels"]["severity"] in {"page", "ticket"}, name
        annotations = alert["annotations"]
        assert set(annotations) >= {"summary", "description", "runbook_url"}, name
        assert annotations["summary"].strip() and annotations["description"].strip(), name


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _sections() -> dict[str, str]:
    """RUNBOOKS.md's sections by anchor: the heading's text and the body up to the next one."""
    text = RUNBOOKS.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {_anchor(title): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_runbook_url_points_at_a_section_of_the_runbooks_that_says_what_to_do() -> None:
    sections = _sections()
    for alert in _alerts():
        url = alert["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "deploy/monitoring/RUNBOOKS.md", url
        assert anchor == alert["alert"].lower(), url  # the section is titled with the name
        assert anchor in sections, f"{alert['alert']}: no section #{anchor} in RUNBOOKS.md"
        body = sections[anchor]
        for part in ("**Means.**", "**Impact.**", "**Check.**", "**Act.**"):
            assert part in body, f"{alert['alert']}: its runbook has no {part}"
    alert_sections = {a for a in sections if a.startswith("bazaar")}
    assert alert_sections == {a["alert"].lower() for a in _alerts()}, "a section of no alert"


def test_the_parked_messages_runbook_gives_the_real_commands() -> None:
    # The words after `bazaar-catalog parked` as bazaar.shared.messaging.operator parses them.
    body = _sections()["bazaarmessagesparked"]
    commands = re.findall(r"-- bazaar-catalog parked ([^\n#]+?)\s*(?:#|\n)", body)
    assert {c.split()[0] for c in commands} == {"list", "show", "redrive"}, commands
    parked = argparse.ArgumentParser(prog="parked")
    configure_parked(parked)
    for command in commands:
        try:
            parked.parse_args(command.replace("MESSAGE_ID", "m-1").split())
        except SystemExit:
            pytest.fail(f"`parked {command}` is not a valid command")
    # And `parked` and `topology` are commands of the service's command line.
    for command in ("parked", "topology"):
        with pytest.raises(SystemExit) as exited:
            run(CATALOG, [command, "--help"])
        assert exited.value.code == 0, command
    assert "bazaar-catalog topology" in body


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not recorded series: those have a colon)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS or ":" in word:
            continue
        names.add(word)
    return names


def _documented_metrics() -> list[str] | None:
    """The names in deploy/README.md's metrics reference table (None: no such section)."""
    text = GUIDE.read_text()
    heading = re.search(r"^(#+) Metrics reference\s*$", text, flags=re.M)
    if heading is None:
        return None
    rest = text[heading.end() :]
    end = re.search(rf"^#{{1,{len(heading.group(1))}}} ", rest, flags=re.M)
    section = rest[: end.start()] if end else rest
    return re.findall(r"^\|\s*`([^`]+)`", section, flags=re.M)


def test_the_name_extraction_sees_metrics_and_only_metrics() -> None:
    expr = (
        'sum by (namespace, le) (rate(http_server_request_duration_seconds_bucket{job="gateway",'
        " http_route=~`/v1/.+`}[5m])) or 0 * route_family:gateway_http_requests:rate5m"
        " and on (job) max_over_time(up[1m]) > bool 2"
    )
    assert _metric_names(expr) == {"http_server_request_duration_seconds_bucket", "up"}


def test_every_metric_the_rules_read_is_a_documented_one() -> None:
    documented = _documented_metrics()
    if documented is None:
        pytest.skip("deploy/README.md has no 'Metrics reference' section yet")
    exact = {n for n in documented if "*" not in n}
    prefixes = tuple(n.rstrip("*") for n in documented if n.endswith("*"))
    unknown = []
    for rule in _rules():
        for name in sorted(_metric_names(rule["expr"])):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            if name in exact or base in exact or name.startswith(prefixes):
                continue
            if name not in PROMETHEUS_OWN:
                unknown.append(f"{rule.get('alert') or rule.get('record')}: {name}")
    assert unknown == []


def test_the_kubernetes_prometheus_rules_are_what_the_rule_files_render() -> None:
    sys.path.insert(0, str(SCRIPTS))
    try:
        import prometheusrules
    finally:
        sys.path.remove(str(SCRIPTS))
    # `uv run python scripts/prometheusrules.py` writes it anew.
    assert K8S_RULES.read_text() == prometheusrules.render()
    rendered = list(yaml.safe_load_all(K8S_RULES.read_text()))
    by_name = {d["metadata"]["name"]: d["spec"]["groups"] for d in rendered}
    for path in _rule_files():
        assert by_name.pop(f"bazaar-{path.stem}") == yaml.safe_load(path.read_text())["groups"]
    assert by_name == {}
