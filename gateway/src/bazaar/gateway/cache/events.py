"""Invalidation by `catalog.*` events: every replica sees every event.

Each replica binds a queue of its own (exclusive, auto-deleted with its connection) to
`catalog.#` on the events exchange and drops the entries of the products an event names,
and every list. Not the shared durable `Consumer`: invalidation is idempotent and touches
no database, so it needs no inbox, no retries and no parking, and a durable queue shared
by replicas would give each event to one replica only. Not the shared robust `Broker`
either: the cache must know the moment its subscription is lost (from then on only
entries at most 1 s old are served, see `trust`) and the moment it is whole again, so
this loop owns a plain connection, declares everything again on each one, and says so.
Events missed between the two are why entries fetched before the new subscription are
held to 1 s too.

A broker or network that goes silent without closing anything (no reset, no FIN) would be
noticed only by AMQP heartbeats, after 15-20 s of stale hits. So the loop also probes the
path events take: every `PROBE_INTERVAL` it publishes a small message to its own queue (the
default exchange routes it by the queue's name) and, while none sent in the last
`PROBE_DEADLINE` has come back, holds hits to 1 s (`trust.lost`). When a probe comes back,
every message queued before it has been delivered: entries fetched after it was sent are
trusted again (`trust.subscribed_since` its send time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from yarl import URL

from bazaar.gateway.cache.key import LISTS
from bazaar.gateway.cache.trust import Trust
from bazaar.gateway.throttledlog import ThrottledWarning
from bazaar.shared.backoff import Backoff
from bazaar.shared.messaging.envelope import MalformedEvent, decode_event
from bazaar.shared.messaging.topology import declare_exchange
from bazaar.shared.tasks import cancel_and_wait, periodically

log = logging.getLogger("bazaar.gateway")

#: The routing keys (event types) the cache listens to.
BINDING = "catalog.#"
#: Seconds between heartbeats unless the URL says otherwise: a broker that silently
#: vanished (no reset reaches us) is noticed within about two of them.
HEARTBEAT_SECONDS = 5
CONNECT_TIMEOUT = 5.0
#: Seconds between liveness probes, and within which one must have come back.
PROBE_INTERVAL = 0.25
PROBE_DEADLINE = 0.75
#: The type of a probe message (published by this replica to its own queue).
PROBE_TYPE = "bazaar.gateway.cache.probe"
#: What a publish on a channel that is closing or closed raises.
_PUBLISH_FAILED = (TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError)

Invalidate = Callable[[Sequence[str] | None], Awaitable[None]]


def products_named(body: bytes) -> list[str] | None:
    """The products a catalog event names (its `id`, `product_id` or lines' `product_id`),
    or None when it names none that can be read: then everything must go."""
    try:
        event = decode_event(body)
    except MalformedEvent:
        return None
    data = event.get("data")
    if not isinstance(data, dict):
        return None
    named: list[Any] = [data.get("product_id")]
    if str(event["type"]).startswith("catalog.product."):
        named.append(data.get("id"))
    lines = data.get("lines")
    if isinstance(lines, list):
        named += [line.get("product_id") for line in lines if isinstance(line, dict)]
    ids = [value for value in named if isinstance(value, str)]
    return ids or None


class CatalogEvents:
    """The subscription of one replica: it keeps `trust` told whether it is whole."""

    def __init__(
        self, url: str, *, invalidate: Invalidate, trust: Trust, warning: ThrottledWarning
    ) -> None:
        parsed = URL(url)
        if "heartbeat" not in parsed.query:
            parsed = parsed.update_query(heartbeat=HEARTBEAT_SECONDS)
        self._url = parsed
        self._invalidate = invalidate
        self._trust = trust
        self._warning = warning
        self._task: asyncio.Task[None] | None = None
        self.queue = f"gateway.cache.{uuid.uuid4().hex[:12]}"
        self._bound = 0.0  # when the current subscription began (monotonic)
        self._echoed = 0.0  # send time of the latest probe that came back
        self._turn = 0.0  # when the last probe was sent
        self._flowing = False  # whether probes come back

    def start(self) -> None:
        """Subscribe in the background (and again after every loss), never blocking."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """End the subscription."""
        if self._task is not None:
            await cancel_and_wait(self._task)  # its broker loop may swallow one cancel
        self._trust.lost()

    async def _run(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                await self._subscribed(backoff)
            except Exception as exc:  # whatever ended it, subscribe again
                self._warning.warn(
                    "cache invalidation events lost (%s): hits are at most 1 s old until "
                    "re-subscribed",
                    type(exc).__name__,
                )
            finally:
                self._trust.lost()
            await backoff.sleep()

    async def _subscribed(self, backoff: Backoff) -> None:
        """Subscribe on a new connection and return once it is lost."""
        connection = await aio_pika.connect(
            self._url,
            timeout=CONNECT_TIMEOUT,
            client_properties={"connection_name": "bazaar-gateway cache invalidation"},
        )
        try:
            lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

            def on_close(_sender: object, exc: BaseException | None = None) -> None:
                if not lost.done():
                    lost.set_result(exc)

            connection.close_callbacks.add(on_close)
            channel = await connection.channel(publisher_confirms=False)
            channel.close_callbacks.add(on_close)
            exchange = await declare_exchange(channel)
            queue = await channel.declare_queue(
                self.queue,
                exclusive=True,
                auto_delete=True,
                arguments={"x-queue-type": "classic"},  # per replica, transient
            )
            await queue.bind(exchange, routing_key=BINDING)
            bound_at = time.monotonic()  # every change committed after this is delivered
            await queue.consume(self._on_message, no_ack=True)  # idempotent: nothing to ack
            self._trust.subscribed_since(bound_at)
            self._bound = self._echoed = self._turn = bound_at
            self._flowing = True
            backoff.reset()
            log.info("cache invalidation subscribed to %s (queue %s)", BINDING, self.queue)
            probing = periodically(
                PROBE_INTERVAL,
                lambda: self._probe(channel),
                name="cache invalidation probe",
                done_level=logging.DEBUG,
            )
            async with probing:
                reason = await lost
            raise aio_pika.exceptions.AMQPConnectionError(f"subscription closed: {reason!r}")
        finally:
            self._trust.lost()
            with contextlib.suppress(Exception):
                await connection.close()

    async def _probe(self, channel: AbstractChannel) -> None:
        """Judge whether probes come back, then send the next one."""
        now = time.monotonic()
        # A turn late by far means this loop was busy, not the broker silent: the probes
        # that came back meanwhile are read before the next turn judges.
        late = now - self._turn > 3 * PROBE_INTERVAL
        self._turn = now
        if self._flowing and not late and now - self._echoed > PROBE_DEADLINE:
            self._flowing = False
            self._trust.lost()
            self._warning.warn(
                "cache invalidation events stalled (no probe back through the broker in "
                "%.2f s): hits are at most 1 s old until they flow again",
                PROBE_DEADLINE,
            )
        probe = aio_pika.Message(repr(now).encode(), type=PROBE_TYPE)
        with contextlib.suppress(*_PUBLISH_FAILED):  # the verdict above tells what matters
            await channel.default_exchange.publish(
                probe, routing_key=self.queue, timeout=PROBE_INTERVAL
            )

    def _echo(self, body: bytes) -> None:
        """A probe came back: messages flow (again) through the broker to this queue."""
        try:
            sent = float(body)
        except ValueError:
            return
        if sent < self._bound:
            return  # sent on an earlier subscription
        self._echoed = max(self._echoed, sent)
        if not self._flowing:
            self._flowing = True
            self._trust.subscribed_since(sent)
            log.info("cache invalidation events flow again (queue %s)", self.queue)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if message.type == PROBE_TYPE and not message.exchange:
            self._echo(message.body)
            return
        products = products_named(message.body)
        if products is None:  # only catalog publishes these: a bug, not a flood
            log.warning("a catalog event naming no product (%s) dropped every entry", message.type)
        await self._invalidate(None if products is None else [LISTS, *products])
