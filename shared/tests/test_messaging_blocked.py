"""A broker that blocks publishers (memory or disk alarm) is an outage, not the events' fault."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database
from bazaar.shared.messaging import (
    PROCESSED_MESSAGE_DDL,
    Broker,
    Messaging,
    MessagingMetrics,
    MessagingSettings,
    OutboxRelay,
    RelaySettings,
    Subscription,
)
from bazaar.shared.messaging.relay import STUBBORN_ATTEMPTS
from bazaar.shared.outbox import OUTBOX_DDL, add_event
from bazaar.shared.testing.amqp import eventually, tap_events
from bazaar.shared.testing.postgres import DatabaseFactory, open_emptied
from bazaar.shared.testing.private import PrivateRabbit, can_run_private_node, private_workdir

TYPE = "test.blocked.made"


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of this module's own: its alarm blocks nobody else."""
    if not can_run_private_node():
        pytest.skip("needs rabbitmq-server to start a private node")
    work = private_workdir("bazaar-rabbitmq-")
    private = PrivateRabbit(work, uuid.uuid4().hex[:8], prefix="bazaar-test")
    try:
        private.start()
        yield private
    finally:
        private.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create(
        "messaging_blocked", ddl=(*OUTBOX_DDL, *PROCESSED_MESSAGE_DDL)
    )


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_emptied(database_url, "outbox", "processed_message", max_size=5) as database:
        yield database


async def emit(db: Database, seq: int) -> None:
    async with db.transaction() as conn:
        await add_event(conn, source="/bazaar/test", type=TYPE, subject=str(seq), data={"seq": seq})


async def outbox(db: Database) -> tuple[int, int]:
    """(pending rows, the most attempts any row has spent)."""
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE published_at IS NULL) AS pending,"
            " coalesce(max(attempts), 0) AS attempts FROM outbox"
        )
    return int(row["pending"]), int(row["attempts"])


@asynccontextmanager
async def running_relay(
    db: Database, url: str, name: str, settings: RelaySettings
) -> AsyncIterator[Broker]:
    """Run an outbox relay on its own broker connection while the block runs."""
    broker = Broker(url, name=name)
    relay = OutboxRelay(db, broker, MessagingMetrics(CollectorRegistry()), settings)
    await broker.connect()
    task = asyncio.create_task(relay.run())
    try:
        yield broker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await broker.close()


@pytest.mark.slow
async def test_a_memory_alarm_leaves_the_outbox_rows_their_attempts_and_they_go_out_after(
    db: Database, node: PrivateRabbit
) -> None:
    settings = RelaySettings(poll_seconds=0.1, publish_timeout=0.5)
    async with running_relay(db, node.url, "blocked-test", settings) as broker:
        async with tap_events(node.url, TYPE) as tap:
            await emit(db, 0)
            await tap.wait_for(1)  # the connection has published: the broker will block it
            node.ctl("set_vm_memory_high_watermark", "0.00001")
            try:
                for seq in range(1, 6):
                    await emit(db, seq)
                # Long enough for the relay to have failed the rows many times over before.
                await asyncio.sleep(0.5 * (STUBBORN_ATTEMPTS + 3))
                assert broker.is_blocked()
                assert await outbox(db) == (5, 0)
            finally:
                node.ctl("set_vm_memory_high_watermark", "0.4")
            events = await tap.wait_for(6, within=20)

            async def drained() -> bool:
                return (await outbox(db))[0] == 0

            await eventually(drained)
    # Publications queued while blocked may reach the broker after the unblock although their
    # confirm timed out: at least once, so an event may come twice (consumers dedupe by id).
    assert {e["data"]["seq"] for e in events} == set(range(6))  # type: ignore[index]
    assert await outbox(db) == (0, 0)


async def test_a_connection_the_broker_closes_is_reopened_and_the_outbox_drains(
    db: Database, node: PrivateRabbit
) -> None:
    settings = RelaySettings(poll_seconds=0.1, publish_timeout=1.0)

    async def drained() -> bool:
        return (await outbox(db))[0] == 0

    async with running_relay(db, node.url, "reconnect-test", settings):
        await emit(db, 0)
        await eventually(drained)
        node.ctl("close_all_connections", "test: connections closed")
        async with tap_events(node.url, TYPE) as tap:
            for seq in range(1, 4):
                await emit(db, seq)
            await eventually(drained, within=20)
            events = await tap.wait_for(3, within=5)
    assert {e["data"]["seq"] for e in events} >= {1, 2, 3}  # type: ignore[index]
    assert await outbox(db) == (0, 0)


@pytest.mark.slow
async def test_consumers_acknowledge_while_a_memory_alarm_blocks_the_services_publications(
    db: Database, database_url: str, node: PrivateRabbit
) -> None:
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        await release.wait()
        handled.append(event["id"])

    running = Messaging(
        MessagingSettings(url=node.url, relay=RelaySettings(poll_seconds=0.1)),
        service="blockedsvc",
        db=db,
        registry=CollectorRegistry(),
        subscriptions=[Subscription("made", (TYPE,), handler)],
    )
    queue = running.consumers[0].queue_name
    async with running.running():
        await asyncio.wait_for(running.wait_started(), 20)
        await emit(db, 0)  # delivered, held by the handler

        async def delivered() -> bool:
            return _unacknowledged(node, queue) == 1

        await eventually(delivered, within=20)
        node.ctl("set_vm_memory_high_watermark", "0.00001")
        try:
            await emit(db, 1)  # the relay publishes: the broker blocks its connection
            await eventually(lambda: _true(running.relay.broker.is_blocked()), within=20)
            release.set()

            async def acknowledged() -> bool:
                return _unacknowledged(node, queue) == 0

            await eventually(acknowledged, within=10)
        finally:
            node.ctl("set_vm_memory_high_watermark", "0.4")
    assert len(handled) >= 1


def _unacknowledged(node: PrivateRabbit, queue: str) -> int:
    out = node.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_unacknowledged")
    for line in out.stdout.splitlines():
        name, _, count = line.strip().partition("\t")
        if name == queue:
            return int(count)
    return -1


async def _true(value: bool) -> bool:
    return value
