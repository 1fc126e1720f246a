"""Event streams through a gateway served as `bazaar-gateway serve` serves it, from a fake
orders whose streams the test drives event by event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bazaar.gateway.app import create_app
from bazaar.gateway.edge import EdgeRunner

EVENT_STREAM = "text/event-stream"
KEEP_ALIVE = b": keep-alive\n\n"


def event(n: int, data: str = "{}") -> bytes:
    """One small `order` event as orders frames it."""
    return f"event: order\nid: {n}\ndata: {data}\n\n".encode()


@dataclass
class Feed:
    """One stream the fake upstream serves: the test puts bytes (None ends it)."""

    last_event_id: str | None
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    #: perf_counter() when each queued item was handed to the socket.
    sent: list[float] = field(default_factory=list)
    #: Set once the upstream's handler is over (the stream ended or its reader left).
    over: asyncio.Event = field(default_factory=asyncio.Event)
    #: The gateway closed the connection before the stream ended.
    left: bool = False


class SseUpstream:
    """The behaviour of a fake orders answering every request with an event stream.

    With `keepalive` set, a stream with nothing queued sends a keep-alive comment that often.
    """

    def __init__(self, keepalive: float | None = None) -> None:
        self.keepalive = keepalive
        self.feeds: list[Feed] = []
        self._opened = asyncio.Condition()

    async def wait_open(self, count: int, seconds: float = 5.0) -> list[Feed]:
        """Wait until `count` streams have been opened in all; return them."""
        async with asyncio.timeout(seconds), self._opened:
            await self._opened.wait_for(lambda: len(self.feeds) >= count)
        return self.feeds[:count]

    async def __call__(self, request: web.Request, _body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        feed = Feed(request.headers.get("Last-Event-ID"))
        async with self._opened:
            self.feeds.append(feed)
            self._opened.notify_all()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.keepalive):
                        item = await feed.queue.get()
                except TimeoutError:
                    item = KEEP_ALIVE
                if item is None:
                    break
                await response.write(item)
                feed.sent.append(time.perf_counter())
            await response.write_eof()
        except ConnectionError:
            feed.left = True
        finally:
            feed.over.set()
        return response


@dataclass
class Live:
    """A gateway listening on 127.0.0.1 through the EdgeRunner `serve` uses."""

    runner: EdgeRunner
    url: str
    cleanup: asyncio.Task[None] | None = None

    def shut_down(self) -> asyncio.Task[None]:
        """Begin the shutdown SIGTERM begins (stop accepting, drain, cleanup hooks)."""
        if self.cleanup is None:
            self.cleanup = asyncio.create_task(self.runner.cleanup())
        return self.cleanup


@pytest_asyncio.fixture(loop_scope="session")
async def live(gateways) -> AsyncIterator[Callable[..., Awaitable[Live]]]:  # type: ignore[no-untyped-def]
    """Start gateways like `gateways.start`, served as `bazaar-gateway serve` serves them:
    an EdgeRunner (no handler cancelled when its client leaves) with the settings'
    shutdown timeout."""
    async with AsyncExitStack() as stack:

        async def start(upstreams: Mapping[str, Any] | None = None, **overrides: Any) -> Live:
            settings = gateways.settings(upstreams, **overrides)
            runner = EdgeRunner(
                create_app(settings), access_log=None, shutdown_timeout=settings.shutdown_timeout
            )
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            served = Live(runner, f"http://{host}:{port}")

            async def stop() -> None:
                await served.shut_down()

            stack.push_async_callback(stop)
            return served

        yield start


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, in a /metrics page."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
