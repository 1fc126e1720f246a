"""What the services logged during the soak: warnings and errors, grouped and counted."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

_NUMBERS = re.compile(r"\b[0-9a-f]{8,}\b|\d+(\.\d+)?")


def _shape(record: dict[str, object]) -> str:
    message = _NUMBERS.sub("N", str(record.get("message", "")))[:110]
    exception = str(record.get("exception") or "").strip().splitlines()
    cause = f" | {exception[-1][:110]}" if exception else ""
    return f"{record.get('level')} {record.get('logger')}: {message}{cause}"


def digest(log_dir: Path, names: tuple[str, ...], per_service: int = 8) -> list[str]:
    """The most frequent warning/error shapes per program, with counts; crash lines too."""
    lines: list[str] = []
    for name in names:
        shapes: Counter[str] = Counter()
        path = log_dir / f"{name}.log"
        if not path.exists():
            continue
        with path.open(errors="replace") as log:
            for raw in log:
                if not raw.startswith("{"):
                    if raw.startswith(("Traceback", "Error", "ERROR")):
                        shapes[f"(plain) {raw.strip()[:120]}"] += 1
                    continue
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if record.get("level") in ("warning", "error", "critical"):
                    shapes[_shape(record)] += 1
        for shape, count in shapes.most_common(per_service):
            lines.append(f"{name:<8} {count:>6}  {shape}")
    return lines
