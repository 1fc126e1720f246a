"""The per-test watchdog: a hung test fails with its stacks and the run goes on, or ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bazaar.shared.testing.watchdog import EXIT_STATUS

HUNG_ASYNC = """
import asyncio


async def waiting():
    await asyncio.Event().wait()


async def test_waits_forever():
    await waiting()


def test_after_it():
    assert True
"""

HUNG_BLOCKING = """
import time


def test_blocks():
    time.sleep(120)


def test_never_reached():
    assert True
"""


def run_pytest(
    tmp_path: Path, source: str, limit: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "test_hung.py").write_text(textwrap.dedent(source))
    env = {**os.environ, "BAZAAR_TEST_TIMEOUT": limit, "BAZAAR_TEST_TIMEOUT_GRACE": "2"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
         "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=session",
         "-o", "asyncio_default_test_loop_scope=session", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done, time.monotonic() - started


def test_a_hung_async_test_fails_with_its_task_stack_and_the_next_test_runs(
    tmp_path: Path,
) -> None:
    done, _ = run_pytest(tmp_path, HUNG_ASYNC, "1")
    out = done.stdout + done.stderr
    assert "1 failed, 1 passed" in out, out
    assert "watchdog: test_hung.py::test_waits_forever still running after 1 s" in out
    # The task's whole await chain, down to the line it waits on.
    assert "in test_waits_forever\n    await waiting()\n" in out
    assert "in waiting\n    await asyncio.Event().wait()\n" in out
    assert "watchdog: cancelled 1 task(s)" in out


def test_a_test_stuck_in_a_blocking_call_ends_the_run_with_its_stack(tmp_path: Path) -> None:
    done, took = run_pytest(tmp_path, HUNG_BLOCKING, "1")
    out = done.stdout + done.stderr
    assert done.returncode == EXIT_STATUS, out
    assert "did not end 2 s after; exiting" in out
    assert "in test_blocks" in out
    assert took < 30
    # A CI log keeps the tail: the last lines name the test and the line it is stuck on.
    tail = done.stderr.rstrip().splitlines()[-8:]
    last = f"watchdog: exiting with status {EXIT_STATUS}: test_hung.py::test_blocks hung"
    assert tail[-1] == last
    assert any("in test_blocks" in line for line in tail), tail
    assert any("time.sleep(120)" in line for line in tail), tail


def test_without_a_hang_the_watchdog_says_nothing(tmp_path: Path) -> None:
    done, _ = run_pytest(tmp_path, "def test_quick():\n    assert True\n", "5")
    assert done.returncode == 0
    assert "watchdog" not in done.stdout + done.stderr
