"""The notice that the server stops taking requests: long-lived answers (streams) end then.

A server stopping gracefully lets the requests in flight finish; a stream never finishes on
its own, so it would be cut at the end of the grace period, mid-event. The server sets the
app's stop notice as it stops accepting; what serves streams ends them cleanly at once, and
clients reconnect (with `Last-Event-ID`) to another replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from bazaar.shared.tasks import cancel_and_wait


def stop_notice(app: Starlette) -> asyncio.Event:
    """The app's stop notice (made on first use): set by the server when it begins to stop."""
    notice: asyncio.Event | None = getattr(app.state, "stopping", None)
    if notice is None:
        notice = app.state.stopping = asyncio.Event()
    return notice


@asynccontextmanager
async def when_stopping(app: Starlette, callback: Callable[[], object]) -> AsyncIterator[None]:
    """Inside the block, call `callback` once the app's stop notice is set."""
    notice = stop_notice(app)

    async def wait() -> None:
        await notice.wait()
        callback()

    task = asyncio.create_task(wait(), name="wait for the stop notice")
    try:
        yield
    finally:
        await cancel_and_wait(task)
