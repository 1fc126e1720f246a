"""A consumer and a failing database: the infrastructure's errors spend no attempt of a message."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.messaging import (
    ConsumerSettings,
    Handler,
    Messaging,
    MessagingSettings,
    RelaySettings,
    Subscription,
    list_parked,
)
from bazaar.shared.outbox import add_event
from bazaar.shared.testing.amqp import eventually
from bazaar.shared.testing.chaos import Mode, chaos_proxy

EFFECT_DDL = "CREATE TABLE effect (event_id text NOT NULL)"
TYPE = "test.gadget.changed"


def messaging(db: Database, amqp_url: str, handler: Handler) -> Messaging:
    """One consumer that parks a message at its first spent attempt."""
    return Messaging(
        MessagingSettings(
            url=amqp_url,
            relay=RelaySettings(poll_seconds=0.2),
            consumer=ConsumerSettings(max_attempts=1, transient_pause=0.05),
            drain_seconds=5.0,
        ),
        service=f"t{uuid.uuid4().hex[:10]}",
        db=db,
        registry=CollectorRegistry(),
        subscriptions=[Subscription("gadgets", (TYPE,), handler)],
    )


async def emit(db: Database) -> str:
    async with db.transaction() as conn:
        event = await add_event(conn, source="/bazaar/test", type=TYPE, subject="g", data={})
    return str(event["id"])


async def effects(db: Database) -> list[str]:
    async with db.connection() as conn:
        return [r["event_id"] for r in await conn.fetch("SELECT event_id FROM effect")]


async def record(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    await conn.execute("INSERT INTO effect (event_id) VALUES ($1)", event["id"])


async def applied_once_and_never_parked(db: Database, amqp_url: str, handler: Handler) -> None:
    running = messaging(db, amqp_url, handler)
    consumer = running.consumers[0].queue_name
    async with running.running():
        await asyncio.wait_for(running.wait_started(), 10)
        event_id = await emit(db)

        async def applied() -> bool:
            return await effects(db) == [event_id]

        await eventually(applied, within=20)
        assert running.metrics.value("bazaar_events_parked_total", consumer=consumer) == 0
        assert running.metrics.value("bazaar_events_retried_total", consumer=consumer) == 0
    assert await list_parked(amqp_url, consumer) == []


async def test_a_handler_whose_backend_is_terminated_mid_transaction_applies_the_event_later(
    db: Database, database_url: str, amqp_url: str
) -> None:
    terminated = 0

    async def handler(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        nonlocal terminated
        if terminated < 2:
            terminated += 1
            # What a PostgreSQL shutdown or failover does to a session: 57P01 AdminShutdown.
            admin = await asyncpg.connect(database_url)
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            finally:
                await admin.close()
        await record(conn, event)

    await applied_once_and_never_parked(db, amqp_url, handler)
    assert terminated == 2


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("57P03", "the database system is starting up"),
        ("53300", "sorry, too many clients already"),
        ("08006", "connection failure"),
        ("40001", "could not serialize access due to concurrent update"),
        ("40P01", "deadlock detected"),
    ],
)
async def test_a_database_that_cannot_serve_now_costs_the_message_no_attempt(
    db: Database, amqp_url: str, sqlstate: str, message: str
) -> None:
    failures = 3

    async def handler(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            # The error object asyncpg builds from the server's ErrorResponse.
            raise asyncpg.PostgresError.new({"C": sqlstate, "M": message, "S": "FATAL"})
        await record(conn, event)

    await applied_once_and_never_parked(db, amqp_url, handler)


async def encode_a_string_as_an_integer(conn: asyncpg.Connection) -> None:
    # asyncpg refuses the argument before sending it (a DataError of SQLSTATE class 22).
    await conn.execute("SELECT $1::integer", "not a number")


async def raise_the_client_side_data_error(conn: asyncpg.Connection) -> None:
    # asyncpg's client-side DataError is an InterfaceError, like a lost connection's errors.
    raise asyncpg_base.DataError("invalid input for query argument $1")


@pytest.mark.parametrize(
    "mistake", [encode_a_string_as_an_integer, raise_the_client_side_data_error]
)
async def test_a_value_asyncpg_cannot_send_is_the_messages_fault_and_ends_parked(
    db: Database, amqp_url: str, mistake: Callable[[asyncpg.Connection], Awaitable[None]]
) -> None:
    async def handler(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        await mistake(conn)

    running = messaging(db, amqp_url, handler)
    consumer = running.consumers[0].queue_name
    async with running.running():
        await asyncio.wait_for(running.wait_started(), 10)
        event_id = await emit(db)

        async def parked() -> bool:
            return running.metrics.value("bazaar_events_parked_total", consumer=consumer) == 1

        await eventually(parked, within=20)
    [message] = await list_parked(amqp_url, consumer)
    assert message.message_id == event_id
    assert message.reason.startswith("DataError")


async def test_a_message_held_through_an_outage_goes_back_to_its_queue_when_the_consumer_stops(
    db: Database, amqp_url: str
) -> None:
    tries = 0

    async def handler(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        nonlocal tries
        tries += 1
        raise asyncpg.PostgresError.new({"C": "57P03", "M": "starting up", "S": "FATAL"})

    running = messaging(db, amqp_url, handler)
    consumer = running.consumers[0].queue_name
    async with running.running():
        await asyncio.wait_for(running.wait_started(), 10)
        await emit(db)

        async def held() -> bool:
            return tries >= 3

        await eventually(held)
        stopping = asyncio.get_running_loop().time()
    # The drain did not wait out the outage (drain_seconds is 5).
    assert asyncio.get_running_loop().time() - stopping < 2.0
    assert running.metrics.value("bazaar_events_parked_total", consumer=consumer) == 0
    async with await aio_pika.connect(amqp_url) as connection:
        queue = await (await connection.channel()).declare_queue(consumer, passive=True)
        assert queue.declaration_result.message_count == 1


async def test_a_timeout_on_a_database_that_stopped_answering_costs_the_message_no_attempt(
    db: Database, database_url: str, amqp_url: str
) -> None:
    parts = urlsplit(database_url)
    async with chaos_proxy(f"http://{parts.hostname}:{parts.port}") as proxy:
        # The consumer's ping goes to the database through the proxy, which hangs while the
        # handler's statements run into command_timeout (raised here as asyncpg does).
        netloc = f"{parts.username}:{parts.password or ''}@127.0.0.1:{proxy.port}"
        probe = Database(
            PoolSettings(
                dsn=parts._replace(netloc=netloc).geturl(),
                min_size=0,
                acquire_timeout=0.5,
                connect_timeout=0.5,
            )
        )
        await probe.open()
        db.ping = probe.ping  # type: ignore[method-assign]
        await proxy.set_mode(Mode.HANG)
        timeouts = 0

        async def handler(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
            nonlocal timeouts
            if timeouts < 3:
                timeouts += 1
                raise TimeoutError
            await record(conn, event)

        try:
            await applied_once_and_never_parked(db, amqp_url, handler)
        finally:
            await probe.close()
    assert timeouts == 3


async def test_a_message_the_broker_took_back_is_no_longer_held_by_its_old_delivery(
    db: Database, amqp_url: str
) -> None:
    down = True
    tries: list[asyncio.Task[Any] | None] = []  # the delivery (its task) of each try

    async def handler(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        tries.append(asyncio.current_task())
        if down:
            raise asyncpg.PostgresError.new({"C": "57P03", "M": "starting up", "S": "FATAL"})
        await record(conn, event)

    running = messaging(db, amqp_url, handler)
    consumer = running.consumers[0]
    async with running.running():
        await asyncio.wait_for(running.wait_started(), 10)
        event_id = await emit(db)

        async def held() -> bool:
            return len(tries) >= 2

        await eventually(held)
        first = tries[0]
        # The broker closes the channel the message came on (here: a refused declaration);
        # it requeues the message and the robust channel comes back and gets it again.
        channel = consumer._channel
        assert channel is not None
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue("no.such.queue", passive=True)
        closed_at = len(tries)

        async def redelivered() -> bool:
            return any(task is not first for task in tries)

        await eventually(redelivered)
        await asyncio.sleep(4.0)  # the old delivery would have tried again by now
        down = False

        async def applied() -> bool:
            return await effects(db) == [event_id]

        await eventually(applied, within=20)
    # At most the try under way when the channel closed; then the old delivery let go.
    assert sum(1 for task in tries[closed_at:] if task is first) <= 1
    assert await effects(db) == [event_id]
    assert await list_parked(amqp_url, consumer.queue_name) == []
