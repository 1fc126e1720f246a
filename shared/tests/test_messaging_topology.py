"""`<service> topology`: every queue exists before anything is published, and is migrated."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import asyncpg
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractConnection
from fastapi import FastAPI
from pydantic import SecretStr

from bazaar.shared.app import create_service_app
from bazaar.shared.cli import ServiceCommands, run
from bazaar.shared.messaging import Subscription, encode_event, list_parked, redrive_parked
from bazaar.shared.messaging.envelope import PARKED_REASON_HEADER
from bazaar.shared.messaging.provision import LOCK_QUEUE
from bazaar.shared.messaging.topology import (
    DELIVERY_LIMIT,
    QUORUM,
    QueueNames,
    declare_exchange,
    main_arguments,
)
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.testing.amqp import eventually
from bazaar.shared.testing.chaos import ChaosProxy, Mode, chaos_proxy

TYPE = "test.topology.changed"
#: Retry delays of the service's default settings: the step declares these retry queues.
DELAYS = (1000, 5000, 30000)


class TopoSettings(ServiceSettings):
    service_name: ClassVar[str] = "topo"


async def ignore(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """A handler nobody runs here: these tests run no consumer process."""


SUBSCRIPTIONS = [Subscription("changes", (TYPE,), ignore)]
NAMES = QueueNames("topo.changes")


@pytest_asyncio.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractConnection]:
    async with await aio_pika.connect(amqp_url) as connection:
        # Each test starts and ends without this service's queues.
        await _delete_queues(connection)
        yield connection
        await _delete_queues(connection)


async def _delete_queues(connection: AbstractConnection) -> None:
    names = [NAMES.main, NAMES.parking, f"{NAMES.main}.migrating"]
    names += [NAMES.retry(d) for d in DELAYS]
    for name in names:
        channel = await connection.channel()
        await channel.queue_delete(name)


def commands(amqp_url: str) -> ServiceCommands:
    def settings() -> TopoSettings:
        return TopoSettings(
            _env_file=None,  # type: ignore[call-arg]
            environment="test",
            database_url=SecretStr("postgresql://nobody@127.0.0.1:1/none"),
            amqp_url=SecretStr(amqp_url),
        )

    def app(s: ServiceSettings) -> FastAPI:
        return create_service_app(
            s,
            title="Topo",
            description="Topo.",
            routers=[],
            error_map={},
            subscriptions=SUBSCRIPTIONS,
        )

    return ServiceCommands(name="topo", settings=settings, app=app, migrations_dir=Path("."))


async def topology(amqp_url: str) -> int:
    return await asyncio.to_thread(run, commands(amqp_url), ["topology", "--wait", "5"])


async def publish(channel: AbstractChannel, n: int) -> None:
    exchange = await declare_exchange(channel)
    event = {"id": f"e{n}", "type": TYPE, "source": "/t", "specversion": "1.0", "data": {"n": n}}
    await exchange.publish(encode_event(event), routing_key=TYPE, mandatory=True)


async def count(connection: AbstractConnection, queue: str) -> int:
    declared = await (await connection.channel()).declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def test_the_topology_step_alone_makes_an_event_wait_in_its_consumers_queue(
    amqp_url: str, connection: AbstractConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await topology(amqp_url) == 0
    out = capsys.readouterr().out
    assert f"topo: queue {NAMES.main}: declared" in out
    assert "topo: topology declared (5 queues)" in out
    # No consumer process has ever run: the event still finds its queue, not "unrouted".
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await publish(channel, 1)
    assert await count(connection, NAMES.main) == 1
    # Running it again changes nothing.
    assert await topology(amqp_url) == 0
    assert await count(connection, NAMES.main) == 1


async def test_a_message_returned_too_often_is_dead_lettered_to_parking_not_dropped(
    amqp_url: str, connection: AbstractConnection
) -> None:
    assert await topology(amqp_url) == 0
    await publish(await connection.channel(publisher_confirms=True), 1)
    for _ in range(DELIVERY_LIMIT + 5):
        channel = await connection.channel()
        queue = await channel.declare_queue(NAMES.main, passive=True)
        if await queue.get(no_ack=False, fail=False) is None:
            break
        # A consumer that dies with the message in flight: returned unacknowledged when its
        # channel goes, which every RabbitMQ version counts as a delivery.
        await channel.close()
    assert await count(connection, NAMES.main) == 0
    [parked] = await list_parked(amqp_url, NAMES.main)
    assert parked.message_id == "e1"
    assert parked.reason == f"dead-lettered by the broker: delivery_limit in {NAMES.main}"


async def test_listing_parked_messages_spends_no_delivery_and_keeps_them_redrivable(
    amqp_url: str, connection: AbstractConnection
) -> None:
    assert await topology(amqp_url) == 0
    channel = await connection.channel(publisher_confirms=True)
    event = {"id": "p1", "type": TYPE, "source": "/t", "specversion": "1.0", "data": {}}
    message = encode_event(event, headers={PARKED_REASON_HEADER: "ValueError: broken"})
    await channel.default_exchange.publish(message, routing_key=NAMES.parking, mandatory=True)
    for _ in range(5):
        [listed] = await list_parked(amqp_url, NAMES.main)
        assert (listed.message_id, listed.reason) == ("p1", "ValueError: broken")
    assert await count(connection, NAMES.parking) == 1
    # The broker's own count: listing five times delivered it to nobody.
    peek = await connection.channel()
    got = await (await peek.declare_queue(NAMES.parking, passive=True)).get(no_ack=False)
    assert (got.headers or {}).get("x-delivery-count", 0) == 0
    await peek.close()
    assert await redrive_parked(amqp_url, NAMES.main) == 1
    assert await count(connection, NAMES.parking) == 0
    back = await (await connection.channel()).declare_queue(NAMES.main, passive=True)
    redriven = await back.get(no_ack=True)
    assert json.loads(redriven.body)["id"] == "p1"


async def declare_like_an_older_version(connection: AbstractConnection) -> None:
    """The queues as the code before the explicit limits declared them."""
    channel = await connection.channel()
    exchange = await declare_exchange(channel)
    main = await channel.declare_queue(NAMES.main, durable=True, arguments=dict(QUORUM))
    await main.bind(exchange, routing_key=TYPE)
    for delay in DELAYS:
        old_retry = {
            **QUORUM,
            "x-message-ttl": delay,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": NAMES.main,
        }
        await channel.declare_queue(NAMES.retry(delay), durable=True, arguments=old_retry)
    await channel.declare_queue(NAMES.parking, durable=True, arguments=dict(QUORUM))


async def test_the_topology_step_migrates_queues_an_older_version_declared_keeping_messages(
    amqp_url: str, connection: AbstractConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    await declare_like_an_older_version(connection)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    for n in range(3):
        await publish(channel, n)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await (await connection.channel()).declare_queue(
            NAMES.main, durable=True, arguments=main_arguments(NAMES)
        )
    capsys.readouterr()
    assert await topology(amqp_url) == 0
    out = capsys.readouterr().out
    assert f"topo: queue {NAMES.main}: migrated" in out
    assert f"topo: queue {NAMES.retry(1000)}: migrated" in out
    # The queue now has the new arguments (declaring them is accepted), messages and binding kept.
    await (await connection.channel()).declare_queue(
        NAMES.main, durable=True, arguments=main_arguments(NAMES)
    )
    assert await count(connection, NAMES.main) == 3
    await publish(await connection.channel(publisher_confirms=True, on_return_raises=True), 3)
    assert await count(connection, NAMES.main) == 4
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await (await connection.channel()).declare_queue(f"{NAMES.main}.migrating", passive=True)


async def test_the_topology_step_refuses_to_migrate_a_queue_still_consumed_and_says_how(
    amqp_url: str, connection: AbstractConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    await declare_like_an_older_version(connection)
    await publish(await connection.channel(publisher_confirms=True, on_return_raises=True), 1)
    # An older version still running: a consumer on the queue (it holds nothing: prefetch 1,
    # and the message is returned unacknowledged).
    old = await connection.channel()
    await old.set_qos(prefetch_count=1)
    queue = await old.declare_queue(NAMES.main, passive=True)
    received: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        received.append(message)

    tag = await queue.consume(hold)
    capsys.readouterr()
    assert await topology(amqp_url) == 1
    err = capsys.readouterr().err
    assert f"queue {NAMES.main} exists with other arguments and 1 consumer(s)" in err
    assert "stop them" in err
    await queue.cancel(tag)
    await old.close()  # the held message goes back

    async def returned() -> bool:
        return await count(connection, NAMES.main) == 1

    await eventually(returned)
    # Once the old version is gone, the same step migrates it.
    assert await topology(amqp_url) == 0
    assert await count(connection, NAMES.main) == 1


async def test_the_topology_step_finishes_a_migration_cut_short(
    amqp_url: str, connection: AbstractConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    # Cut short after the old queue was deleted: its messages wait in the holding queue.
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await declare_exchange(channel)
    holding = await channel.declare_queue(
        f"{NAMES.main}.migrating", durable=True, arguments=dict(QUORUM)
    )
    await holding.bind(exchange, routing_key=TYPE)
    for n in range(2):
        await publish(channel, n)
    capsys.readouterr()
    assert await topology(amqp_url) == 0
    assert "an interrupted migration finished" in capsys.readouterr().out
    assert await count(connection, NAMES.main) == 2
    await publish(channel, 2)  # bound to the queue alone now
    assert await count(connection, NAMES.main) == 3


async def test_a_refused_topology_step_changes_no_queue_an_older_version_still_declares(
    amqp_url: str, connection: AbstractConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    await declare_like_an_older_version(connection)
    old = await connection.channel()
    tag = await (await old.declare_queue(NAMES.main, passive=True)).consume(ignore_message)
    capsys.readouterr()
    assert await topology(amqp_url) == 1
    assert f"queue {NAMES.main} exists with other arguments and 1 consumer(s)" in (
        capsys.readouterr().err
    )
    # The older version, reconnecting, still declares every queue as it did.
    await old.close()
    await declare_like_an_older_version(connection)
    del tag


async def ignore_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """An older version's consumer: holds what it gets until its channel closes."""


