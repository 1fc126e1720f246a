"""A busy connection pool of our own is not a failing catalog: it must not trip the breaker."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio
from aiohttp import web

from bazaar.orders.adapters.breaker import make_breaker
from bazaar.orders.adapters.catalog import CallPolicy, CatalogClient
from bazaar.orders.domain.model import RequestedLine
from bazaar.orders.service.ports import OutOfStock


class FixedToken:
    """A token source that never changes (the stub catalog does not check it)."""

    async def get(self) -> str:
        return "token"

    def invalidate(self, token: str) -> None:
        pass


async def _slow_but_healthy(_request: web.Request) -> web.Response:
    await asyncio.sleep(0.3)
    return web.json_response(
        {"type": "https://bazaar.test/problems/insufficient-stock", "product_ids": []}, status=409
    )


@pytest_asyncio.fixture
async def slow_catalog_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/reservations", _slow_but_healthy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_calls_queued_for_a_pooled_connection_are_answered_and_the_breaker_stays_closed(
    slow_catalog_url: str,
) -> None:
    # 24 calls through 2 connections to a catalog answering in 0.3 s: the last ones wait
    # ~3.3 s for a connection, far beyond the 0.5 s connect timeout, within the deadline.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2)) as session:
        breaker = make_breaker("catalog", fail_max=3, reset_timeout=10)
        client = CatalogClient(
            session,
            base_url=slow_catalog_url,
            tokens=FixedToken(),  # type: ignore[arg-type]
            breaker=breaker,
            policy=CallPolicy(connect_timeout=0.5, read_timeout=1.0, deadline=6.0),
        )
        outcomes = await asyncio.gather(
            *(client.reserve(uuid.uuid4(), [RequestedLine(uuid.uuid4(), 1)]) for _ in range(24))
        )
    assert Counter(type(o) for o in outcomes) == {OutOfStock: 24}
    assert breaker.current_state == "closed"
