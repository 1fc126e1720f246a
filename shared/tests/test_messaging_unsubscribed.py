"""Events nobody in the suite consumes are kept apart, so `bazaar.events.unrouted` means a miss.

An event type published for outside subscribers only lands in `bazaar.events.unsubscribed`;
what reaches `bazaar.events.unrouted` is an event some queue was meant to get (its consumer's
queue missing) or a type the suite does not know. The run's vhost is shared by every suite, so
tests there look for their own message ids, never at depths; the suite's consumed types are
published only in a vhost of the test's own, where no other suite's consumer can take them.
"""

from __future__ import annotations

import importlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
import pytest_asyncio
import yaml
from aio_pika.abc import AbstractConnection, AbstractExchange

from bazaar.shared.messaging import ConsumerSettings, Subscription, encode_event
from bazaar.shared.messaging.provision import provision, service_queues
from bazaar.shared.messaging.topology import (
    EVENTS_EXCHANGE,
    PUBLISHED_ONLY_TYPES,
    QUORUM,
    SUBSCRIBED_TYPES,
    UNROUTED,
    UNSUBSCRIBED,
    declare_exchange,
)
from bazaar.shared.testing.amqp import controls_local_node, with_vhost
from bazaar.shared.testing.infrastructure import Resolved

ROOT = Path(__file__).resolve().parents[2]
EVENTS_DOCUMENT = ROOT / "contracts" / "asyncapi" / "events.yaml"
#: The services whose `topology` step declares consumer queues (services/<name>).
SERVICES = ("auth", "catalog", "orders")


def contract_event_types() -> set[str]:
    """Every event type of the AsyncAPI document (one channel, one routing key)."""
    document = yaml.safe_load(EVENTS_DOCUMENT.read_text("utf-8"))
    return {channel["address"] for channel in document["channels"].values()}


def subscriptions_of(service: str) -> tuple[Subscription, ...]:
    """What the service's `topology` step binds: the subscriptions its app is built with."""
    commands = importlib.import_module(f"bazaar.{service}.cli").COMMANDS
    settings = commands.settings(
        _env_file=None,
        environment="test",
        database_url="postgresql://nobody@127.0.0.1:1/none",
    )
    return tuple(commands.app(settings).state.subscriptions)


def subscribed_types() -> set[str]:
    return {t for service in SERVICES for s in subscriptions_of(service) for t in s.events}


def test_every_service_is_asked_for_its_subscriptions() -> None:
    assert set(SERVICES) == {
        path.parent.name for path in (ROOT / "services").glob("*/pyproject.toml")
    }


def test_the_subscribed_types_are_those_the_services_consume() -> None:
    assert sorted(SUBSCRIBED_TYPES) == sorted(subscribed_types())


def test_the_published_only_types_are_the_contracts_types_no_service_consumes() -> None:
    published_only = contract_event_types() - subscribed_types()
    assert len(set(PUBLISHED_ONLY_TYPES)) == len(PUBLISHED_ONLY_TYPES)
    assert sorted(PUBLISHED_ONLY_TYPES) == sorted(published_only)
    # Sanity: every consumed type is one the suite publishes.
    assert subscribed_types() <= contract_event_types()


# --- On the broker -------------------------------------------------------------------------


def event(type_: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/bazaar/test",
        "type": type_,
        "data": {},
    }


async def publish(exchange: AbstractExchange, types: Iterable[str]) -> dict[str, str]:
    """Publish one event of each type (confirmed, mandatory); their ids and types."""
    published = {}
    for type_ in types:
        sent = event(type_)
        await exchange.publish(encode_event(sent), routing_key=type_, mandatory=True)
        published[sent["id"]] = type_
    return published


async def take(connection: AbstractConnection, queue: str, ids: Iterable[str]) -> list[str]:
    """The ids (with repeats) of `ids` found in `queue`, taken out of it; the rest stay."""
    wanted = set(ids)
    found: list[str] = []
    channel = await connection.channel()
    try:
        source = await channel.declare_queue(queue, passive=True)
        while (message := await source.get(no_ack=False, fail=False)) is not None:
            if message.message_id in wanted:
                found.append(message.message_id)
                await message.ack()
        # Closing the channel hands everything else back, unacknowledged.
    finally:
        await channel.close()
    return found


@pytest_asyncio.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractConnection]:
    async with await aio_pika.connect(amqp_url) as connection:
        yield connection


async def events_exchange(connection: AbstractConnection) -> AbstractExchange:
    """The events exchange as every process declares it, on a confirming channel."""
    return await declare_exchange(
        await connection.channel(publisher_confirms=True, on_return_raises=True)
    )


