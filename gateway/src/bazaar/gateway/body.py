"""Reading a client's request body whole, bounded in size, time and memory, before it goes
upstream.

Nothing is sent upstream until the body is in: a client that stalls or aborts its upload
costs the upstream nothing, holds none of its connections or slots, and cannot be mistaken
for an upstream failure (API.md, "Limits and failures"). Bodies being held, all clients
together, stay within a byte budget, so stalled uploads cannot exhaust the gateway's memory.

Nor can they take the budget from other clients: it counts the bytes that arrived (not a
declared `Content-Length`), and a body that does not fit cuts, with 408, the uploads that
sent nothing for `STALLED_AFTER_SECONDS`, the longest silent first. A steady upload, however
slow, is never cut. When nothing stalled can make room yet, the body waits for room (its
client is not read meanwhile) up to `ROOM_WAIT_SECONDS`: the stalled uploads become
cuttable, or bodies are forwarded and give their bytes back. Only a budget still full of
bodies arriving or being forwarded after that (a real overload) answers 503.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import StreamReader, web
from aiohttp.http import HttpVersion11

from bazaar.gateway.errors import (
    BodyBudgetExhausted,
    ClientClosedRequest,
    PayloadTooLarge,
    RequestTimeout,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


#: An upload that sent nothing for this long may be cut when another body needs room.
STALLED_AFTER_SECONDS = 1.0
#: How long a body waits for room in a full budget before it is answered 503.
ROOM_WAIT_SECONDS = 2.0
#: How often a body waiting for room looks again for uploads that have stalled meanwhile.
_ROOM_POLL_SECONDS = 0.1


class BodyEvicted(Exception):
    """Set on an upload's stream when its bytes were taken back to make room for others."""


class Upload:
    """A body being read: what it holds, when it last sent something, its stream (to cut it)."""

    __slots__ = ("content", "held", "last", "waiting")

    def __init__(self, content: StreamReader, now: float) -> None:
        self.content = content
        self.held = 0
        self.last = now  # when it last sent bytes (or began)
        self.waiting = False  # held back by the budget, not by its client: never cut


class BodyBudget:
    """Bytes of request bodies held at once, all requests together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._uploads: dict[Upload, None] = {}  # still arriving
        self._freed = asyncio.Event()

    def begin(self, content: StreamReader) -> Upload:
        """An upload starts arriving: it may be cut for room once it stalls."""
        upload = Upload(content, time.monotonic())
        self._uploads[upload] = None
        return upload

    def end(self, upload: Upload, *, keep: bool) -> None:
        """The upload is in (`keep`: its bytes stay held until given back) or failed."""
        self._uploads.pop(upload, None)
        if not keep:
            self.give_back(upload.held)
            upload.held = 0

    async def take(self, size: int, upload: Upload) -> None:
        """Hold `size` more bytes for `upload`, cutting stalled uploads to make room, waiting
        for room up to the room wait; BodyBudgetExhausted (503) when there is none by then."""
        deadline: float | None = None
        while self.held + size > self.limit and not self._make_room(
            self.held + size - self.limit, upload
        ):
            now = time.monotonic()
            deadline = now + ROOM_WAIT_SECONDS if deadline is None else deadline
            if now >= deadline:
                raise BodyBudgetExhausted(
                    "The gateway holds too many request bodies right now.",
                    headers={"Retry-After": "1"},
                )
            upload.waiting = True
            try:
                async with asyncio.timeout(min(_ROOM_POLL_SECONDS, deadline - now)):
                    await self._freed.wait()
            except TimeoutError:
                pass
            finally:
                upload.waiting = False
        self.held += size
        upload.held += size
        upload.last = time.monotonic()

    def give_back(self, size: int) -> None:
        """Release `size` bytes taken before (bodies waiting for room look again)."""
        self.held -= size
        if size:
            self._freed.set()
            self._freed = asyncio.Event()

    def _make_room(self, needed: int, requester: Upload) -> bool:
        """Cut the uploads stalled longest, if together they free `needed`; whether they did."""
        silent_since = time.monotonic() - STALLED_AFTER_SECONDS
        stalled = sorted(
            (
                upload
                for upload in self._uploads
                if upload.held
                and upload is not requester
                and not upload.waiting
                and upload.last <= silent_since
            ),
            key=lambda upload: upload.last,
        )
        victims: list[Upload] = []
        freed = 0
        for upload in stalled:
            if freed >= needed:
                break
            victims.append(upload)
            freed += upload.held
        if freed < needed:
            return False  # cutting them would not be enough: cut nobody
        for upload in victims:
            del self._uploads[upload]
            self.held -= upload.held
            upload.held = 0
            upload.content.set_exception(BodyEvicted())
        return True


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
            await budget.take(len(chunk), upload)
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
