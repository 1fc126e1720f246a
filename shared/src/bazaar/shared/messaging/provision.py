"""The `topology` deploy step: declare every queue and binding, migrating older declarations.

Run before any process of the service starts (like migrations), so an event published by
another service finds its consumers' queues already there instead of going unrouted. A
queue that exists with other arguments (declared by an older version) cannot be declared
again: its messages move to a holding queue bound like it, it is re-created, and they move
back. Nothing is lost meanwhile: whatever is published in between lands in the holding queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.common import FieldTable

from bazaar.shared.messaging.consumer import Subscription
from bazaar.shared.messaging.envelope import copy_with_headers
from bazaar.shared.messaging.topology import (
    EVENTS_EXCHANGE,
    QUORUM,
    QueueNames,
    consumer_queues,
    declare_exchange,
)

#: How often a migration re-checks that the old queue is empty before deleting it.
DELETE_TRIES = 20
#: An exclusive queue held while a run works: a second run waits for it (runs never race).
LOCK_QUEUE = "bazaar.topology.lock"
#: How long a run waits for another to finish, and how often it looks.
LOCK_WAIT_SECONDS = 120.0
LOCK_POLL_SECONDS = 0.5


class TopologyConflict(RuntimeError):
    """A queue has to be re-declared but something still consumes from it."""


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue of the suite: its arguments and the event types bound to it."""

    name: str
    arguments: FieldTable
    bindings: tuple[str, ...] = ()
    #: Queues that dead-letter into this one (a main queue's retry queues).
    feeders: tuple[str, ...] = ()


def service_queues(
    service: str, subscriptions: Sequence[Subscription], retry_delays_ms: Sequence[int]
) -> list[QueueSpec]:
    """Every queue of a service's consumers (parking first: the others dead-letter into it)."""
    specs = []
    for subscription in subscriptions:
        names = QueueNames(subscription.queue_name(service))
        queues = consumer_queues(names, retry_delays_ms)
        retries = tuple(queue for queue, _ in queues[1:-1])
        for queue, arguments in reversed(queues):
            if queue == names.main:
                specs.append(QueueSpec(queue, arguments, subscription.events, retries))
            else:
                specs.append(QueueSpec(queue, arguments))
    return specs


def holding_name(queue: str) -> str:
    """Where a queue's messages wait while it is re-created."""
    return f"{queue}.migrating"


async def provision(connection: AbstractConnection, specs: Sequence[QueueSpec]) -> list[str]:
    """Declare the events exchange and every queue with its bindings; one line per queue.

    Refuses (TopologyConflict) before touching anything when a queue must be migrated while
    any of the queues is still consumed; one run at a time (an exclusive lock queue).
    """
    async with _locked(connection):
        await _refuse_while_consumed(connection, specs)
        async with _channel(connection) as channel:
            await declare_exchange(channel)
        return [f"{spec.name}: {await ensure_queue(connection, spec)}" for spec in specs]


async def _refuse_while_consumed(
    connection: AbstractConnection, specs: Sequence[QueueSpec]
) -> None:
    """If any queue needs migrating, refuse while any queue of the service has consumers.

    Checked for all before the first change: a run refused half-way would have migrated
    the retry or parking queues already, which an older release then cannot declare.
    """
    differing = [spec.name for spec in specs if await _differs(connection, spec)]
    if not differing:
        return
    consumed = []
    for spec in specs:
        consumers = await _consumers(connection, spec.name)
        if consumers and spec.name in differing:
            consumed.append(
                f"queue {spec.name} exists with other arguments and {consumers} consumer(s)"
            )
        elif consumers:
            consumed.append(
                f"queue {spec.name} has {consumers} consumer(s) while {', '.join(differing)} "
                "must be re-declared with other arguments"
            )
    if consumed:
        raise TopologyConflict(
            f"{'; '.join(consumed)} (an older version still running, so nothing was "
            "changed): stop them (make down; docker compose stop; kubectl scale deployment "
            "--replicas=0), run this step again, then start the new version; nothing is lost "
            "meanwhile, events wait in the queues"
        )


async def _differs(connection: AbstractConnection, spec: QueueSpec) -> bool:
    """Answer whether the queue exists with other arguments (changing nothing)."""
    if not await _exists(connection, spec.name):
        return False
    try:
        async with _channel(connection) as channel:
            # Exists: with the same arguments this is a no-op; with others it is refused.
            await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed:
        return True
    return False


async def _consumers(connection: AbstractConnection, queue: str) -> int:
    try:
        async with _channel(connection) as channel:
            declared = await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return 0
    return declared.declaration_result.consumer_count or 0