async def test_each_published_only_type_is_kept_in_the_unsubscribed_queue_not_unrouted(
    connection: AbstractConnection,
) -> None:
    published = await publish(await events_exchange(connection), PUBLISHED_ONLY_TYPES)
    assert await take(connection, UNROUTED, published) == []
    assert sorted(await take(connection, UNSUBSCRIBED, published)) == sorted(published)


async def test_an_unknown_type_lands_in_unrouted_not_in_the_unsubscribed_queue(
    connection: AbstractConnection,
) -> None:
    published = await publish(
        await events_exchange(connection), [f"test.unknown.{uuid.uuid4().hex[:8]}"]
    )
    assert await take(connection, UNSUBSCRIBED, published) == []
    assert await take(connection, UNROUTED, published) == list(published)


async def test_the_unsubscribed_queue_is_durable_quorum_and_bounded_declared_again_as_is(
    connection: AbstractConnection,
) -> None:
    await events_exchange(connection)
    await events_exchange(connection)  # idempotent: every process declares it
    await (await connection.channel()).declare_queue(UNSUBSCRIBED, passive=True)
    # The broker accepts a declaration with the same arguments and refuses any other.
    same = {**QUORUM, "x-max-length": 100_000}
    await (await connection.channel()).declare_queue(UNSUBSCRIBED, durable=True, arguments=same)
    other = {**QUORUM, "x-max-length": 1_000}
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await (await connection.channel()).declare_queue(
            UNSUBSCRIBED, durable=True, arguments=other
        )


# --- The suite's consumed types, in a vhost of the test's own -------------------------------


@pytest.fixture
def own_vhost_url(amqp_server: Resolved, test_run_id: str) -> Iterator[str]:
    """A fresh vhost on the run's broker, for this test alone, deleted after it."""
    if not controls_local_node(amqp_server):
        pytest.skip("a vhost of the test's own needs the local broker and rabbitmqctl")
    vhost = f"bazaar-test-{test_run_id}-{uuid.uuid4().hex[:6]}"
    user = urlsplit(amqp_server.url).username or "guest"

    def rabbitmqctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=120, check=True)

    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield with_vhost(amqp_server.url, vhost)
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest_asyncio.fixture
async def alone(own_vhost_url: str) -> AsyncIterator[AbstractConnection]:
    async with await aio_pika.connect(own_vhost_url) as connection:
        yield connection


async def test_a_consumed_type_whose_consumer_queue_is_missing_lands_in_unrouted(
    alone: AbstractConnection,
) -> None:
    # Every process declared the exchange, no `topology` step ran: no consumer queue exists.
    published = await publish(await events_exchange(alone), SUBSCRIBED_TYPES)
    assert await take(alone, UNSUBSCRIBED, published) == []
    assert sorted(await take(alone, UNROUTED, published)) == sorted(published)


async def test_a_consumed_type_lands_only_in_its_consumers_queue_once_topology_ran(
    alone: AbstractConnection,
) -> None:
    delays = ConsumerSettings().retry_delays_ms
    consumer_queue = {}
    for service in SERVICES:
        subscriptions = subscriptions_of(service)
        await provision(alone, service_queues(service, subscriptions, delays))
        for subscription in subscriptions:
            for type_ in subscription.events:
                consumer_queue[type_] = subscription.queue_name(service)
    exchange = await events_exchange(alone)
    published = await publish(exchange, SUBSCRIBED_TYPES)
    assert await take(alone, UNROUTED, published) == []
    assert await take(alone, UNSUBSCRIBED, published) == []
    for id_, type_ in published.items():
        assert await take(alone, consumer_queue[type_], [id_]) == [id_]
    # And the published-only types still reach no consumer queue.
    kept = await publish(exchange, PUBLISHED_ONLY_TYPES)
    for queue in set(consumer_queue.values()):
        assert await take(alone, queue, kept) == []
    assert sorted(await take(alone, UNSUBSCRIBED, kept)) == sorted(kept)


async def test_a_type_that_gained_a_subscriber_is_no_longer_kept_once_declared_again(
    alone: AbstractConnection,
) -> None:
    # An older release, when this type had no subscriber yet, bound it to the keep queue.
    channel = await alone.channel()
    await declare_exchange(channel)
    older = await channel.declare_queue(UNSUBSCRIBED, passive=True)
    for type_ in SUBSCRIBED_TYPES:
        await older.bind(EVENTS_EXCHANGE, routing_key=type_)
    await channel.close()
    # This release declares the exchange (any process, or the `topology` step).
    exchange = await events_exchange(alone)
    published = await publish(exchange, SUBSCRIBED_TYPES)
    assert await take(alone, UNSUBSCRIBED, published) == []
    assert sorted(await take(alone, UNROUTED, published)) == sorted(published)
