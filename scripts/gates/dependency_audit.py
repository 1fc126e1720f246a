"""Gate: no locked dependency with a known vulnerability (pip-audit, PyPI's advisory data).

Audits every package uv.lock pins from the registry (all groups, all platforms) without
installing anything. Fails on a known vulnerability, listing it with the versions that fix
it; an advisory that does not apply here is accepted only in IGNORED below, with why.

When the vulnerability service cannot be reached (no network, a proxy in the way, or a
package index that serves packages but not their advisory data, so that not one locked
package could be looked up), there is nothing to judge: the gate says so in a WARNING and
passes. If some packages could be looked up and others not, it fails: that is no outage.

Usage: python scripts/gates/dependency_audit.py [--lock uv.lock | --requirements FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: Advisories accepted, by id, with the reason (none today).
IGNORED: dict[str, str] = {}

#: What pip-audit says on its way out when it could not talk to the service at all.
_UNREACHABLE = re.compile(
    r"(ConnectionError|ProxyError|ConnectTimeout|ReadTimeout|SSLError|NameResolutionError"
    r"|Max retries exceeded|ServiceError)"
)
#: The skip reason of a package the service had no data for.
_NOT_FOUND = "could not be audited"


@dataclass(frozen=True)
class Verdict:
    """What the gate concludes: its exit status and what it says."""

    status: int
    lines: list[str]


def locked_requirements(lock: Path) -> list[str]:
    """`name==version` of every package the lock takes from a registry."""
    data = tomllib.loads(lock.read_text())
    return sorted(
        f"{package['name']}=={package['version']}"
        for package in data["package"]
        if "registry" in package.get("source", {})
    )


def judge(report: dict[str, Any]) -> Verdict:
    """Read pip-audit's JSON report: vulnerabilities fail, an audit of nothing is an outage."""
    dependencies = report.get("dependencies", [])
    unaudited = [d["name"] for d in dependencies if _NOT_FOUND in d.get("skip_reason", "")]
    if dependencies and len(unaudited) == len(dependencies):
        return Verdict(
            0, [_warning("no package could be looked up (the service has no data here)")]
        )
    found = [
        f"{d['name']} {d['version']}: {v['id']}"
        + (f" (fixed in {', '.join(v['fix_versions'])})" if v.get("fix_versions") else "")
        for d in dependencies
        for v in d.get("vulns", [])
        if v["id"] not in IGNORED and not set(v.get("aliases", [])) & IGNORED.keys()
    ]
    lines = [f"  VULNERABLE  {line}" for line in found]
    lines += [f"  NOT AUDITED  {name}" for name in unaudited]
    audited = len(dependencies) - len(unaudited)
    if found or unaudited:
        lines.append(
            f"dependency audit: FAILED: {len(found)} known vulnerabilities, "
            f"{len(unaudited)} packages not audited, of {len(dependencies)}. Upgrade "
            "(uv lock --upgrade-package NAME), or accept an advisory in IGNORED with why."
        )
        return Verdict(1, lines)
    return Verdict(0, [f"dependency audit: {audited} locked packages, no known vulnerability"])


def _warning(why: str) -> str:
    return (
        "dependency audit: WARNING: SKIPPED, the vulnerability service cannot be reached: "
        f"{why}. Nothing was audited."
    )


def audit(requirements: list[str]) -> Verdict:
    """Run pip-audit on pinned requirements (no install, no resolution) and judge it."""
    with tempfile.TemporaryDirectory() as work:
        listed, output = Path(work) / "requirements.txt", Path(work) / "report.json"
        listed.write_text("\n".join(requirements) + "\n")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--requirement",
                str(listed),
                "--no-deps",
                "--disable-pip",
                "--progress-spinner",
                "off",
                "--format",
                "json",
                "--output",
                str(output),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        report = output.read_text() if output.exists() else ""
    if report.strip():
        return judge(json.loads(report))
    unreachable = _UNREACHABLE.search(done.stderr)
    if unreachable:
        return Verdict(0, [_warning(unreachable.group(1))])
    return Verdict(
        2, [done.stderr.strip(), f"dependency audit: pip-audit failed ({done.returncode})"]
    )


def main(argv: list[str] | None = None) -> int:
    """Audit the lock (or a requirements file), say the verdict, return its status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--lock", type=Path, default=ROOT / "uv.lock")
    source.add_argument("--requirements", type=Path, help="pinned name==version lines instead")
    args = parser.parse_args(argv)
    if args.requirements:
        requirements = [
            line.strip()
            for line in args.requirements.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    else:
        requirements = locked_requirements(args.lock)
    verdict = audit(requirements)
    for line in verdict.lines:
        loud = verdict.status != 0 or "WARNING" in line
        (sys.stderr if loud else sys.stdout).write(line + "\n")
    return verdict.status


if __name__ == "__main__":
    sys.exit(main())
