"""Migration 0003: an order's version grows with each change a client sees, each such change
is announced on orders_changed from its own transaction, and the migration goes both ways."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest_asyncio

from bazaar.orders.adapters.snapshots import ORDER_CHANNEL
from bazaar.orders.cli import MIGRATIONS_DIR
from bazaar.shared import migrations
from bazaar.shared.testing.postgres import DatabaseFactory

INSERT = """
INSERT INTO customer_order (id, customer_id, status, lines)
VALUES ($1, 'alice', 'pending', $2::jsonb)
"""


class Notices:
    """The payloads of orders_changed, as a listening session gets them."""

    def __init__(self) -> None:
        self.payloads: asyncio.Queue[str] = asyncio.Queue()

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.put_nowait(payload)

    async def next(self) -> str | None:
        """The next payload, or None if none came within half a second."""
        try:
            async with asyncio.timeout(0.5):
                return await self.payloads.get()
        except TimeoutError:
            return None


@pytest_asyncio.fixture
async def database_url(database_factory: DatabaseFactory) -> str:
    url = await database_factory.create("orders_version")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    return url


async def _version(conn: asyncpg.Connection, order_id: uuid.UUID) -> int:
    value = await conn.fetchval("SELECT version FROM customer_order WHERE id = $1", order_id)
    return int(value)


async def test_the_version_grows_with_each_visible_change_and_each_is_announced_once_committed(
    database_url: str,
) -> None:
    order_id = uuid.uuid4()
    lines = json.dumps([{"product_id": str(uuid.uuid4()), "quantity": 1}])
    notices = Notices()
    conn = await asyncpg.connect(database_url)
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(ORDER_CHANNEL, notices)
        await conn.execute(INSERT, order_id, lines)
        assert await _version(conn, order_id) == 1

        # The reconciler's bookkeeping is not a change of the order: no version, no notice.
        await conn.execute(
            "UPDATE customer_order SET attempts = attempts + 1, next_attempt_at = now() "
            "WHERE id = $1",
            order_id,
        )
        assert await _version(conn, order_id) == 1
        assert await notices.next() is None

        await conn.execute(
            "UPDATE customer_order SET status = 'cancelled', stock_released = true, "
            "updated_at = now() WHERE id = $1",
            order_id,
        )
        assert await _version(conn, order_id) == 2
        assert await notices.next() == f"{order_id} 2"

        # Announced when the change commits, never before; a rolled-back one never.
        rolled_back = conn.transaction()
        await rolled_back.start()
        await conn.execute(
            "UPDATE customer_order SET stock_released = false WHERE id = $1", order_id
        )
        assert await notices.next() is None
        await rolled_back.rollback()
        assert await notices.next() is None
        assert await _version(conn, order_id) == 2

        async with conn.transaction():
            await conn.execute(
                "UPDATE customer_order SET stock_released = false WHERE id = $1", order_id
            )
            assert await notices.next() is None
        assert await notices.next() == f"{order_id} 3"
    finally:
        await listener.close()
        await conn.close()


async def test_the_version_migration_downgrades_and_upgrades_again(
    database_factory: DatabaseFactory,
) -> None:
    url = await database_factory.create("orders_version_down")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    await asyncio.to_thread(migrations.downgrade, MIGRATIONS_DIR, url, "0002")
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'customer_order'"
        )
        assert "version" not in {row["column_name"] for row in columns}
        await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
        order_id = uuid.uuid4()
        lines = json.dumps([{"product_id": str(uuid.uuid4()), "quantity": 1}])
        await conn.execute(INSERT, order_id, lines)
        await conn.execute(
            "UPDATE customer_order SET status = 'cancelled', updated_at = now() WHERE id = $1",
            order_id,
        )
        assert await _version(conn, order_id) == 2
    finally:
        await conn.close()
