"""Server-Sent Events for tests: a stream read in the background by a real SSE client.

Events are parsed by httpx-sse (as a client would) and kept with their arrival times, so a
test can ask how soon a change arrived, whether nothing came, and how the stream ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from httpx_sse import EventSource, ServerSentEvent


@dataclass(frozen=True, slots=True)
class Received:
    """An event and when it arrived (`time.perf_counter()`)."""

    event: ServerSentEvent
    at: float


class StreamEnded(Exception):
    """The stream ended before the event a test waited for."""


class OpenStream:
    """One SSE answer, read in the background while the test goes on."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.received: list[Received] = []
        #: Set once the answer ended: cleanly (`error` None) or not.
        self.done = asyncio.Event()
        self.error: BaseException | None = None
        self._arrived = asyncio.Event()
        self._taken = 0

    async def _read(self) -> None:
        try:
            if self.response.status_code == 200:
                async for event in EventSource(self.response).aiter_sse():
                    self.received.append(Received(event, time.perf_counter()))
                    self._arrived.set()
            else:
                await self.response.aread()
        except Exception as exc:
            self.error = exc
        finally:
            self.done.set()
            self._arrived.set()

    async def next(self, within: float = 5.0) -> Received:
        """The next event not taken yet (TimeoutError after `within` s; StreamEnded if the
        stream ended first)."""
        async with asyncio.timeout(within):
            while self._taken >= len(self.received):
                if self.done.is_set():
                    raise StreamEnded(f"the stream ended ({self.error!r})")
                self._arrived.clear()
                await self._arrived.wait()
        self._taken += 1
        return self.received[self._taken - 1]

    async def quiet_for(self, seconds: float) -> bool:
        """Whether no new event came (and the stream stayed open) for `seconds`."""
        taken = len(self.received)
        await asyncio.sleep(seconds)
        return len(self.received) == taken and not self.done.is_set()

    async def end(self, within: float = 5.0) -> None:
        """Wait for the server to end the stream; raise what broke it if it did not end cleanly."""
        async with asyncio.timeout(within):
            await self.done.wait()
        if self.error is not None:
            raise self.error


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
) -> AsyncIterator[OpenStream]:
    """GET an event stream (its headers read), read it in the background; drop it on exit."""
    sent = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    async with client.stream("GET", url, headers=sent) as response:
        stream = OpenStream(response)
        task = asyncio.create_task(stream._read(), name=f"read {url}")
        try:
            yield stream
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
