"""Reading a client's request body whole, bounded in size, time and memory, before it goes
upstream.

Nothing is sent upstream until the body is in: a client that stalls or aborts its upload
costs the upstream nothing, holds none of its connections or slots, and cannot be mistaken
for an upstream failure (API.md, "Limits and failures"). Bodies being held, all clients
together, stay within a byte budget, so stalled uploads cannot exhaust the gateway's memory.
"""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader, web
from aiohttp.http import HttpVersion11

from bazaar.gateway.errors import (
    BodyBudgetExhausted,
    ClientClosedRequest,
    PayloadTooLarge,
    RequestTimeout,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyBudget:
    """Bytes of request bodies held at once, all requests together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        """Hold `size` more bytes, or raise BodyBudgetExhausted (503) when they do not fit."""
        if self.held + size > self.limit:
            raise BodyBudgetExhausted(
                "The gateway holds too many request bodies right now.",
                headers={"Retry-After": "1"},
            )
        self.held += size

    def give_back(self, size: int) -> None:
        """Release `size` bytes taken before."""
        self.held -= size


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
    """The whole body, its bytes taken from `budget` (the caller gives `len(body)` back):
    413 past `limit` bytes, 503 past the budget, 408 when the client sent nothing for
    `idle_seconds` or not all of it within `total_seconds`, 499 when it went away."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The body exceeds {limit} bytes.")
    if length is not None:
        budget.take(length)  # all of it up front: one buffer, no copy at the end
    body = bytearray(length or 0)
    size = 0
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
            if length is None:
                if size + len(chunk) > limit:
                    raise PayloadTooLarge(f"The body exceeds {limit} bytes.")
                budget.take(len(chunk))
                body += chunk
            else:
                body[size : size + len(chunk)] = chunk
            size += len(chunk)
        if length is not None and size < length:  # (aiohttp reports a short body as lost)
            raise ClientClosedRequest("The body ended short of its Content-Length.")
        complete = True
    except ConnectionError:
        raise ClientClosedRequest("The client closed the connection mid-body.") from None
    finally:
        if not complete:  # nothing is held for a body that failed
            budget.give_back(length if length is not None else size)
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