async def test_events_published_during_a_migration_arrive_once_each(
    amqp_url: str, connection: AbstractConnection
) -> None:
    await declare_like_an_older_version(connection)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    published = 0
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        nonlocal published
        while not stop.is_set():
            await publish(channel, published)
            published += 1
            await asyncio.sleep(0.002)

    publisher = asyncio.create_task(keep_publishing())
    try:
        assert await topology(amqp_url) == 0
    finally:
        stop.set()
        await asyncio.wait_for(publisher, 30)  # a publication whose confirm never comes
    queue = await (await connection.channel()).declare_queue(NAMES.main, passive=True)
    seen = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        seen.append(json.loads(message.body)["id"])
    assert set(seen) == {f"e{n}" for n in range(published)}
    # At-least-once (consumers dedupe by id): only the instant the re-created queue is bound
    # while the holding queue still is may copy one twice, not every event of the migration.
    assert len(seen) - published <= 3


async def test_a_second_topology_run_waits_for_the_first(
    amqp_url: str, connection: AbstractConnection
) -> None:
    holder = await connection.channel()
    await holder.declare_queue(LOCK_QUEUE, exclusive=True, auto_delete=True)
    second = asyncio.create_task(topology(amqp_url))
    await asyncio.sleep(1.5)
    assert not second.done()
    await holder.queue_delete(LOCK_QUEUE)
    assert await asyncio.wait_for(second, 30) == 0


