"""Graceful shutdown: stop accepting, let in-flight requests finish, then stop."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from bazaar.gateway.app import create_app
from bazaar.gateway.config import DEFAULT_ROUTES, RouteConfig

PUBLIC = (
    RouteConfig(prefix="/v1/products", upstream="catalog", auth="public"),
    *DEFAULT_ROUTES,
)


async def test_in_flight_requests_finish_during_shutdown_and_new_connections_are_refused(
    fakes, gateways
) -> None:
    arrived = asyncio.Event()

    async def slow(_request: web.Request, _body: bytes) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(1.0)
        return web.json_response({"finished": True})

    catalog = await fakes.upstream("catalog", slow)
    app = create_app(gateways.settings({"catalog": catalog}, routes=PUBLIC))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    cleanup: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(session.get(f"{base}/v1/products"))
            async with asyncio.timeout(5):
                await arrived.wait()
            cleanup = asyncio.create_task(runner.cleanup())
            await asyncio.sleep(0.2)  # shutdown has begun; the upstream is still working
            assert not in_flight.done()
            async with aiohttp.ClientSession() as fresh:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await fresh.get(f"{base}/healthz")
            response = await in_flight
            assert response.status == 200
            assert await response.json() == {"finished": True}
        async with asyncio.timeout(10):
            await cleanup
    finally:
        if cleanup is None:
            await runner.cleanup()
        elif not cleanup.done():
            await cleanup
