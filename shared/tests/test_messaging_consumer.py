"""Consumers against the real RabbitMQ and PostgreSQL: once-only effects, retries, parking."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import asyncpg
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database
from bazaar.shared.messaging import (
    ConsumerSettings,
    Messaging,
    MessagingSettings,
    RelaySettings,
    Subscription,
    encode_event,
    list_parked,
    redrive_parked,
)
from bazaar.shared.messaging.topology import EVENTS_EXCHANGE
from bazaar.shared.outbox import add_event
from bazaar.shared.testing.amqp import eventually

EFFECT_DDL = "CREATE TABLE effect (event_id text NOT NULL, seq integer NOT NULL)"
TYPE = "test.widget.changed"


async def apply_widget(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """The test handler: one effect row per application; `poison` events always fail."""
    if event["data"].get("poison"):
        raise ValueError("this widget cannot be applied")
    await conn.execute(
        "INSERT INTO effect (event_id, seq) VALUES ($1, $2)", event["id"], event["data"]["seq"]
    )


def make_messaging(
    db: Database, amqp_url: str, service: str, *, handler: Any = apply_widget, attempts: int = 3
) -> Messaging:
    settings = MessagingSettings(
        url=amqp_url,
        relay=RelaySettings(poll_seconds=0.2),
        consumer=ConsumerSettings(prefetch=16, max_attempts=attempts, retry_delays_ms=(50, 150)),
        drain_seconds=5.0,
    )
    return Messaging(
        settings,
        service=service,
        db=db,
        registry=CollectorRegistry(),
        subscriptions=[Subscription("widgets", (TYPE,), handler)],
    )


async def emit(db: Database, seq: int, **extra: Any) -> str:
    async with db.transaction() as conn:
        event = await add_event(
            conn, source="/bazaar/test", type=TYPE, subject=str(seq), data={"seq": seq, **extra}
        )
    return str(event["id"])


async def effects(db: Database) -> dict[str, int]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT event_id, count(*) AS n FROM effect GROUP BY event_id")
    return {r["event_id"]: r["n"] for r in rows}


def metric(messaging: Messaging, name: str, **labels: str) -> float:
    return messaging.metrics.value(name, **labels)


def service_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def test_an_event_written_in_a_transaction_is_applied_once_by_the_consumer(
    db: Database, amqp_url: str
) -> None:
    messaging = make_messaging(db, amqp_url, service_name())
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        ids = [await emit(db, seq) for seq in range(20)]

        async def all_applied_and_counted() -> bool:
            # The relay counts a batch once its mark commits, which can be after the
            # consumer applied it: leaving earlier would cancel the relay mid-batch.
            published = metric(messaging, "bazaar_events_published_total", type=TYPE)
            return len(await effects(db)) == 20 and published == 20

        await eventually(all_applied_and_counted)
    assert await effects(db) == dict.fromkeys(ids, 1)
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
        inbox = await conn.fetchval("SELECT count(*) FROM processed_message")
    assert inbox == 20
    consumer = messaging.consumers[0].queue_name
    assert (
        metric(messaging, "bazaar_events_consumed_total", consumer=consumer, outcome="applied")
        == 20
    )
    assert metric(messaging, "bazaar_events_published_total", type=TYPE) == 20


async def test_a_redelivered_message_changes_nothing(db: Database, amqp_url: str) -> None:
    messaging = make_messaging(db, amqp_url, service_name())
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        event_id = await emit(db, 1)

        async def applied() -> bool:
            return len(await effects(db)) == 1

        await eventually(applied)
        async with db.connection() as conn:
            stored = await conn.fetchval(
                "SELECT event FROM outbox WHERE id = $1", uuid.UUID(event_id)
            )
        # The same message again, twice, as a redelivery after a lost ack would bring it.
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(EVENTS_EXCHANGE)
            for _ in range(2):
                await exchange.publish(encode_event(stored), routing_key=TYPE)
        consumer = messaging.consumers[0].queue_name

        async def absorbed() -> bool:
            return (
                metric(
                    messaging,
                    "bazaar_events_consumed_total",
                    consumer=consumer,
                    outcome="duplicate",
                )
                == 2
            )

        await eventually(absorbed)
    assert await effects(db) == {event_id: 1}


async def test_a_poison_message_is_parked_after_its_attempts_while_good_ones_flow(
    db: Database, amqp_url: str
) -> None:
    service = service_name()
    messaging = make_messaging(db, amqp_url, service, attempts=3)
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        poison = await emit(db, 0, poison=True)
        good = [await emit(db, seq) for seq in range(1, 30)]
        consumer = messaging.consumers[0].queue_name

        async def parked() -> bool:
            return metric(messaging, "bazaar_events_parked_total", consumer=consumer) == 1

        await eventually(parked)

        async def good_applied() -> bool:
            return len(await effects(db)) == len(good)

        await eventually(good_applied)
        assert metric(messaging, "bazaar_events_retried_total", consumer=consumer) == 2
    assert await effects(db) == dict.fromkeys(good, 1)
    listed = await list_parked(amqp_url, consumer)
    assert [p.message_id for p in listed] == [poison]
    assert listed[0].attempts == 3
    assert listed[0].reason == "ValueError: this widget cannot be applied"
    assert listed[0].detail()["body"]["data"] == {"seq": 0, "poison": True}
    # Listing leaves the message parked.
    assert [p.message_id for p in await list_parked(amqp_url, consumer)] == [poison]


async def test_a_redriven_message_is_applied_once_its_cause_is_fixed(
    db: Database, amqp_url: str
) -> None:
    service = service_name()
    fixed = asyncio.Event()

    async def flaky(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        if not fixed.is_set():
            raise RuntimeError("dependency missing")
        await apply_widget(conn, {**event, "data": {"seq": event["data"]["seq"]}})

    messaging = make_messaging(db, amqp_url, service, handler=flaky, attempts=2)
    consumer = messaging.consumers[0].queue_name
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        first, second = await emit(db, 1), await emit(db, 2)

        async def both_parked() -> bool:
            return metric(messaging, "bazaar_events_parked_total", consumer=consumer) == 2

        await eventually(both_parked)
        assert await effects(db) == {}
        fixed.set()
        assert await redrive_parked(amqp_url, consumer, {second}) == 1
        assert [p.message_id for p in await list_parked(amqp_url, consumer)] == [first]
        assert await redrive_parked(amqp_url, consumer) == 1

        async def applied() -> bool:
            return len(await effects(db)) == 2

        await eventually(applied)
    assert await effects(db) == {first: 1, second: 1}
    assert await list_parked(amqp_url, consumer) == []


async def test_an_unreadable_message_is_parked_at_once(db: Database, amqp_url: str) -> None:
    messaging = make_messaging(db, amqp_url, service_name())
    consumer = messaging.consumers[0].queue_name
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(EVENTS_EXCHANGE)
            await exchange.publish(aio_pika.Message(b"not json", message_id="junk"), TYPE)

        async def parked() -> bool:
            return metric(messaging, "bazaar_events_parked_total", consumer=consumer) == 1

        await eventually(parked)
    [junk] = await list_parked(amqp_url, consumer)
    assert junk.message_id == "junk"
    assert junk.reason.startswith("malformed: body is not JSON")
    assert junk.body == "not json"


async def test_shutdown_waits_for_the_message_in_flight(db: Database, amqp_url: str) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        entered.set()
        await release.wait()
        await apply_widget(conn, event)

    messaging = make_messaging(db, amqp_url, service_name(), handler=slow)
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        event_id = await emit(db, 1)
        await asyncio.wait_for(entered.wait(), 10)
        asyncio.get_running_loop().call_later(0.3, release.set)
    # The block exited while the handler ran: the drain let it finish and commit.
    assert await effects(db) == {event_id: 1}


async def test_a_handler_that_always_times_out_is_parked_not_requeued_forever(
    db: Database, amqp_url: str
) -> None:
    async def too_slow(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        # What asyncpg raises when a statement outlives its command_timeout.
        raise TimeoutError("statement timed out")

    service = service_name()
    messaging = make_messaging(db, amqp_url, service, handler=too_slow, attempts=3)
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        stuck = await emit(db, 0)
        consumer = messaging.consumers[0].queue_name

        async def parked() -> bool:
            return metric(messaging, "bazaar_events_parked_total", consumer=consumer) == 1

        await eventually(parked)
    listed = await list_parked(amqp_url, consumer)
    assert [p.message_id for p in listed] == [stuck]
    assert listed[0].reason.startswith("TimeoutError")
