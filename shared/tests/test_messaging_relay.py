"""The outbox relay on the real broker: order, confirms, unroutable alarms, replicas, pruning."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aio_pika
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.messaging import Broker, MessagingMetrics, OutboxRelay, RelaySettings
from bazaar.shared.messaging.relay import STUBBORN_ATTEMPTS, BatchResult, _Queued
from bazaar.shared.messaging.topology import UNROUTED
from bazaar.shared.outbox import OUTBOX_DDL, add_event
from bazaar.shared.testing.amqp import eventually, tap_events
from bazaar.shared.testing.postgres import DatabaseFactory, execute_within, open_emptied


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
    # The run's vhost is shared: other suites' events without subscribers are kept there too.
    kept: list[dict[str, object]] = []
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(UNROUTED, passive=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            if message.routing_key == "test.lonely.made":
                kept.append(json.loads(message.body))
    assert [event["type"] for event in kept] == ["test.lonely.made"]


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


async def test_a_row_that_keeps_failing_does_not_delay_the_events_committed_after_it(
    db: Database, amqp_url: str
) -> None:
    async with AsyncExitStack() as stack:
        tap = await stack.enter_async_context(tap_events(amqp_url, "test.routed.#"))
        await stack.enter_async_context(RunningRelay(db, amqp_url, RelaySettings(poll_seconds=30)))
        await emit_many(db, "test.routed.zero", 1)
        await tap.wait_for(1)
        connection = await stack.enter_async_context(await aio_pika.connect(amqp_url))
        channel = await connection.channel()
        unrouted = await channel.declare_queue(UNROUTED, passive=True)
        await unrouted.unbind(UNROUTED)
        stack.push_async_callback(unrouted.bind, UNROUTED)
        await emit_many(db, "test.nobody.listens", 1)
        latencies = []
        # Each event wakes the relay (NOTIFY), which retries the failing row beside it.
        for seen in range(2, 8):
            started = time.monotonic()
            await emit_many(db, "test.routed.after", 1)
            await tap.wait_for(seen, within=10)
            latencies.append(time.monotonic() - started)
    assert max(latencies) < 0.5, latencies


async def test_a_pass_cut_short_by_a_database_outage_is_a_warning_without_traceback(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: every connection is refused, as while PostgreSQL restarts.
    gone = Database(
        PoolSettings("postgresql://postgres@127.0.0.1:1/x", min_size=0, acquire_timeout=0.2)
    )
    await gone.open()  # min_size=0: no connection is made until one is asked for
    caplog.set_level(logging.WARNING, logger="bazaar.messaging.relay")
    async with RunningRelay(gone, amqp_url, RelaySettings(poll_seconds=0.05)):

        async def warned() -> bool:
            return any("relay pass" in r.getMessage() for r in caplog.records)

        await eventually(warned)
    await gone.close()
    relay_records = [r for r in caplog.records if r.name == "bazaar.messaging.relay"]
    assert relay_records
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in relay_records)


class CountingDatabase(Database):
    """A Database that counts the transactions it opens (the relay claims in one each)."""

    def __init__(self, settings: PoolSettings) -> None:
        super().__init__(settings)
        self.transactions = 0

    def transaction(self, *, isolation: str = "read_committed") -> Any:
        self.transactions += 1
        return super().transaction(isolation=isolation)


async def test_a_pass_whose_first_batch_is_short_claims_once(
    database_url: str, amqp_url: str
) -> None:
    db = CountingDatabase(PoolSettings(dsn=database_url, max_size=4))
    await db.open()
    broker = Broker(amqp_url, name="relay-test")
    await broker.connect()
    try:
        async with db.connection() as conn:
            await execute_within(conn, "TRUNCATE outbox", db.settings.dsn)
        await emit_many(db, "test.short.made", 3)
        relay = OutboxRelay(db, broker, MessagingMetrics(CollectorRegistry()), RelaySettings())
        exchange = await relay._exchange()
        before = db.transactions
        async with tap_events(amqp_url, "test.short.#") as tap:
            assert await relay.relay_pending(exchange) is False
            await tap.wait_for(3)
        # One claim took all three (fewer than a batch): no second claim that finds nothing.
        assert db.transactions - before == 1
        assert await pending(db) == 0
    finally:
        await broker.close()
        await db.close()


class CommitAfterClaim(OutboxRelay):
    """Once armed, the first batch that claims rows has one more event committed after its
    claim. `announced_first`: the pass looks at its batch only once that commit's NOTIFY has
    arrived (a commit during the pass); otherwise the pass looks first, the commit follows."""

    def __init__(self, *args: Any, announced_first: bool) -> None:
        super().__init__(*args)
        self.announced_first = announced_first
        self.armed = True

    async def publish_batch(
        self, exchange: Any, *, queued: asyncio.Event | None = None
    ) -> BatchResult:
        if not self.armed or not isinstance(queued, _Queued):
            return await super().publish_batch(exchange, queued=queued)
        claimed = _Queued()
        batch = asyncio.create_task(super().publish_batch(exchange, queued=claimed))
        await claimed.wait()
        if not claimed.fresh:
            queued.set()
            return await batch
        self.armed = False
        if not self.announced_first:
            queued.fresh = claimed.fresh
            queued.set()
        await emit_many(self.db, "test.late.made", 1)
        if self.announced_first:
            await asyncio.wait_for(self._listener.wake.wait(), 5)
            queued.fresh = claimed.fresh
            queued.set()
        return await batch


async def test_a_commit_announced_during_a_pass_is_claimed_by_that_pass(
    db: Database, amqp_url: str
) -> None:
    broker = Broker(amqp_url, name="relay-test")
    await broker.connect()
    relay = CommitAfterClaim(
        db, broker, MessagingMetrics(CollectorRegistry()), RelaySettings(), announced_first=True
    )
    try:
        await emit_many(db, "test.late.made", 3)  # before LISTEN: announced to nobody
        await relay._listener.listen()
        relay._listener.wake.clear()  # as `run` does before a pass
        exchange = await relay._exchange()
        async with tap_events(amqp_url, "test.late.#") as tap:
            assert await relay.relay_pending(exchange) is False
            # The first batch was short, but a commit came since the pass began: the pass
            # claimed it too instead of leaving it to the next wake-up.
            assert await pending(db) == 0
            await tap.wait_for(4)
    finally:
        await relay._listener.close()
        await broker.close()


async def test_a_commit_after_a_pass_looked_at_its_short_batch_starts_the_next_pass_at_once(
    db: Database, amqp_url: str
) -> None:
    broker = Broker(amqp_url, name="relay-test")
    await broker.connect()
    relay = CommitAfterClaim(
        db,
        broker,
        MessagingMetrics(CollectorRegistry()),
        RelaySettings(poll_seconds=60),
        announced_first=False,
    )
    task = asyncio.create_task(relay.run())
    try:
        async with tap_events(amqp_url, "test.late.#") as tap:
            await asyncio.sleep(0.5)  # listening, the first passes found nothing
            await emit_many(db, "test.late.made", 3, per_transaction=3)  # one NOTIFY
            # The pass ended after its short batch; the commit that followed is announced
            # and published long before the 60 s poll.
            await asyncio.wait_for(tap.wait_for(4), 5)
        await eventually(lambda: _none_pending(db))  # marked once confirmed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await broker.close()
