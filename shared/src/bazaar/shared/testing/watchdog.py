"""A per-test watchdog: a hung test fails with its stacks instead of stalling the whole run.

A test (setup, call and teardown) that runs longer than the limit gets, on the terminal,
every thread's stack and every asyncio task's stack. Then the watchdog steps in, in rounds
spread over a grace period:

- the asyncio tasks that belong to the test are cancelled: those running code of the test's
  own module, a conftest, the test toolkit (`bazaar.shared.testing`) or pytest-asyncio (the
  tasks that run fixtures' setup and teardown), so a hang in a fixture is cut too;
- the main thread is interrupted (a signal whose handler raises `Failed` where it is stuck)
  when the event loop does not answer (a blocking call: `time.sleep`, a pipe read, a
  `join`, ...), and, until an interruption got through, when there was no task to cancel
  and in the last round. Only during the test's setup, call or teardown: never while
  pytest itself runs (making the report), where it would be pytest's internal error.

Each round also catches a second hang in the clean-up the first one set off (a `finally`
that waits again). The test then fails and the run goes on. If it is still not finished at
the end of the grace (stuck where neither can reach, e.g. C code ignoring signals), the
process exits with status 3 after a summary naming the test, so a CI run ends with a
diagnosis instead of its own time limit. A process that does not exit `limit` seconds after
pytest is done (a thread that never ends) is ended the same way.

The limit is `BAZAAR_TEST_TIMEOUT` seconds (default 600; 0 turns the watchdog off), the
grace `BAZAAR_TEST_TIMEOUT_GRACE` seconds (default 60). A test known to run longer says so
with `@pytest.mark.watchdog_limit(seconds)`.
"""

from __future__ import annotations

import asyncio
import faulthandler
import linecache
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import CoroutineType, FrameType, GeneratorType
from typing import Any

import pytest
import pytest_asyncio

DEFAULT_LIMIT_SECONDS = 600.0
DEFAULT_GRACE_SECONDS = 60.0
EXIT_STATUS = 3
#: The signal that interrupts the main thread (as pytest-timeout's signal method does).
INTERRUPT_SIGNAL = signal.SIGALRM
#: Rounds of cancelling and interrupting within the grace, before giving up.
ROUNDS = 4
#: How long a round waits for the event loop to run its callback (a live loop takes ms).
LOOP_ANSWER_SECONDS = 10.0
#: How many of the main thread's innermost frames the closing summary shows.
SUMMARY_FRAMES = 12
#: How many lines of the asyncio task report the closing summary repeats.
SUMMARY_TASK_LINES = 60
#: Code whose tasks are the test's own when they are running: the test toolkit, and
#: pytest-asyncio (it runs each async fixture's setup and teardown as a task of its own).
FIXTURE_CODE = (
    str(Path(__file__).parent) + os.sep,
    str(Path(pytest_asyncio.__file__ or "pytest_asyncio").parent) + os.sep,
)

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


def _describe(task: asyncio.Task[Any], frames: list[FrameType]) -> list[str]:
    lines = [f"--- asyncio task {task.get_name()} (its await chain, outermost first)"]
    for frame in frames:
        code = frame.f_code
        line = linecache.getline(code.co_filename, frame.f_lineno).strip()
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        lines.append(f"    {line}")
    return lines


def is_the_tests(filename: str, path: Path) -> bool:
    """Whether code in `filename` is the test's own: its module, a conftest above it, the
    test toolkit or pytest-asyncio's fixture runner."""
    if filename == str(path) or filename.startswith(FIXTURE_CODE):
        return True
    return Path(filename).name == "conftest.py" and Path(filename).parent in path.parents


@dataclass
class _Run:
    """One watched test."""

    nodeid: str
    path: Path
    limit: float
    finished: threading.Event = field(default_factory=threading.Event)
    tasks_report: list[str] = field(default_factory=list)
    #: How many times the signal handler raised in the main thread.
    interruptions: int = 0
    #: Whether the test's own code may be running: its setup, call or teardown phase (not
    #: pytest making its report, where an interruption would be pytest's internal error).
    in_phase: bool = False


