"""The broker topology: one topic exchange with its keep queues, and per consumer its queues."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from pamqp.common import FieldTable

log = logging.getLogger("bazaar.messaging")

#: The one topic exchange of every domain event; the routing key is the event type.
EVENTS_EXCHANGE = "bazaar.events"
#: The alternate exchange and queue of events that found no queue: an event nobody was meant
#: to miss (its consumer's queue missing, the `topology` step not run; or a type the suite does
#: not know). Kept, bounded, for operators; any message in it is an alarm (BazaarEventsUnrouted).
UNROUTED = "bazaar.events.unrouted"
UNROUTED_MAX_LENGTH = 100_000
#: The queue of the event types the suite publishes for outside subscribers only: kept,
#: bounded, for operators and subscribers deployed later, so that these never reach UNROUTED
#: and its growth keeps meaning something. Its depth grows with traffic up to its bound
#: (beyond it the oldest are dropped): no alarm.
UNSUBSCRIBED = "bazaar.events.unsubscribed"
UNSUBSCRIBED_MAX_LENGTH = 100_000
#: The event types (contracts/asyncapi/events.yaml) no consumer of the suite subscribes to:
#: bound to UNSUBSCRIBED. A new event type or a new subscriber means updating these two
#: (shared/tests/test_messaging_unsubscribed.py fails until they agree with the services).
PUBLISHED_ONLY_TYPES: tuple[str, ...] = (
    "auth.user.registered",
    "catalog.product.created",
    "catalog.product.updated",
    "catalog.product.deleted",
    "catalog.stock.reserved",
    "orders.order.placed",
    "orders.order.rejected",
)
#: The event types a consumer of the suite subscribes to: never kept in UNSUBSCRIBED, so one
#: whose consumer's queue is missing reaches UNROUTED. Unbound from UNSUBSCRIBED on every
#: declaration, for a type that gained its subscriber after an older release bound it there.
SUBSCRIBED_TYPES: tuple[str, ...] = (
    "catalog.stock.released",
    "orders.order.cancelled",
)
#: Durable queues are quorum queues (replicated, poison-aware) where the broker has them.
QUORUM: FieldTable = {"x-queue-type": "quorum"}
#: Deliveries of one message before the broker dead-letters it to the parking queue. Said
#: explicitly: RabbitMQ 4 defaults to 20 and, without a dead-letter exchange, drops the
#: message. A consumer spends none on a database outage (it retries in-process, holding
#: the message), so only returns count: a consumer process dying or its connection lost
#: with the message in flight (every version counts those; 3.x to 4.2 also count a
#: `basic.nack` with requeue, 4.3 does not). Fifty of those is a crash loop, not bad weather.
DELIVERY_LIMIT = 50
#: Dead-lettering that waits for the target queue to confirm (quorum queues, RabbitMQ 3.10+):
#: the default, at-most-once, drops the message if the target does not take it. It needs
#: `reject-publish` overflow on the source queue.
AT_LEAST_ONCE: FieldTable = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True, slots=True)
class QueueNames:
    """The names of one consumer's queues."""

    main: str

    @property
    def parking(self) -> str:
        """Where messages go once their attempts are spent (operators re-drive them)."""
        return f"{self.main}.parking"

    def retry(self, delay_ms: int) -> str:
        """The queue holding a failed message `delay_ms` before it returns to the main queue."""
        return f"{self.main}.retry.{delay_ms}ms"


