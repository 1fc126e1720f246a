"""A gateway served as `bazaar-gateway serve` serves it, for what a client's disconnect does.

aiohttp's TestServer cancels a handler whose client disconnects; the real server does not
(`handler_cancellation` is off), so the handler runs on and meets the disconnect as an error
wherever it is. Tests of aborted uploads must see that, not a cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bazaar.gateway.app import create_app
from bazaar.gateway.edge import EdgeRunner

Client = TestClient[web.Request, web.Application]


class UncancelledServer(TestServer):
    """A TestServer that lets a handler run on when its client disconnects."""

    async def _make_runner(self, **kwargs: Any) -> EdgeRunner:
        kwargs["handler_cancellation"] = False
        return EdgeRunner(self.app, **kwargs)


@pytest_asyncio.fixture(loop_scope="session")
async def served(gateways) -> AsyncIterator[Callable[..., Awaitable[Client]]]:  # type: ignore[no-untyped-def]
    """Start a gateway like `gateways.start`, on a server that cancels no handler."""
    async with AsyncExitStack() as stack:

        async def start(upstreams: Mapping[str, Any] | None = None, **overrides: Any) -> Client:
            app = create_app(gateways.settings(upstreams, **overrides))
            client: Client = TestClient(UncancelledServer(app, host="127.0.0.1"))
            await client.start_server()
            stack.push_async_callback(client.close)
            return client

        yield start