async def exists(connection: AbstractConnection, queue: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    await channel.close()
    return True


def through(proxy: ChaosProxy, amqp_url: str) -> str:
    """The run's broker URL (same vhost) by way of the proxy."""
    return urlunsplit(urlsplit(amqp_url)._replace(netloc=f"guest:guest@127.0.0.1:{proxy.port}"))


async def test_a_broker_that_accepts_but_never_answers_fails_the_step_within_its_wait(
    amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with chaos_proxy("http://127.0.0.1:5672") as proxy:
        await proxy.set_mode(Mode.HANG)
        started = time.monotonic()
        async with asyncio.timeout(30):
            status = await asyncio.to_thread(
                run, commands(through(proxy, amqp_url)), ["topology", "--wait", "2"]
            )
        took = time.monotonic() - started
    assert status == 1
    assert took < 10, f"the step took {took:.1f}s"
    assert "did not answer" in capsys.readouterr().err


async def test_a_broker_that_goes_silent_part_way_fails_the_step_instead_of_hanging_it(
    amqp_url: str, connection: AbstractConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another run holds the lock, so the step is mid-way (polling the broker) when it freezes.
    holder = await connection.channel()
    await holder.declare_queue(LOCK_QUEUE, exclusive=True, auto_delete=True)
    async with chaos_proxy("http://127.0.0.1:5672") as proxy:
        argv = ["topology", "--wait", "5", "--timeout", "3"]
        step = asyncio.create_task(asyncio.to_thread(run, commands(through(proxy, amqp_url)), argv))
        await asyncio.sleep(1.5)
        assert not step.done()
        await proxy.set_mode(Mode.STALL)
        async with asyncio.timeout(30):
            status = await step
        await proxy.set_mode(Mode.FORWARD)
    assert status == 1
    assert "the broker stopped answering; gave up after 3 s" in capsys.readouterr().err
    # Nothing was declared, and the lock is still the holder's.
    assert not await exists(connection, NAMES.main)
    await holder.queue_delete(LOCK_QUEUE)