async def declare_exchange(channel: AbstractChannel) -> AbstractExchange:
    """Declare the durable topic exchange of domain events and its keep queues (idempotent).

    With the alternate exchange in place, a `mandatory` publication comes back only when
    the topology itself is broken, which is an alarm and never a silent loss. The event types
    published for outside subscribers only are kept apart (UNSUBSCRIBED), so that what lands
    in UNROUTED is always something a consumer was meant to get.
    """
    unrouted = await channel.declare_exchange(UNROUTED, aio_pika.ExchangeType.FANOUT, durable=True)
    parked = await channel.declare_queue(
        UNROUTED,
        durable=True,
        arguments={**QUORUM, "x-max-length": UNROUTED_MAX_LENGTH},
    )
    await parked.bind(unrouted)
    exchange = await _events_exchange(channel)
    kept = await channel.declare_queue(
        UNSUBSCRIBED,
        durable=True,
        arguments={**QUORUM, "x-max-length": UNSUBSCRIBED_MAX_LENGTH},
    )
    for key in PUBLISHED_ONLY_TYPES:
        await kept.bind(exchange, routing_key=key)
    for key in SUBSCRIBED_TYPES:
        await kept.unbind(exchange, routing_key=key)  # a no-op unless an older release bound it
    return exchange


async def _events_exchange(channel: AbstractChannel) -> AbstractExchange:
    """Declare the events exchange with its alternate; keep using one declared without it."""
    try:
        return await channel.declare_exchange(
            EVENTS_EXCHANGE,
            aio_pika.ExchangeType.TOPIC,
            durable=True,
            arguments={"alternate-exchange": UNROUTED},
        )
    except aio_pika.exceptions.ChannelPreconditionFailed:
        # Declared earlier without the alternate exchange: keep working with it, loudly.
        log.error(
            "%s exists without its alternate exchange %s: events no queue is bound for come "
            "back unroutable and stay pending until it is re-declared (delete the exchange "
            "while the services are stopped; they declare it again)",
            EVENTS_EXCHANGE,
            UNROUTED,
        )
    # The broker closed the channel over the refusal; a robust channel reopens it.
    for _ in range(50):
        try:
            return await channel.get_exchange(EVENTS_EXCHANGE, ensure=True)
        except aio_pika.exceptions.ChannelInvalidStateError:
            await asyncio.sleep(0.1)
    return await channel.get_exchange(EVENTS_EXCHANGE, ensure=True)


def main_arguments(names: QueueNames) -> FieldTable:
    """A consumer's queue: a delivery limit, then dead-lettered to its parking queue."""
    return {
        **QUORUM,
        **AT_LEAST_ONCE,
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": names.parking,
    }


def retry_arguments(names: QueueNames, delay_ms: int) -> FieldTable:
    """A retry queue: no consumer; after `delay_ms` the broker moves a message back."""
    return {
        **QUORUM,
        **AT_LEAST_ONCE,
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": names.main,
    }


#: The parking queue sets no delivery limit: it is only read by operators, who take each
#: message, copy it back and acknowledge it (`parking.py`), so no read ever returns one.
PARKING_ARGUMENTS: FieldTable = dict(QUORUM)


def consumer_queues(
    names: QueueNames, retry_delays_ms: Sequence[int]
) -> list[tuple[str, FieldTable]]:
    """Every queue of one consumer with its arguments: main, retry queues, parking."""
    return [
        (names.main, main_arguments(names)),
        *((names.retry(d), retry_arguments(names, d)) for d in sorted(set(retry_delays_ms))),
        (names.parking, PARKING_ARGUMENTS),
    ]


async def declare_consumer_queues(
    channel: AbstractChannel,
    exchange: AbstractExchange,
    names: QueueNames,
    *,
    bindings: Sequence[str],
    retry_delays_ms: Sequence[int],
) -> AbstractQueue:
    """Declare a consumer's queue bound to its event types, its retry queues and its parking.

    A queue that exists with other arguments is refused by the broker (ChannelPreconditionFailed);
    the deploy step (`topology`, see `provision.py`) migrates it.
    """
    # Parking first: the main queue dead-letters into it.
    declared = {
        name: await channel.declare_queue(name, durable=True, arguments=arguments)
        for name, arguments in reversed(consumer_queues(names, retry_delays_ms))
    }
    queue = declared[names.main]
    for key in bindings:
        await queue.bind(exchange, routing_key=key)
    return queue