@asynccontextmanager
async def _locked(connection: AbstractConnection) -> AsyncIterator[None]:
    """Hold the topology lock (an exclusive queue, gone with our connection if we die)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT_SECONDS
    while True:
        channel = await connection.channel()
        try:
            await channel.declare_queue(LOCK_QUEUE, exclusive=True, auto_delete=True)
            break
        except aiormq.exceptions.ChannelLockedResource:
            with contextlib.suppress(Exception):
                await channel.close()
            if loop.time() > deadline:
                raise TopologyConflict(
                    f"another topology run holds {LOCK_QUEUE} for over {LOCK_WAIT_SECONDS:.0f} s"
                ) from None
            await asyncio.sleep(LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await channel.queue_delete(LOCK_QUEUE)
            await channel.close()


async def ensure_queue(connection: AbstractConnection, spec: QueueSpec) -> str:
    """Declare one queue and its bindings; migrate it if it exists with other arguments."""
    outcome = "declared"
    try:
        async with _channel(connection) as channel:
            await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed:
        await _migrate(connection, spec)
        outcome = "migrated (re-declared with new arguments, messages kept)"
    async with _channel(connection) as channel:
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        for key in spec.bindings:
            await queue.bind(exchange, routing_key=key)
    # A migration cut short left its holding queue: finish it.
    if await _exists(connection, holding_name(spec.name)):
        await _finish(connection, spec)
        outcome = "migrated (an interrupted migration finished)"
    return outcome


async def _migrate(connection: AbstractConnection, spec: QueueSpec) -> None:
    holding = holding_name(spec.name)
    async with _channel(connection) as channel:
        old = await channel.declare_queue(spec.name, passive=True)
        consumers = old.declaration_result.consumer_count or 0
        if consumers:
            raise TopologyConflict(
                f"queue {spec.name} exists with other arguments and {consumers} consumer(s) "
                "(an older version still running): stop them (make down; docker compose stop; "
                "kubectl scale deployment --replicas=0), run this step again, then start the "
                "new version; nothing is lost meanwhile, events wait in the queue"
            )
        waiting = await channel.declare_queue(holding, durable=True, arguments=dict(QUORUM))
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        for key in spec.bindings:
            await waiting.bind(exchange, routing_key=key)
        # From here on publications reach the holding queue alone, so the old one only
        # empties (no duplicates copied over, no endless chase under steady publishing).
        for key in spec.bindings:
            await old.unbind(exchange, routing_key=key)
    # Quorum queues refuse `if-unused` and `if-empty`, so both are checked just before.
    for _ in range(DELETE_TRIES):
        async with _channel(connection) as channel:
            # Its retry queues go first: nothing consumes (checked), so none fills again and
            # no retry expires into the old queue between the check and the delete.
            for feeder in spec.feeders:
                if await _exists(connection, feeder):
                    await _move(channel, feeder, holding)
            await _move(channel, spec.name, holding)
            still = await channel.declare_queue(spec.name, passive=True)
            if still.declaration_result.consumer_count:
                raise TopologyConflict(f"queue {spec.name} got a consumer while being migrated")
            if still.declaration_result.message_count:
                continue
            await channel.queue_delete(spec.name)
            return
    raise TopologyConflict(f"queue {spec.name} never stayed empty long enough to re-create it")


async def _finish(connection: AbstractConnection, spec: QueueSpec) -> None:
    """Unbind the holding queue, move its messages to the re-declared queue, delete it."""
    holding = holding_name(spec.name)
    async with _channel(connection) as channel:
        waiting = await channel.declare_queue(holding, passive=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        for key in spec.bindings:
            await waiting.unbind(exchange, routing_key=key)
    for _ in range(DELETE_TRIES):
        async with _channel(connection) as channel:
            await _move(channel, holding, spec.name)
            still = await channel.declare_queue(holding, passive=True)
            if not still.declaration_result.message_count:
                await channel.queue_delete(holding)
                return


async def _move(channel: AbstractChannel, source: str, target: str) -> int:
    """Move every message of `source` to `target`: confirmed copy first, then the ack."""
    queue = await channel.declare_queue(source, passive=True)
    moved = 0
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        await channel.default_exchange.publish(
            copy_with_headers(message), routing_key=target, mandatory=True
        )
        await message.ack()
        moved += 1
    return moved


async def _exists(connection: AbstractConnection, queue: str) -> bool:
    try:
        async with _channel(connection) as channel:
            await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    return True


@asynccontextmanager
async def _channel(connection: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    """A channel with publisher confirms for one step, closed after it (a refused
    declaration closes it on the broker's side: each step takes a fresh one)."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        yield channel
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
