"""The one-shot steps before a suite starts: chains run side by side, steps in a chain in order."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from supervise_child import say

Step = dict[str, object]


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    step: Step
    log: Path


def run_prepare(steps: list[Step], run_dir: Path, *, stopping: Callable[[], bool]) -> bool:
    """Run every step; False (after reporting it) as soon as one fails or a stop is asked."""
    chains: dict[str, list[Step]] = {}
    for index, step in enumerate(steps):
        chains.setdefault(str(step.get("chain", f"step-{index}")), []).append(step)
    running: dict[str, _Running] = {}
    while chains or running:
        for name in [n for n in chains if n not in running]:
            running[name] = _start(chains[name].pop(0), run_dir / f"prepare-{name}.log")
            if not chains[name]:
                del chains[name]
        time.sleep(0.05)
        failed = next((r for r in running.values() if r.process.poll() not in (None, 0)), None)
        if failed is not None or stopping():
            for other in running.values():
                if other.process.poll() is None:
                    other.process.terminate()
                other.process.wait()
            if failed is not None:
                _report(failed)
            return False
        for name in [n for n, r in running.items() if r.process.poll() == 0]:
            del running[name]
    return True


def _start(step: Step, log: Path) -> _Running:
    argv = _argv(step)
    say(f"== {step.get('label', ' '.join(argv))}")
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return _Running(process, step, log)


def _argv(step: Step) -> list[str]:
    argv = step["argv"]
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def _report(failed: _Running) -> None:
    tail = failed.log.read_text(errors="replace").strip().splitlines()[-8:]
    say(f"error: `{' '.join(_argv(failed.step))}` failed with status {failed.process.returncode}")
    for line in tail:
        say(f"    {line}")
    if failed.step.get("hint"):
        say(f"hint: {failed.step['hint']}")
