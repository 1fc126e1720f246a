"""The reconciler's reads use indexes (the claim in its own order, the pending backlog), and
the migration goes both ways."""

from __future__ import annotations

import asyncio

import asyncpg

from bazaar.orders.adapters.orders import CLAIM_DUE, PENDING_BACKLOG
from bazaar.orders.cli import MIGRATIONS_DIR
from bazaar.shared import migrations
from bazaar.shared.testing.postgres import DatabaseFactory

INDEX = "customer_order_due_oldest_idx"


async def _plan(
    url: str, sql: str = CLAIM_DUE, args: tuple[object, ...] = (50, 1.0, 30.0, 9.0)
) -> str:
    conn = await asyncpg.connect(url)
    try:
        # No sort of the backlog: refused outright, so only an index in the claim's order fits.
        await conn.execute("SET enable_sort = off; SET enable_seqscan = off")
        rows = await conn.fetch("EXPLAIN " + sql, *args)
        return "\n".join(row[0] for row in rows)
    finally:
        await conn.close()


async def test_the_claim_of_due_orders_reads_them_oldest_first_from_an_index_without_sorting(
    database_factory: DatabaseFactory,
) -> None:
    url = await database_factory.create("orders_due_index")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)

    plan = await _plan(url)

    assert INDEX in plan
    assert "Sort" not in plan


async def test_the_due_index_migration_downgrades_and_upgrades_again(
    database_factory: DatabaseFactory,
) -> None:
    url = await database_factory.create("orders_due_index_down")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)

    await asyncio.to_thread(migrations.downgrade, MIGRATIONS_DIR, url, "0001")
    assert INDEX not in await _plan(url)
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    assert INDEX in await _plan(url)


async def test_the_pending_backlog_is_read_from_an_index_of_the_due_orders_alone(
    database_factory: DatabaseFactory,
) -> None:
    url = await database_factory.create("orders_backlog_index")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)

    plan = await _plan(url, PENDING_BACKLOG, ())

    # A partial index whose predicate holds every pending order: confirmed, rejected and
    # cancelled orders (nearly all of them) are never read. 50k pending: about 8 ms a read.
    assert any(index in plan for index in (INDEX, "customer_order_due_idx")), plan
    assert "Seq Scan" not in plan
