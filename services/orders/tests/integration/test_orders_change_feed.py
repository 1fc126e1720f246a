"""The change feed behind status streams, against the real trigger: notices wake the watches
of their order only, a frozen LISTEN connection is found by its ping and replaced, and every
watch is told to read again after a reconnect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest_asyncio

from bazaar.orders.adapters.snapshots import ORDER_CHANNEL
from bazaar.orders.cli import MIGRATIONS_DIR
from bazaar.shared import migrations
from bazaar.shared.notify import ChangeFeed, Watch
from bazaar.shared.testing.chaos import ChaosProxy, Mode, chaos_proxy
from bazaar.shared.testing.postgres import DatabaseFactory

INSERT = """
INSERT INTO customer_order (id, customer_id, status, lines)
VALUES ($1, 'alice', 'pending', '[{"product_id": "p", "quantity": 1}]'::jsonb)
"""
CANCEL = "UPDATE customer_order SET status = 'cancelled', updated_at = now() WHERE id = $1"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    url = await database_factory.create("orders_change_feed")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    return url


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def proxy(database_url: str) -> AsyncIterator[ChaosProxy]:
    parts = urlsplit(database_url)
    async with chaos_proxy(f"http://{parts.hostname}:{parts.port or 5432}") as chaos:
        yield chaos


def _through(proxy: ChaosProxy, dsn: str) -> str:
    parts = urlsplit(dsn)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{proxy.port}" if auth else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _new_order(conn: asyncpg.Connection) -> str:
    order_id = uuid.uuid4()
    await conn.execute(INSERT, order_id)
    return str(order_id)


async def _woken(watch: Watch, within: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(within):
            await watch.wake.wait()
    except TimeoutError:
        return False
    watch.wake.clear()
    return True


async def test_a_notice_wakes_the_watches_of_its_order_alone_with_its_version(
    database_url: str, conn: asyncpg.Connection
) -> None:
    feed = ChangeFeed(database_url, ORDER_CHANNEL)
    async with feed.running():
        await asyncio.wait_for(feed.listening.wait(), 5)
        changed, other = await _new_order(conn), await _new_order(conn)
        watches = [feed.watch(changed), feed.watch(changed)]
        bystander = feed.watch(other)

        await conn.execute(CANCEL, uuid.UUID(changed))

        for watch in watches:
            assert await _woken(watch)
            assert watch.position == 2
            assert watch.unseen(1)
            assert not watch.unseen(2)
        assert not await _woken(bystander, within=0.3)
        watches[0].close()
        assert len(feed) == 2

    assert all(watch.closed for watch in (*watches, bystander))
    assert len(feed) == 0
    assert feed.watch(changed).closed  # a closed feed hands out closed watches


async def test_a_frozen_listen_connection_is_replaced_and_its_watches_read_again(
    database_url: str, conn: asyncpg.Connection, proxy: ChaosProxy
) -> None:
    feed = ChangeFeed(
        _through(proxy, database_url),
        ORDER_CHANNEL,
        ping_seconds=0.2,
        connect_timeout=0.5,
        retry_seconds=0.05,
        max_retry_seconds=0.2,
    )
    async with feed.running():
        await asyncio.wait_for(feed.listening.wait(), 5)
        order_id = await _new_order(conn)
        watch = feed.watch(order_id)

        await proxy.set_mode(Mode.STALL)  # a peer gone silent: no FIN, no RST
        await conn.execute(CANCEL, uuid.UUID(order_id))
        assert not await _woken(watch, within=0.3)
        await asyncio.sleep(0.5)  # the ping has gone unanswered by now
        assert not feed.listening.is_set()

        await proxy.set_mode(Mode.FORWARD)
        assert await _woken(watch, within=5)

    assert feed.connects == 2
    assert watch.unseen(watch.position)  # a reconnect: read again, whatever the notices said
    assert watch.closed  # the feed closed with the block
