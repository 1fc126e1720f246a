"""Status streams read orders in batches: the reads asked for together are one statement on
one borrowed connection, each reader gets its own order, and a reader that leaves or an
outage never strands the others."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio

from bazaar.orders.adapters.snapshots import BATCH_SIZE, OrderSnapshots
from bazaar.shared.db import Database, DatabaseBusy, PoolSettings

INSERT = """
INSERT INTO customer_order (id, customer_id, status, lines)
SELECT id, 'alice', 'pending',
       jsonb_build_array(jsonb_build_object('product_id', gen_random_uuid(), 'quantity', 1,
           'sku', NULL, 'name', NULL, 'unit_price_cents', NULL))
FROM unnest($1::uuid[]) AS id
"""


class CountingDatabase(Database):
    """The real pool, counting the connections borrowed from it."""

    borrowed = 0

    def connection(self) -> Any:
        self.borrowed += 1
        return super().connection()


@asynccontextmanager
async def opened(url: str, **settings: Any) -> AsyncIterator[CountingDatabase]:
    db = CountingDatabase(PoolSettings(dsn=url, **settings))
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest_asyncio.fixture
async def db(
    orders_database_url: str, table_cleaner: Callable[[], Awaitable[None]]
) -> AsyncIterator[CountingDatabase]:
    await table_cleaner()
    async with opened(orders_database_url) as database:
        yield database


async def test_reads_asked_together_are_one_statement_per_batch_each_order_once(
    db: CountingDatabase,
) -> None:
    ids = [uuid.uuid4() for _ in range(BATCH_SIZE + 10)]
    async with db.connection() as conn:
        await conn.execute(INSERT, ids)
    db.borrowed = 0
    snapshots = OrderSnapshots(db)

    asked = [*ids, *ids[:5], uuid.uuid4()]  # some twice, one that does not exist
    found = await asyncio.gather(*(snapshots.read(order_id) for order_id in asked))

    assert db.borrowed == 2  # BATCH_SIZE orders, then the rest
    assert [f.order.id if f else None for f in found] == [*ids, *ids[:5], None]
    assert {f.version for f in found if f} == {1}


async def test_a_read_asked_after_a_change_committed_sees_it(db: CountingDatabase) -> None:
    order_id = uuid.uuid4()
    async with db.connection() as conn:
        await conn.execute(INSERT, [order_id])
    snapshots = OrderSnapshots(db)
    before = await snapshots.read(order_id)
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE customer_order SET status = 'cancelled', updated_at = now() WHERE id = $1",
            order_id,
        )

    after = await snapshots.read(order_id)

    assert before is not None and after is not None
    assert (before.version, after.version) == (1, 2)
    assert after.order.status == "cancelled"


async def test_a_reader_that_leaves_does_not_take_the_read_from_the_others(
    db: CountingDatabase,
) -> None:
    order_id = uuid.uuid4()
    async with db.connection() as conn:
        await conn.execute(INSERT, [order_id])
    snapshots = OrderSnapshots(db)

    leaving = asyncio.create_task(snapshots.read(order_id))
    staying = asyncio.create_task(snapshots.read(order_id))
    await asyncio.sleep(0)
    leaving.cancel()

    found = await staying
    assert found is not None and found.order.id == order_id
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_row_that_cannot_be_read_fails_every_reader_of_its_batch(
    db: CountingDatabase,
) -> None:
    order_id = uuid.uuid4()
    async with db.connection() as conn:
        await conn.execute(INSERT, [order_id])
        await conn.execute(
            'UPDATE customer_order SET lines = \'[{"product_id": "not-a-uuid"}]\' WHERE id = $1',
            order_id,
        )
    snapshots = OrderSnapshots(db)

    async with asyncio.timeout(5):  # never left waiting
        results = await asyncio.gather(
            snapshots.read(order_id), snapshots.read(uuid.uuid4()), return_exceptions=True
        )

    assert all(isinstance(result, Exception) for result in results), results


async def test_an_outage_fails_every_reader_of_the_batch_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on this port: the pool cannot connect.
    async with opened(
        "postgresql://postgres@127.0.0.1:9/orders", min_size=0, acquire_timeout=0.5
    ) as down:
        snapshots = OrderSnapshots(down)
        results = await asyncio.gather(
            *(snapshots.read(uuid.uuid4()) for _ in range(3)), return_exceptions=True
        )
        leaving = asyncio.create_task(snapshots.read(uuid.uuid4()))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0.6)

    assert all(isinstance(result, DatabaseBusy) for result in results), results
    assert down.borrowed == 2
    assert "never retrieved" not in caplog.text
