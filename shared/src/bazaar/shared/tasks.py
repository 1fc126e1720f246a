"""Background housekeeping: run a job at an interval for as long as the app lives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

log = logging.getLogger("bazaar.tasks")


async def _every(interval: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            result = await job()
            log.info("%s done", name, extra={"job": name, "result": result})
        except Exception:
            log.exception("%s failed; will retry", name, extra={"job": name})


@asynccontextmanager
async def periodically(
    interval: float, job: Callable[[], Awaitable[object]], *, name: str
) -> AsyncIterator[None]:
    """Run `job` every `interval` seconds inside the block; a failure waits for the next turn."""
    task = asyncio.create_task(_every(interval, job, name), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
