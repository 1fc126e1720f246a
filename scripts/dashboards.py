#!/usr/bin/env python3
"""Render Bazaar's Grafana dashboards (scripts/bazaar_dashboards) into deploy/monitoring/dashboards.

    uv run python scripts/dashboards.py            write the JSON files
    uv run python scripts/dashboards.py --check    exit 1 naming the files that differ

Needs the workspace's dev dependencies (grafana-foundation-sdk).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bazaar_dashboards import render_all

OUTPUT = Path(__file__).resolve().parents[1] / "deploy" / "monitoring" / "dashboards"


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or check) every dashboard's JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder of the JSON files")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    rendered = render_all()
    stale = [
        name
        for name, text in rendered.items()
        if not (args.output / name).is_file() or (args.output / name).read_text() != text
    ]
    extra = sorted({p.name for p in args.output.glob("*.json")} - set(rendered))
    if args.check:
        for name in [*stale, *extra]:
            sys.stderr.write(f"{args.output / name}: not what scripts/dashboards.py renders\n")
        return 1 if stale or extra else 0
    args.output.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (args.output / name).write_text(rendered[name])
    for name in extra:
        (args.output / name).unlink()
    sys.stdout.write(f"{len(rendered)} dashboards in {args.output} ({len(stale)} rewritten)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
