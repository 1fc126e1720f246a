"""The broker topology: one topic exchange, and per consumer a queue, retry queues and parking."""

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
#: The alternate exchange and queue of events no subscriber is bound for (yet): kept, bounded,
#: for operators, so an event without subscribers is neither lost nor an endless alarm.
UNROUTED = "bazaar.events.unrouted"
UNROUTED_MAX_LENGTH = 100_000
#: Durable queues are quorum queues (replicated, poison-aware) where the broker has them.
QUORUM: FieldTable = {"x-queue-type": "quorum"}


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
    """Declare the durable topic exchange of domain events and its alternate (idempotent).

    With the alternate exchange in place, a `mandatory` publication comes back only when
    the topology itself is broken, which is an alarm and never a silent loss.
    """
    unrouted = await channel.declare_exchange(UNROUTED, aio_pika.ExchangeType.FANOUT, durable=True)
    parked = await channel.declare_queue(
        UNROUTED,
        durable=True,
        arguments={**QUORUM, "x-max-length": UNROUTED_MAX_LENGTH},
    )
    await parked.bind(unrouted)
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
            "%s exists without its alternate exchange %s: events nobody subscribes to come "
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


async def declare_consumer_queues(
    channel: AbstractChannel,
    exchange: AbstractExchange,
    names: QueueNames,
    *,
    bindings: Sequence[str],
    retry_delays_ms: Sequence[int],
) -> AbstractQueue:
    """Declare a consumer's queue bound to its event types, its retry queues and its parking."""
    queue = await channel.declare_queue(names.main, durable=True, arguments=dict(QUORUM))
    for key in bindings:
        await queue.bind(exchange, routing_key=key)
    for delay in sorted(set(retry_delays_ms)):
        # A retry queue has no consumer: the message waits out its TTL, then the broker
        # dead-letters it through the default exchange straight back to the main queue.
        await channel.declare_queue(
            names.retry(delay),
            durable=True,
            arguments={
                **QUORUM,
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": names.main,
            },
        )
    await channel.declare_queue(names.parking, durable=True, arguments=dict(QUORUM))
    return queue