class Watchdog:
    """Watches one test at a time; `loop` is the session's event loop once known."""

    def __init__(self, limit: float, grace: float | None = None) -> None:
        self.limit = limit
        self.grace = (
            _seconds("BAZAAR_TEST_TIMEOUT_GRACE", DEFAULT_GRACE_SECONDS) if grace is None else grace
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._run: _Run | None = None
        #: The run the main thread is to be interrupted in (read by the signal handler).
        self._interrupting: _Run | None = None

    def start(self, nodeid: str, path: Path, limit: float | None = None) -> None:
        """Begin watching a test (called on the main thread); `limit` overrides the limit."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(INTERRUPT_SIGNAL, self._on_signal)
        run = self._run = _Run(nodeid, path, self.limit if limit is None else limit)
        threading.Thread(target=self._watch, args=(run,), name="watchdog", daemon=True).start()

    @contextmanager
    def phase(self) -> Iterator[None]:
        """Inside the block the test's setup, call or teardown runs (it may be interrupted)."""
        run = self._run
        if run is None:
            yield
            return
        run.in_phase = True
        try:
            yield
        finally:
            run.in_phase = False

    def stop(self) -> None:
        """The test finished."""
        if self._run is not None:
            self._run.finished.set()
        self._run = self._interrupting = None

    def _watch(self, run: _Run) -> None:
        if run.finished.wait(run.limit):
            return
        _say(f"\nwatchdog: {run.nodeid} still running after {run.limit:.0f} s; its stacks follow")
        faulthandler.dump_traceback(file=_terminal_fd, all_threads=True)
        began = time.monotonic()
        deadline = began + self.grace
        step = self.grace / ROUNDS
        for round_ in range(1, ROUNDS + 1):
            cancelled = self._cancel_on_loop(run, round_, min(step, LOOP_ANSWER_SECONDS))
            if run.finished.is_set():
                break
            # Once an interruption got through, the test is failing: pytest's own code runs
            # (its loop too) and must not be interrupted unless the main thread blocks again.
            if cancelled is None:
                self._interrupt(run, round_, "no event loop answered")
            elif run.interruptions == 0 and cancelled == 0:
                self._interrupt(run, round_, "no task of the test to cancel")
            elif run.interruptions == 0 and round_ == ROUNDS:
                self._interrupt(run, round_, "the last round")
            if run.finished.wait(max(0.0, began + step * round_ - time.monotonic())):
                break
        if run.finished.wait(max(0.0, deadline - time.monotonic())):
            _say(f"watchdog: {run.nodeid} ended {time.monotonic() - began:.1f} s after its limit")
            return
        self._give_up(run)

    def _cancel_on_loop(self, run: _Run, round_: int, wait: float) -> int | None:
        """Cancel the test's tasks on the loop; how many, or None if the loop did not answer."""
        loop = self.loop
        if loop is None or not loop.is_running():
            return None
        result: list[int] = []
        answered, late = threading.Event(), threading.Event()

        def on_loop() -> None:
            # Run late (the loop was blocked), the test may be over and the next one running.
            if not late.is_set() and not run.finished.is_set():
                result.append(self._dump_and_cancel(run, round_))
            answered.set()

        try:
            loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # closed meanwhile
            return None
        if not answered.wait(wait):
            late.set()
            _say(f"watchdog: the event loop did not answer within {wait:.1f} s (round {round_})")
            return None
        return result[0] if result else None

    def _dump_and_cancel(self, run: _Run, round_: int) -> int:
        """On the loop: show the tasks' stacks (every task in the first round) and cancel
        those running the test's code."""
        cancelled = 0
        for task in asyncio.all_tasks():
            frames = list(_frames(task))
            mine = any(is_the_tests(frame.f_code.co_filename, run.path) for frame in frames)
            if round_ == 1 or mine:
                lines = _describe(task, frames)
                for text in lines:
                    _say(text)
                if mine:
                    run.tasks_report.extend(lines)
            if mine:
                task.cancel(f"watchdog: {run.nodeid} ran longer than {run.limit:.0f} s")
                cancelled += 1
        _say(f"watchdog: cancelled {cancelled} task(s) of {run.nodeid} (round {round_})")
        return cancelled

    def _interrupt(self, run: _Run, round_: int, why: str) -> None:
        """Make the main thread raise `Failed` where it is (the signal ends a blocking call)."""
        main = threading.main_thread().ident
        if signal.getsignal(INTERRUPT_SIGNAL) != self._on_signal or main is None:
            _say(f"watchdog: cannot interrupt the main thread: {INTERRUPT_SIGNAL.name} is taken")
            return
        if not run.in_phase:
            _say(f"watchdog: not interrupting {run.nodeid} ({why}): pytest's own code runs")
            return
        self._interrupting = run
        _say(f"watchdog: interrupting the main thread of {run.nodeid} ({why}; round {round_})")
        signal.pthread_kill(main, INTERRUPT_SIGNAL)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        run = self._interrupting
        if run is None or run.finished.is_set() or not run.in_phase:
            return
        self._interrupting = None
        run.interruptions += 1
        raise pytest.fail.Exception(
            f"watchdog: {run.nodeid} ran longer than {run.limit:.0f} s and was interrupted "
            "(the traceback shows where it was stuck, just above this handler)"
        )

    def _give_up(self, run: _Run) -> None:
        _say(f"watchdog: {run.nodeid} did not end {self.grace:.0f} s after; exiting")
        faulthandler.dump_traceback(file=_terminal_fd, all_threads=True)
        self._summarise(run)
        sys.stdout.flush()
        os._exit(EXIT_STATUS)

    def _summarise(self, run: _Run) -> None:
        """The closing lines: the test, its cancelled tasks, where the main thread is stuck."""
        _say(f"\nwatchdog summary: {run.nodeid} hung")
        for text in run.tasks_report[-SUMMARY_TASK_LINES:]:
            _say(text)
        main = sys._current_frames().get(threading.main_thread().ident or 0)
        if main is not None:
            _say(f"--- main thread, its {SUMMARY_FRAMES} innermost frames (innermost last)")
            for text in traceback.format_stack(main)[-SUMMARY_FRAMES:]:
                _say(text.rstrip("\n"))
        _say(f"watchdog: exiting with status {EXIT_STATUS}: {run.nodeid} hung")

    def watch_exit(self, status: int) -> None:
        """pytest is done: end the process if it has not exited `limit` seconds from now (a
        thread that never ends keeps it alive), with its threads' stacks and `status`."""

        def expired() -> None:
            _say(f"\nwatchdog: pytest ended {self.limit:.0f} s ago but the process has not "
                 "exited; its threads follow")  # fmt: skip
            faulthandler.dump_traceback(file=_terminal_fd, all_threads=True)
            _say(f"watchdog: exiting with status {status or EXIT_STATUS}: the process hung at exit")
            os._exit(status or EXIT_STATUS)

        timer = threading.Timer(self.limit, expired)
        timer.daemon = True
        timer.start()
