#!/usr/bin/env python3
"""Fail on a breaking change to contracts/ (OpenAPI and AsyncAPI) since the last release.

    uv run python scripts/contracts_check.py                   against the latest release
    uv run python scripts/contracts_check.py --base v0.1.0     against a tag, commit or folder
    uv run python scripts/contracts_check.py --release v0.2.0  write that release's baseline

With no --base: the newest `v*` tag reachable from HEAD (git describe), else, in a clone
without tags, the newest committed baseline under contracts/released/. One line per break,
exit 1 if there is any; exit 2 when there is nothing to compare against.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bazaar_contracts import SourceError, compare, read_directory, resolve_base, write_baseline

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None, repo: Path = REPO) -> int:
    """Check the current documents against a base, or write a release's baseline."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", help="a git revision (tag, commit) or a folder of documents")
    parser.add_argument("--release", metavar="VERSION", help="copy contracts/ as released")
    args = parser.parse_args(argv)
    try:
        if args.release:
            target = write_baseline(repo, args.release)
            sys.stdout.write(f"contracts-check: baseline written to {target.relative_to(repo)}\n")
            return 0
        base = resolve_base(repo, args.base)
    except SourceError as error:
        sys.stderr.write(f"contracts-check: error: {error}\n")
        return 2
    outcome = compare(base.documents, read_directory(repo / "contracts"))
    for found in sorted(set(outcome.breaks)):
        sys.stdout.write(f"{found}\n")
    count = len(set(outcome.breaks))
    verdict = f"{count} breaking change{'s' * (count != 1)}" if count else "no breaking change"
    sys.stdout.write(f"contracts-check: {verdict} against {base.label}; {outcome.summary}\n")
    return 1 if outcome.breaks else 0


if __name__ == "__main__":
    sys.exit(main())
