"""Child processes and threads in tests, never waited for without a deadline.

A wait that runs out fails saying what it waited for, with the process's output so far (a
CI log that only says "timed out" sends one hunting); the process is killed first, so
nothing it holds (a port, a pipe) outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, AnyStr, NoReturn

#: How long a killed process may take to be gone (SIGKILL cannot be ignored).
KILLED_SECONDS = 30.0
#: How much of a process's output a failure message quotes (its end).
QUOTED_CHARACTERS = 4000


def quote(data: bytes | str | None) -> str:
    """The end of a process's output, as text for a failure message."""
    if data is None:
        return "(not captured)"
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if not text:
        return "(nothing)"
    return text if len(text) <= QUOTED_CHARACTERS else "..." + text[-QUOTED_CHARACTERS:]


def kill(process: subprocess.Popen[Any]) -> None:
    """Kill `process` if it still runs, and reap it (fails if it outlives SIGKILL)."""
    if process.poll() is None:
        process.kill()
    try:
        process.wait(KILLED_SECONDS)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"process {process.pid} ({process.args!r}) outlived SIGKILL by {KILLED_SECONDS:.0f} s"
        ) from None


def communicate(
    process: subprocess.Popen[AnyStr], timeout: float, what: str
) -> tuple[AnyStr, AnyStr]:
    """`process.communicate()` within `timeout` s; past it, kill the process and fail with
    `what` (what the process was expected to do) and its output so far."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        out: bytes | str | None = expired.stdout
        err: bytes | str | None = expired.stderr
        kill(process)
        try:  # after the kill, whatever it wrote (a child of its own may hold the pipes)
            out, err = process.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            pass
        raise AssertionError(
            f"{what}: the process was still running after {timeout:.0f} s (killed now)\n"
            f"--- its stdout:\n{quote(out)}\n--- its stderr:\n{quote(err)}"
        ) from None


def read_lines_until(
    process: subprocess.Popen[Any], found: Callable[[str], bool], timeout: float, what: str
) -> list[str]:
    """The lines of `process`'s stdout up to the first one `found` says is it, within `timeout`.

    Reads the pipe itself a byte at a time, never past that line: what comes after is left
    for a later `communicate()`. Fails with `what` and the lines so far if the line does not
    come in time or the output ends first.
    """
    assert process.stdout is not None, "stdout is not a pipe"
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    current = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            _fail(process, what, f"not within {timeout:.0f} s", lines, current)
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        byte = os.read(fd, 1)
        if not byte:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)  # its output ended: it is exiting (its status is worth saying)
            _fail(process, what, "its output ended first", lines, current)
        if byte != b"\n":
            current += byte
            continue
        lines.append(current.decode("utf-8", "replace"))
        current.clear()
        if found(lines[-1]):
            return lines


def _fail(
    process: subprocess.Popen[Any], what: str, why: str, lines: list[str], current: bytearray
) -> NoReturn:
    seen = "\n".join([*lines, current.decode("utf-8", "replace")])
    err: bytes | str | None = None
    if process.poll() is not None:  # it ended: the rest of its output is there to be read
        try:
            rest, err = process.communicate(timeout=5)
            seen += rest.decode("utf-8", "replace") if isinstance(rest, bytes) else rest or ""
        except (subprocess.TimeoutExpired, ValueError):
            pass
    state = "it still runs" if process.poll() is None else f"it exited with {process.returncode}"
    raise AssertionError(
        f"{what}: {why} ({state})\n"
        f"--- its stdout so far:\n{quote(seen)}\n--- its stderr:\n{quote(err)}"
    )


def join(thread: threading.Thread, timeout: float, what: str) -> None:
    """Wait for `thread` to end within `timeout` s; fail with `what` if it does not."""
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{what}: thread {thread.name} still running after {timeout:.0f} s")
