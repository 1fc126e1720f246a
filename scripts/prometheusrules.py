#!/usr/bin/env python3
"""Render deploy/monitoring/prometheus/rules/*.yml into Kubernetes PrometheusRule objects.

    uv run python scripts/prometheusrules.py          write the PrometheusRule file
    uv run python scripts/prometheusrules.py --check  exit 1 if it is not what the rules render

The file: deploy/k8s/components/monitoring/prometheusrules.yaml.

The rule files are the one source (Prometheus of `make up` and of docker-compose.yml loads
them as they are); the Kubernetes overlays get the same groups, one PrometheusRule per rule
file (`bazaar-<file name>`), through the `monitoring` kustomize component.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "monitoring" / "prometheus" / "rules"
OUTPUT = REPO / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrules.yaml"

HEADER = """\
# GENERATED from deploy/monitoring/prometheus/rules/*.yml by scripts/prometheusrules.py: edit
# the rule files, then run `uv run python scripts/prometheusrules.py` (a test checks that this
# file is what they render). One PrometheusRule per rule file; the overlays set the namespace.
"""


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL stays readable), keys in their given order."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def prometheus_rule(path: Path) -> dict[str, Any]:
    """The PrometheusRule object of one rule file: its groups, unchanged."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": f"bazaar-{path.stem}",
            "labels": {
                "app.kubernetes.io/name": "bazaar",
                "app.kubernetes.io/component": "monitoring",
            },
        },
        "spec": {"groups": groups},
    }


def render(rules: Path = RULES) -> str:
    """Every rule file of the folder as a PrometheusRule, in one YAML stream."""
    documents = [prometheus_rule(path) for path in sorted(rules.glob("*.yml"))]
    if not documents:
        raise SystemExit(f"no rule file in {rules}")
    # No line folding: a template such as `{{ $labels.job }}` stays whole on its line.
    body = yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True
    )
    return HEADER + body


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or check) the PrometheusRule objects."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the YAML file to write")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            sys.stderr.write(f"{args.output} is stale: run scripts/prometheusrules.py\n")
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
