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


def test_after_it():
    assert True
"""

HUNG_BLOCKING_THE_LOOP = """
import time


async def test_blocks_the_loop():
    time.sleep(120)


def test_after_it():
    assert True
"""

# A test that swallows the interruption and blocks again: only the exit is left.
HUNG_FOR_GOOD = """
import time


def test_blocks():
    while True:
        try:
            time.sleep(120)
        except BaseException:
            pass


def test_never_reached():
    assert True
"""

# The clean-up the cancellation sets off hangs as well (a `finally` waiting again).
HUNG_TWICE = """
import asyncio


async def test_hangs_in_its_cleanup_too():
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.Event().wait()


def test_after_it():
    assert True
"""

# A fixture whose code lives in neither the test module nor a conftest.
HUNG_FIXTURE_HELPER = """
import asyncio

import pytest_asyncio


@pytest_asyncio.fixture
async def never_ready():
    await asyncio.Event().wait()
    yield
"""

HUNG_IN_A_FIXTURE = """
from hang_helper import never_ready


async def test_needs_it(never_ready):
    assert True


def test_after_it():
    assert True
"""

LEAVES_A_THREAD = """
import threading
import time


def test_leaves_a_thread_that_never_ends():
    threading.Thread(target=time.sleep, args=(3600,), name="forever").start()
"""


LONG_BUT_SAID_SO = """
import time

import pytest


@pytest.mark.watchdog_limit(30)
def test_long_by_design():
    time.sleep(2)
"""


def run_pytest(
    tmp_path: Path, source: str, limit: str, **helpers: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "test_hung.py").write_text(textwrap.dedent(source))
    for name, text in helpers.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    env = {**os.environ, "BAZAAR_TEST_TIMEOUT": limit, "BAZAAR_TEST_TIMEOUT_GRACE": "2"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
         "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=session",
         "-o", "asyncio_default_test_loop_scope=session", str(tmp_path / "test_hung.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False,
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


def test_a_test_stuck_in_a_blocking_call_is_interrupted_and_the_next_test_runs(
    tmp_path: Path,
) -> None:
    done, took = run_pytest(tmp_path, HUNG_BLOCKING, "1")
    out = done.stdout + done.stderr
    assert "1 failed, 1 passed" in out, out
    assert "interrupting the main thread of test_hung.py::test_blocks" in out
    # The failure says why and where: the line it was stuck on.
    assert "Failed: watchdog: test_hung.py::test_blocks ran longer than 1 s" in out, out
    assert "time.sleep(120)" in done.stdout
    assert took < 30


def test_a_blocking_call_inside_an_async_test_is_interrupted(tmp_path: Path) -> None:
    done, _ = run_pytest(tmp_path, HUNG_BLOCKING_THE_LOOP, "1")
    out = done.stdout + done.stderr
    assert "1 failed, 1 passed" in out, out
    assert "the event loop did not answer within" in out
    assert "Failed: watchdog: test_hung.py::test_blocks_the_loop ran longer than 1 s" in out


def test_a_hang_in_the_cleanup_the_cancellation_set_off_is_cancelled_too(
    tmp_path: Path,
) -> None:
    done, _ = run_pytest(tmp_path, HUNG_TWICE, "1")
    out = done.stdout + done.stderr
    assert "1 failed, 1 passed" in out, out
    assert "cancelled 1 task(s) of test_hung.py::test_hangs_in_its_cleanup_too (round 1)" in out
    assert "cancelled 1 task(s) of test_hung.py::test_hangs_in_its_cleanup_too (round 2)" in out


def test_a_hang_in_a_fixture_from_another_module_is_cancelled(tmp_path: Path) -> None:
    done, _ = run_pytest(tmp_path, HUNG_IN_A_FIXTURE, "1", hang_helper=HUNG_FIXTURE_HELPER)
    out = done.stdout + done.stderr
    assert "1 passed, 1 error" in out, out
    assert "in never_ready\n    await asyncio.Event().wait()\n" in out
    assert "watchdog: cancelled 1 task(s) of test_hung.py::test_needs_it" in out


def test_a_test_that_cannot_be_interrupted_ends_the_run_with_its_stack(tmp_path: Path) -> None:
    done, took = run_pytest(tmp_path, HUNG_FOR_GOOD, "1")
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


def test_a_process_that_does_not_exit_after_the_run_is_ended_with_its_threads(
    tmp_path: Path,
) -> None:
    done, took = run_pytest(tmp_path, LEAVES_A_THREAD, "1")
    out = done.stdout + done.stderr
    assert "1 passed" in done.stdout, out
    assert done.returncode == EXIT_STATUS, out
    assert "the process has not exited; its threads follow" in out
    assert "in _shutdown" in out  # the main thread waits for the thread to end
    assert done.stderr.rstrip().splitlines()[-1] == (
        f"watchdog: exiting with status {EXIT_STATUS}: the process hung at exit"
    )
    assert took < 30


def test_without_a_hang_the_watchdog_says_nothing(tmp_path: Path) -> None:
    done, _ = run_pytest(tmp_path, "def test_quick():\n    assert True\n", "5")
    assert done.returncode == 0
    assert "watchdog" not in done.stdout + done.stderr


def test_a_test_marked_with_a_longer_limit_is_left_alone_until_then(tmp_path: Path) -> None:
    done, _ = run_pytest(tmp_path, LONG_BUT_SAID_SO, "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "watchdog" not in done.stdout + done.stderr
