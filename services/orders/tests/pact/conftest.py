"""Orders' pact fixtures: its database (emptied), a service token, and its real catalog client.

Orders is the consumer of catalog's reservations, of auth's token endpoint and of
catalog.stock.released, and the provider of orders.order.cancelled: the consumer tests drive
the real adapters against Pact's mock providers, the provider test replays catalog's pact
against the real use cases over this run's orders database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from uuid import UUID

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bazaar.orders.adapters.breaker import make_breaker
from bazaar.orders.adapters.catalog import CatalogClient
from bazaar.orders.adapters.tokens import TOKEN_PATH, service_tokens
from bazaar.orders.adapters.uow import SqlTransactions
from bazaar.orders.domain.model import OrderLine, PricedReservation, RequestedLine
from bazaar.orders.service.orders import cancel_order, new_order, settle_order
from bazaar.orders.service.ports import Reserved
from bazaar.shared.db import Database
from bazaar.shared.testing.postgres import empty_tables, open_emptied

#: The token the stand-in for auth hands out (catalog's pact asks for any bearer token).
SERVICE_TOKEN = "orders-service-token"


@pytest_asyncio.fixture
async def orders_database(orders_database_url: str) -> AsyncIterator[Database]:
    """A pool over this run's orders database, emptied first."""
    async with open_emptied(orders_database_url, max_size=4) as db:
        async with db.connection() as conn:
            await empty_tables(conn, orders_database_url)
        yield db


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def auth_url() -> AsyncIterator[str]:
    """A stand-in for auth serving its token endpoint; its base URL (orders' pact with auth
    covers the real exchange)."""

    async def issue(_request: web.Request) -> web.Response:
        body = {"access_token": SERVICE_TOKEN, "token_type": "Bearer", "expires_in": 900}
        return web.json_response(body)

    app = web.Application()
    app.router.add_post(TOKEN_PATH, issue)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """One pooled aiohttp session, as orders' lifespan opens it."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
def catalog_client(
    http_session: aiohttp.ClientSession, auth_url: str
) -> Callable[[str], CatalogClient]:
    """Orders' real catalog client (token, retries, breaker) for a catalog at a base URL."""

    def client(base_url: str) -> CatalogClient:
        tokens = service_tokens(
            http_session,
            auth_url=auth_url,
            client_id="orders",
            client_secret="",  # the stand-in checks no credentials
        )
        breaker = make_breaker("catalog", fail_max=5, reset_timeout=30.0)
        return CatalogClient(http_session, base_url=base_url, tokens=tokens, breaker=breaker)

    return client


@pytest.fixture
def hold_order(orders_database: Database) -> Callable[..., Awaitable[None]]:
    """Store an order through orders' use cases: pending, or confirmed on a reservation of
    `reservation_id` (one line of `product_id`), and cancelled if `cancelled`."""

    async def hold(
        order_id: UUID,
        product_id: UUID,
        *,
        reservation_id: UUID | None = None,
        cancelled: bool = False,
    ) -> None:
        async with SqlTransactions(orders_database).begin() as uow:
            order = replace(new_order("customer-1", [RequestedLine(product_id, 1)]), id=order_id)
            await uow.orders.add(order, idempotency_key=None)
            if reservation_id is not None:
                line = OrderLine(
                    product_id, 1, sku="PACT-MUG", name="Pact mug", unit_price_cents=1250
                )
                reserved = Reserved(PricedReservation(reservation_id, (line,), 1250, "EUR"))
                await settle_order(order_id, reserved, uow=uow)
            if cancelled:
                await cancel_order(order_id, viewer=None, uow=uow)

    return hold
