"""Reading a client's request body whole, bounded in size, time and memory, before it goes
upstream.

Nothing is sent upstream until the body is in: a client that stalls or aborts its upload
costs the upstream nothing, holds none of its connections or slots, and cannot be mistaken
for an upstream failure (API.md, "Limits and failures"). Bodies being held, all clients
together, stay within a byte budget, so stalled uploads cannot exhaust the gateway's memory.

Nor can they take the budget from other clients: it counts the bytes that arrived (not a
declared `Content-Length`), and when a body does not fit, the uploads that have been
arriving for longer than `EVICT_AFTER_SECONDS` (a well-behaved body of at most 1 MiB takes
milliseconds) are cut, oldest first, with 408, to make room. Only a budget full of uploads
younger than that (a real overload, not a stalled client) answers 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import StreamReader, web
from aiohttp.http import HttpVersion11

from bazaar.gateway.errors import (
    BodyBudgetExhausted,
    ClientClosedRequest,
    PayloadTooLarge,
    RequestTimeout,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


#: An upload still arriving after this long may be cut when another body needs room.
EVICT_AFTER_SECONDS = 1.0


class BodyEvicted(Exception):
    """Set on an upload's stream when its bytes were taken back to make room for others."""


class Upload:
    """A body being read: when it began, what it holds, its stream (to cut it)."""

    __slots__ = ("content", "held", "started")

    def __init__(self, content: StreamReader, started: float) -> None:
        self.content = content
        self.started = started
        self.held = 0


class BodyBudget:
    """Bytes of request bodies held at once, all requests together."""

    def __init__(
        self,
        limit: int,
        *,
        evict_after: float = EVICT_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.held = 0
        self._evict_after = evict_after
        self._clock = clock
        self._uploads: dict[Upload, None] = {}  # still arriving, oldest first

    def begin(self, content: StreamReader) -> Upload:
        """An upload starts arriving: it may be cut for room once it is old enough."""
        upload = Upload(content, self._clock())
        self._uploads[upload] = None
        return upload

    def end(self, upload: Upload, *, keep: bool) -> None:
        """The upload is in (`keep`: its bytes stay held until given back) or failed."""
        self._uploads.pop(upload, None)
        if not keep:
            self.give_back(upload.held)
            upload.held = 0

    def take(self, size: int, upload: Upload | None = None) -> None:
        """Hold `size` more bytes, cutting old uploads to make room if need be; raise
        BodyBudgetExhausted (503) when they do not fit even so."""
        if self.held + size > self.limit:
            self._make_room(self.held + size - self.limit, upload)
        if self.held + size > self.limit:
            raise BodyBudgetExhausted(
                "The gateway holds too many request bodies right now.",
                headers={"Retry-After": "1"},
            )
        self.held += size
        if upload is not None:
            upload.held += size

    def give_back(self, size: int) -> None:
        """Release `size` bytes taken before."""
        self.held -= size

    def _make_room(self, needed: int, requester: Upload | None) -> None:
        """Cut the oldest uploads older than the grace, if together they free `needed`."""
        oldest = self._clock() - self._evict_after
        victims: list[Upload] = []
        freed = 0
        for upload in self._uploads:  # oldest first
            if upload.started > oldest or freed >= needed:
                break
            if upload is not requester and upload.held:
                victims.append(upload)
                freed += upload.held
        if freed < needed:
            return  # cutting them would not be enough: cut nobody
        for upload in victims:
            del self._uploads[upload]
            self.give_back(upload.held)
            upload.held = 0
            upload.content.set_exception(BodyEvicted())


async def expect_nothing(_request: web.Request) -> None:
    """Send no `100 Continue` when the request arrives: `read_body` sends it once the
    request passed its checks (size, identity, rate limit), so a refused body is never
    asked for."""


async def read_body(
    request: web.Request,
    *,
    budget: BodyBudget,
    limit: int,
    idle_seconds: float,
    total_seconds: float,
) -> bytearray:
    """The whole body, its bytes taken from `budget` as they arrive (the caller gives
    `len(body)` back): 413 past `limit` bytes, 503 past the budget, 408 when the client sent
    nothing for `idle_seconds`, not all of it within `total_seconds`, or was cut to make room
    for others, 499 when it went away."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The body exceeds {limit} bytes.")
    body = bytearray()
    upload = budget.begin(request.content)
    complete = False
    try:
        await _ask_for_body(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_seconds
        content = request.content
        while True:
            chunk = content.read_nowait()  # what has arrived: no timer needed
            if not chunk and not content.at_eof():
                chunk = await _next_chunk(content, loop, idle_seconds, deadline, total_seconds)
            if not chunk:
                break
            if len(body) + len(chunk) > limit:
                raise PayloadTooLarge(f"The body exceeds {limit} bytes.")
            budget.take(len(chunk), upload)
            body += chunk
        if length is not None and len(body) < length:  # (aiohttp reports a short body as lost)
            raise ClientClosedRequest("The body ended short of its Content-Length.")
        complete = True
    except BodyEvicted:
        raise RequestTimeout(
            "The body arrived too slowly while the gateway needed room for other requests."
        ) from None
    except ConnectionError:
        raise ClientClosedRequest("The client closed the connection mid-body.") from None
    finally:
        budget.end(upload, keep=complete)  # nothing is held for a body that failed
    return body


async def _ask_for_body(request: web.Request) -> None:
    if (
        request.version == HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
    ):
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # the answer itself has not started (as aiohttp does)


async def _next_chunk(
    content: StreamReader,
    loop: asyncio.AbstractEventLoop,
    idle_seconds: float,
    deadline: float,
    total_seconds: float,
) -> bytes:
    idle_until = loop.time() + idle_seconds
    try:
        async with asyncio.timeout_at(min(idle_until, deadline)):
            return await content.readany()
    except TimeoutError:
        if idle_until <= deadline:
            detail = f"The client sent nothing of its body for {idle_seconds:g} s."
        else:
            detail = f"The body did not arrive within {total_seconds:g} s."
        raise RequestTimeout(detail) from None
