"""A per-test watchdog: a hung test fails with its stacks instead of stalling the whole run.

A test (setup, call and teardown) that runs longer than the limit gets, on the terminal,
every thread's stack and every asyncio task's stack; the tasks running code of the test's
own module (or a conftest) are then cancelled, so the test fails with CancelledError and
the run goes on. If it is still not finished a grace period later (stuck in code that a
cancellation cannot reach, e.g. a blocking call), the process exits with status 3, so a CI
run ends with a diagnosis instead of its own time limit.

The limit is `BAZAAR_TEST_TIMEOUT` seconds (default 600; 0 turns the watchdog off), the
grace `BAZAAR_TEST_TIMEOUT_GRACE` seconds (default 60).
"""

from __future__ import annotations

import asyncio
import faulthandler
import linecache
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import CoroutineType, FrameType, GeneratorType
from typing import Any

DEFAULT_LIMIT_SECONDS = 600.0
DEFAULT_GRACE_SECONDS = 60.0
EXIT_STATUS = 3
#: How many of the main thread's innermost frames the closing summary shows.
SUMMARY_FRAMES = 12
#: How many lines of the asyncio task report the closing summary repeats.
SUMMARY_TASK_LINES = 60

# The terminal as it was before pytest captured file descriptor 2 (this module is imported
# when the plugin loads, before capturing starts): what the watchdog says is always seen.
_terminal_fd = os.dup(2)
_terminal = os.fdopen(_terminal_fd, "w", buffering=1, closefd=False)


def _seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def limit_seconds() -> float:
    """The configured limit per test (0: no watchdog)."""
    return _seconds("BAZAAR_TEST_TIMEOUT", DEFAULT_LIMIT_SECONDS)


def _say(text: str) -> None:
    _terminal.write(text + "\n")
    _terminal.flush()


def _frames(task: asyncio.Task[Any]) -> Iterator[FrameType]:
    """The frames of a task's coroutine chain, outermost first."""
    awaitable: Any = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            yield frame
        if isinstance(awaitable, CoroutineType):
            awaitable = awaitable.cr_await
        elif isinstance(awaitable, GeneratorType):
            awaitable = awaitable.gi_yieldfrom
        else:
            awaitable = getattr(awaitable, "cr_await", None)


class Watchdog:
    """Watches one test at a time; `loop` is the session's event loop once known."""

    def __init__(self, limit: float, grace: float | None = None) -> None:
        self.limit = limit
        self.grace = (
            _seconds("BAZAAR_TEST_TIMEOUT_GRACE", DEFAULT_GRACE_SECONDS) if grace is None else grace
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timers: list[threading.Timer] = []
        self._finished = threading.Event()
        self._tasks_report: list[str] = []

    def start(self, nodeid: str, path: Path) -> None:
        """Begin watching a test."""
        self._finished = threading.Event()
        finished = self._finished
        timer = threading.Timer(self.limit, self._expired, args=(nodeid, path, finished))
        timer.daemon = True
        timer.start()
        self._timers = [timer]

    def stop(self) -> None:
        """The test finished."""
        self._finished.set()
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def _expired(self, nodeid: str, path: Path, finished: threading.Event) -> None:
        if finished.is_set():
            return
        _say(f"\nwatchdog: {nodeid} still running after {self.limit:.0f} s; its stacks follow")
        faulthandler.dump_traceback(file=_terminal_fd, all_threads=True)
        loop = self.loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._dump_and_cancel, nodeid, path)
        grace = threading.Timer(self.grace, self._give_up, args=(nodeid, finished))
        grace.daemon = True
        grace.start()
        self._timers.append(grace)

    def _dump_and_cancel(self, nodeid: str, path: Path) -> None:
        """On the loop: show every task's stack and cancel those running the test's code."""
        ours = {str(path), *(str(p / "conftest.py") for p in path.parents)}
        cancelled = 0
        report: list[str] = []
        for task in asyncio.all_tasks():
            frames = list(_frames(task))
            mine = any(frame.f_code.co_filename in ours for frame in frames)
            lines = [f"--- asyncio task {task.get_name()} (its await chain, outermost first)"]
            for frame in frames:
                code = frame.f_code
                line = linecache.getline(code.co_filename, frame.f_lineno).strip()
                where = f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}'
                lines.append(where)
                lines.append(f"    {line}")
            for text in lines:
                _say(text)
            if mine:
                report.extend(lines)
                task.cancel(f"watchdog: {nodeid} ran longer than {self.limit:.0f} s")
                cancelled += 1
        self._tasks_report = report
        _say(f"watchdog: cancelled {cancelled} task(s) of {nodeid}")

    def _give_up(self, nodeid: str, finished: threading.Event) -> None:
        if finished.is_set():
            return
        _say(f"watchdog: {nodeid} did not end {self.grace:.0f} s after; exiting")
        faulthandler.dump_traceback(file=_terminal_fd, all_threads=True)
        self._summarise(nodeid)
        sys.stdout.flush()
        os._exit(EXIT_STATUS)

    def _summarise(self, nodeid: str) -> None:
        """The closing lines: the test, its cancelled tasks, where the main thread is stuck."""
        _say(f"\nwatchdog summary: {nodeid} hung")
        for text in self._tasks_report[-SUMMARY_TASK_LINES:]:
            _say(text)
        main = sys._current_frames().get(threading.main_thread().ident or 0)
        if main is not None:
            _say(f"--- main thread, its {SUMMARY_FRAMES} innermost frames (innermost last)")
            for text in traceback.format_stack(main)[-SUMMARY_FRAMES:]:
                _say(text.rstrip("\n"))
        _say(f"watchdog: exiting with status {EXIT_STATUS}: {nodeid} hung")
