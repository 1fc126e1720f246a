"""Background housekeeping: run a job at an interval for as long as the app lives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from bazaar.shared.errors import is_outage

log = logging.getLogger("bazaar.tasks")

#: While the database is unavailable a job says so once per this many seconds.
OUTAGE_LOG_SECONDS = 10.0


class OutageLog:
    """One WARNING line, no traceback, when the database is out; one per interval after.

    An outage is expected and tells nothing a traceback could add (the next turn retries);
    many failures alike every second must not bury the log.
    """

    def __init__(self, name: str, interval: float = OUTAGE_LOG_SECONDS) -> None:
        self._name = name
        self._interval = interval
        self._next_at: float | None = None
        self._held = 0

    def record(self, exc: BaseException, count: int = 1) -> None:
        """Note `count` failures of this outage; log one line unless one was logged lately."""
        now = time.monotonic()
        if self._next_at is not None and now < self._next_at:
            self._held += count
            return
        held, self._held = self._held + count - 1, 0
        self._next_at = now + self._interval
        more = f" ({held} more failures since the last line)" if held else ""
        log.warning(
            "%s: database unavailable (%s); will retry%s",
            self._name,
            _describe(exc),
            more,
            extra={"job": self._name},
        )

    def end(self) -> None:
        """The database answered: the next outage is logged at once."""
        if self._next_at is not None:
            log.info("%s: database available again", self._name, extra={"job": self._name})
        self._next_at, self._held = None, 0


def _describe(exc: BaseException) -> str:
    """The first failure inside `exc` (a task group's), as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _every(
    interval: float, job: Callable[[], Awaitable[object]], name: str, done_level: int
) -> None:
    outages = OutageLog(name)
    while True:
        await asyncio.sleep(interval)
        try:
            result = await job()
        except Exception as exc:
            if is_outage(exc):
                outages.record(exc)
            else:
                log.exception("%s failed; will retry", name, extra={"job": name})
            continue
        outages.end()
        log.log(done_level, "%s done", name, extra={"job": name, "result": result})


@asynccontextmanager
async def periodically(
    interval: float,
    job: Callable[[], Awaitable[object]],
    *,
    name: str,
    done_level: int = logging.INFO,
) -> AsyncIterator[None]:
    """Run `job` every `interval` seconds inside the block; a failure waits for the next turn.

    Each turn that succeeds is logged at `done_level` with its result (`logging.DEBUG` for a
    job whose every turn is routine, such as refreshing a gauge).
    """
    task = asyncio.create_task(_every(interval, job, name, done_level), name=name)
    try:
        yield
    finally:
        await cancel_and_wait(task)


#: A task not ended by its cancellation is cancelled again after this many seconds.
RECANCEL_SECONDS = 1.0


async def cancel_and_wait(
    task: asyncio.Task[Any], *, again_after: float = RECANCEL_SECONDS
) -> None:
    """Cancel `task` and wait until it ended, cancelling it again every `again_after` s.

    One cancellation is not always enough: a library call the task is in may swallow it
    (aio-pika/aiormq turn a cancellation during a broken connection's call into their own
    error, which a loop that survives errors then catches and goes on), and whoever waits
    for the task would wait for ever. A cancellation of the caller itself still propagates
    (the task is left cancelled, not awaited, then).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=again_after)
    if not task.cancelled():
        task.exception()  # retrieved: its failure is the task's owner's to report


async def wait_at_most(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` passed; answer whether it is set.

    Written with `asyncio.timeout`, never `asyncio.wait_for`: on Python 3.11 a `wait_for`
    whose event fires just as its task is cancelled swallows the cancellation (CPython
    gh-86296), and a loop built on it (the outbox relay) then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
