"""A committed status change is counted even when a shutdown cuts its request short while the
connection goes back to the pool (the count comes before that await, right after the commit)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from bazaar.orders.adapters.metrics import OrderMetrics
from bazaar.orders.adapters.uow import SqlTransactions
from bazaar.orders.domain.model import RequestedLine
from bazaar.orders.service.orders import cancel_order, open_order
from bazaar.shared.db import Database, PoolSettings


class CutShortOnRelease(Database):
    """A pool whose borrower is cancelled just as it gives its connection back (after its
    commit), as a shutdown cutting requests short may do."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with super().connection() as conn:
            yield conn
            task = asyncio.current_task()
            assert task is not None
            task.cancel()


@asynccontextmanager
async def counted_transactions(
    db: Database,
) -> AsyncIterator[tuple[SqlTransactions, CollectorRegistry]]:
    registry = CollectorRegistry()
    await db.open()
    try:
        yield SqlTransactions(db, metrics=OrderMetrics(registry)), registry
    finally:
        await db.close()


def entered(registry: CollectorRegistry, status: str) -> float | None:
    return registry.get_sample_value("bazaar_orders_total", {"status": status})


async def test_a_cancellation_committed_as_shutdown_cuts_its_request_short_is_counted(
    orders_database_url: str,
) -> None:
    settings = PoolSettings(dsn=orders_database_url, min_size=1, max_size=2)
    async with counted_transactions(Database(settings)) as (plain, _):
        async with plain.autocommit() as uow:
            order = await open_order(
                f"customer-{uuid.uuid4()}",
                [RequestedLine(uuid.uuid4(), 1)],
                idempotency_key=None,
                uow=uow,
            )

    async with counted_transactions(CutShortOnRelease(settings)) as (transactions, registry):

        async def cancel() -> None:
            async with transactions.begin() as uow:
                await cancel_order(order.id, viewer=None, uow=uow)

        task = asyncio.create_task(cancel())
        with pytest.raises(asyncio.CancelledError):
            await task

    conn = await asyncpg.connect(orders_database_url)
    try:
        status = await conn.fetchval("SELECT status FROM customer_order WHERE id = $1", order.id)
    finally:
        await conn.close()
    assert status == "cancelled"  # committed before the cancellation came
    assert entered(registry, "cancelled") == 1


async def test_an_order_inserted_on_its_own_is_counted_pending_even_if_cut_short_after(
    orders_database_url: str,
) -> None:
    settings = PoolSettings(dsn=orders_database_url, min_size=1, max_size=2)
    customer = f"customer-{uuid.uuid4()}"
    async with counted_transactions(CutShortOnRelease(settings)) as (transactions, registry):

        async def place() -> None:
            async with transactions.autocommit() as uow:
                await open_order(
                    customer, [RequestedLine(uuid.uuid4(), 1)], idempotency_key=None, uow=uow
                )

        task = asyncio.create_task(place())
        with pytest.raises(asyncio.CancelledError):
            await task

    conn = await asyncpg.connect(orders_database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM customer_order WHERE customer_id = $1", customer
        )
    finally:
        await conn.close()
    assert stored == 1
    assert entered(registry, "pending") == 1
