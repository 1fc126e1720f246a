"""Gate: no secret in the repository that the committed, audited baseline does not hold.

Scans the files git tracks (as `detect-secrets scan` does: `git add` a new file first) with
detect-secrets' plugins and filters as `.secrets.baseline` records them. Fails on a finding
the baseline lacks (a new secret, or a known one copied into another file) and on a baseline
entry nobody judged.
Lines that only moved change nothing: findings are matched by file, kind and hashed value.

After a deliberate change (a new test password, say), refresh the baseline and judge what
it added (`s` marks a false positive):

    uv run detect-secrets scan --baseline .secrets.baseline
    uv run detect-secrets audit .secrets.baseline

Usage: python scripts/gates/secret_scan.py [--root DIR] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from detect_secrets.core import baseline
from detect_secrets.core.secrets_collection import SecretsCollection

ROOT = Path(__file__).resolve().parents[2]


def tracked_files(root: Path) -> list[str]:
    """What git tracks under `root`, relative to it: existing files only (no deleted ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = sorted({name for name in listed.split("\0") if name})
    return [name for name in names if (root / name).is_file() and not (root / name).is_symlink()]


def unjudged(known: SecretsCollection) -> list[str]:
    """Baseline entries never audited, or audited as real secrets."""
    return [
        f"{filename}:{secret.line_number} {secret.type} (is_secret: {secret.is_secret})"
        for filename, secret in known
        if secret.is_secret is not False
    ]


def scan(root: Path, baseline_path: Path, files: list[str]) -> tuple[SecretsCollection, ...]:
    """The baseline's secrets and those of `files`, scanned with the baseline's settings."""
    known = baseline.load(baseline.load_from_file(str(baseline_path)), str(baseline_path))
    # Findings compare by the file name as scanned: relative to the root, as in the baseline.
    os.chdir(root)
    found = SecretsCollection()
    found.scan_files(*[name for name in files if root / name != baseline_path])
    return known, found


def main(argv: list[str] | None = None) -> int:
    """Scan, compare with the baseline, say what is wrong; 0 when nothing is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    baseline_path = (args.baseline or root / ".secrets.baseline").resolve()
    if not baseline_path.is_file():
        sys.stderr.write(f"secret scan: error: no baseline at {baseline_path}\n")
        return 2
    files = tracked_files(root)
    known, found = scan(root, baseline_path, files)
    problems = [f"{name}:{secret.line_number} {secret.type}" for name, secret in found - known]
    judged = unjudged(known)
    count = sum(1 for _ in found)
    sys.stdout.write(
        f"secret scan: {len(files)} files, {count} findings, {len(problems)} not in the baseline\n"
    )
    for line in problems:
        sys.stderr.write(f"  NEW  {line}\n")
    for line in judged:
        sys.stderr.write(f"  UNJUDGED  {line}\n")
    if problems or judged:
        sys.stderr.write(
            "secret scan: FAILED. Remove the secret; or, if it is none (a test value), refresh "
            "and audit the baseline: see scripts/gates/secret_scan.py\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
