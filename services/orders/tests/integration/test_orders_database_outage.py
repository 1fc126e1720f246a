"""Orders' own database failing: 503 service-unavailable with Retry-After, never 500, and
ready again (readyz 200, orders placed) within 3 s of the database coming back.

The database sits behind a chaos proxy (refuse, reset, then let through); a statement is
cut mid-way with pg_terminate_backend() (57P01), as a PostgreSQL restart does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr

from bazaar.orders.app import create_app
from bazaar.orders.config import OrdersSettings
from bazaar.shared.problem import PROBLEM_CONTENT_TYPE
from bazaar.shared.testing.chaos import ChaosProxy, Mode, chaos_proxy

RECOVERY_BUDGET = 3.0


@pytest_asyncio.fixture
async def db_proxy(orders_database_url: str) -> AsyncIterator[ChaosProxy]:
    """Orders' database behind a chaos proxy."""
    parts = urlsplit(orders_database_url)
    async with chaos_proxy(f"http://{parts.hostname}:{parts.port or 5432}") as proxy:
        yield proxy


@pytest_asyncio.fixture
async def orders_app(
    orders_settings: OrdersSettings,
    table_cleaner: Callable[[], Awaitable[None]],
    db_proxy: ChaosProxy,
) -> FastAPI:
    """The orders app, its database reached through `db_proxy`."""
    await table_cleaner()
    parts = urlsplit(orders_settings.dsn())
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{db_proxy.port}" if auth else f"127.0.0.1:{db_proxy.port}"
    url = urlunsplit(parts._replace(netloc=netloc))
    settings = orders_settings.model_copy(
        update={"database_url": SecretStr(url), "db_acquire_timeout": 1.0}
    )
    return create_app(settings)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["type"].endswith("/service-unavailable")


@pytest.mark.parametrize("mode", [Mode.REFUSE, Mode.RESET])
async def test_orders_answers_503_while_its_database_is_down_and_serves_within_3_s_of_its_return(
    mode: Mode,
    client: httpx.AsyncClient,
    place: Any,
    admin: dict[str, str],
    customer: Any,
    new_product: Any,
    db_proxy: ChaosProxy,
) -> None:
    product = await new_product(stock=50)
    lines = [{"product_id": product["id"], "quantity": 1}]
    placed = await place(lines)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]

    await db_proxy.set_mode(mode)
    try:
        during = [
            await place(lines),
            await client.get("/v1/orders", headers=admin),
            await client.get(f"/v1/orders/{order_id}", headers=customer()),
            await client.post(f"/v1/orders/{order_id}/cancel", headers=customer()),
        ]
        not_ready = await client.get("/readyz")
    finally:
        await db_proxy.set_mode(Mode.FORWARD)
    back_at = time.monotonic()

    served: httpx.Response | None = None
    while time.monotonic() - back_at < RECOVERY_BUDGET:
        ready = await client.get("/readyz")
        if ready.status_code == 200:
            served = await place(lines)
            if served.status_code == 201:
                break
        await asyncio.sleep(0.05)
    recovered_in = time.monotonic() - back_at

    for response in during:
        assert_unavailable(response)
    assert not_ready.status_code == 503
    assert served is not None and served.status_code == 201, served and served.text
    assert recovered_in < RECOVERY_BUDGET


async def test_a_list_cut_mid_statement_by_pg_terminate_backend_answers_503_not_500(
    client: httpx.AsyncClient, admin: dict[str, str], orders_database_url: str
) -> None:
    assert (await client.get("/v1/orders", headers=admin)).status_code == 200
    locker = await asyncpg.connect(orders_database_url)
    try:
        # Hold the table so the listing blocks inside its statement, then kill its backend.
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE customer_order IN ACCESS EXCLUSIVE MODE")
        listing = asyncio.create_task(
            client.get("/v1/orders", params={"customer_id": "c-1"}, headers=admin)
        )
        killed = 0
        for _ in range(100):
            await asyncio.sleep(0.05)
            killed = await locker.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND query LIKE '%customer_order%'"
            )
            if killed:
                break
        await transaction.rollback()
        response = await asyncio.wait_for(listing, 10)
    finally:
        await locker.close()

    assert killed >= 1
    assert_unavailable(response)
    after = await client.get("/v1/orders", headers=admin)
    assert after.status_code == 200, after.text
