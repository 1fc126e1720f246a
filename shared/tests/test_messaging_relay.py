"""The outbox relay on the real broker: order, confirms, unroutable alarms, replicas, pruning."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aio_pika
import pytest_asyncio
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database
from bazaar.shared.messaging import Broker, MessagingMetrics, OutboxRelay, RelaySettings
from bazaar.shared.messaging.relay import STUBBORN_ATTEMPTS
from bazaar.shared.messaging.topology import UNROUTED
from bazaar.shared.outbox import OUTBOX_DDL, add_event
from bazaar.shared.testing.amqp import eventually, tap_events
from bazaar.shared.testing.postgres import DatabaseFactory, open_emptied


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create("messaging_relay", ddl=OUTBOX_DDL)


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_emptied(database_url, "outbox", max_size=10) as database:
        yield database


async def emit_many(db: Database, type: str, count: int, *, per_transaction: int = 1) -> None:
    for start in range(0, count, per_transaction):
        async with db.transaction() as conn:
            for seq in range(start, min(count, start + per_transaction)):
                await add_event(
                    conn, source="/bazaar/test", type=type, subject=str(seq), data={"seq": seq}
                )


async def pending(db: Database) -> int:
    async with db.connection() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


class RunningRelay:
    """A relay task with its own broker connection and metrics."""

    def __init__(self, db: Database, url: str, settings: RelaySettings) -> None:
        self.broker = Broker(url, name="relay-test")
        self.metrics = MessagingMetrics(CollectorRegistry())
        self.relay = OutboxRelay(db, self.broker, self.metrics, settings)

    async def __aenter__(self) -> RunningRelay:
        await self.broker.connect()
        self.task = asyncio.create_task(self.relay.run())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.broker.close()


async def test_events_are_published_in_creation_order_and_marked_only_once_confirmed(
    db: Database, amqp_url: str
) -> None:
    async with tap_events(amqp_url, "test.ordered.#") as tap:
        await emit_many(db, "test.ordered.made", 300, per_transaction=7)
        async with RunningRelay(db, amqp_url, RelaySettings(batch_size=50, poll_seconds=0.2)):
            events = await tap.wait_for(300)
            await eventually(lambda: _none_pending(db))
    assert [e["data"]["seq"] for e in events] == list(range(300))  # type: ignore[index]
    first = tap.messages[0]
    assert first.content_type == "application/cloudevents+json"  # type: ignore[attr-defined]
    assert first.delivery_mode == 2  # type: ignore[attr-defined]
    assert first.routing_key == "test.ordered.made"  # type: ignore[attr-defined]
    assert first.message_id == events[0]["id"]  # type: ignore[attr-defined]


async def _none_pending(db: Database) -> bool:
    return await pending(db) == 0


async def test_an_event_without_subscribers_is_confirmed_and_kept_in_the_unrouted_queue(
    db: Database, amqp_url: str
) -> None:
    async with RunningRelay(db, amqp_url, RelaySettings(poll_seconds=0.1)) as running:
        await emit_many(db, "test.lonely.made", 1)
        await eventually(lambda: _none_pending(db))
        assert (
            running.metrics.value("bazaar_events_publish_failures_total", reason="unroutable") == 0
        )
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(UNROUTED, passive=True)
        kept = await queue.get(no_ack=True)
    assert kept.routing_key == "test.lonely.made"
    assert json.loads(kept.body)["type"] == "test.lonely.made"


async def test_an_unroutable_event_stays_pending_and_raises_the_alarm_while_others_flow(
    db: Database, amqp_url: str
) -> None:
    async with AsyncExitStack() as stack:
        tap = await stack.enter_async_context(tap_events(amqp_url, "test.routed.#"))
        running = await stack.enter_async_context(
            RunningRelay(db, amqp_url, RelaySettings(poll_seconds=0.1))
        )
        await emit_many(db, "test.routed.zero", 1)
        await tap.wait_for(1)  # the relay has declared its topology
        # A broken topology: the alternate exchange leads nowhere, so mandatory comes back.
        connection = await stack.enter_async_context(await aio_pika.connect(amqp_url))
        channel = await connection.channel()
        unrouted = await channel.declare_queue(UNROUTED, passive=True)
        await unrouted.unbind(UNROUTED)
        stack.push_async_callback(unrouted.bind, UNROUTED)
        await emit_many(db, "test.routed.one", 2)
        await emit_many(db, "test.nobody.listens", 1)
        await emit_many(db, "test.routed.two", 2)
        await tap.wait_for(5)

        async def alarmed() -> bool:
            return (
                running.metrics.value("bazaar_events_publish_failures_total", reason="unroutable")
                >= 2
            )

        await eventually(alarmed)
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT type, attempts, last_error FROM outbox WHERE published_at IS NULL"
        )
    assert [r["type"] for r in rows] == ["test.nobody.listens"]
    assert rows[0]["attempts"] >= 2
    assert rows[0]["last_error"].startswith("unroutable")
    routed = ["test.routed.one"] * 2 + ["test.routed.two"] * 2 + ["test.routed.zero"]
    assert sorted(e["type"] for e in tap.events) == routed


async def test_two_relay_replicas_publish_every_event_exactly_once(
    db: Database, amqp_url: str
) -> None:
    async with tap_events(amqp_url, "test.replicated.#") as tap:
        settings = RelaySettings(batch_size=100, poll_seconds=0.1)
        async with AsyncExitStack() as stack:
            for _ in range(2):
                await stack.enter_async_context(RunningRelay(db, amqp_url, settings))
            await emit_many(db, "test.replicated.made", 2000, per_transaction=50)
            await tap.wait_for(2000, within=30)
            await asyncio.sleep(0.3)  # any duplicate would arrive by now
    ids = [e["id"] for e in tap.events]
    assert len(ids) == 2000
    assert len(set(ids)) == 2000
    assert await pending(db) == 0


async def test_notify_wakes_the_relay_long_before_its_poll(db: Database, amqp_url: str) -> None:
    async with (
        tap_events(amqp_url, "test.prompt.#") as tap,
        RunningRelay(db, amqp_url, RelaySettings(poll_seconds=30)),
    ):
        await asyncio.sleep(0.2)  # the relay has made its first pass and now waits
        started = time.monotonic()
        await emit_many(db, "test.prompt.made", 1)
        await tap.wait_for(1, within=5)
        assert time.monotonic() - started < 1.0


async def test_the_relay_listens_again_after_losing_its_listen_connection(
    db: Database, amqp_url: str
) -> None:
    async with (
        tap_events(amqp_url, "test.relisten.#") as tap,
        RunningRelay(db, amqp_url, RelaySettings(poll_seconds=30)),
    ):
        await emit_many(db, "test.relisten.made", 1)
        await tap.wait_for(1, within=5)
        async with db.connection() as conn:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        assert killed == 1
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await emit_many(db, "test.relisten.made", 1)
        await tap.wait_for(2, within=5)
        assert time.monotonic() - started < 1.0


async def test_pruning_deletes_only_rows_published_before_the_retention(db: Database) -> None:
    await emit_many(db, "test.pruned.made", 3)
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE outbox SET published_at = now() - interval '2 hours' WHERE subject = '0'"
        )
        await conn.execute("UPDATE outbox SET published_at = now() WHERE subject = '1'")
    relay = OutboxRelay(
        db, Broker("amqp://unused/", name="x"), MessagingMetrics(CollectorRegistry())
    )
    assert await relay.prune(retention_seconds=3600) == 1
    async with db.connection() as conn:
        left = [
            r["subject"] for r in await conn.fetch("SELECT subject FROM outbox ORDER BY position")
        ]
    assert left == ["1", "2"]


async def test_rows_that_keep_failing_never_fill_the_batches_and_stall_the_events_behind(
    db: Database, amqp_url: str
) -> None:
    async with AsyncExitStack() as stack:
        tap = await stack.enter_async_context(tap_events(amqp_url, "test.routed.#"))
        await stack.enter_async_context(
            RunningRelay(db, amqp_url, RelaySettings(poll_seconds=0.05, batch_size=3))
        )
        await emit_many(db, "test.routed.zero", 1)
        await tap.wait_for(1)
        connection = await stack.enter_async_context(await aio_pika.connect(amqp_url))
        channel = await connection.channel()
        unrouted = await channel.declare_queue(UNROUTED, passive=True)
        await unrouted.unbind(UNROUTED)
        stack.push_async_callback(unrouted.bind, UNROUTED)
        # More rows that can never be published than the two batches in flight hold…
        await emit_many(db, "test.nobody.listens", 7)

        async def all_stubborn() -> bool:
            async with db.connection() as conn:
                least = await conn.fetchval(
                    "SELECT min(attempts) FROM outbox WHERE published_at IS NULL"
                )
            return least is not None and least >= STUBBORN_ATTEMPTS

        await eventually(all_stubborn)
        # …and the events committed after them still go out.
        await emit_many(db, "test.routed.after", 2)
        await tap.wait_for(3)
    assert sorted(e["type"] for e in tap.events) == ["test.routed.after"] * 2 + ["test.routed.zero"]
