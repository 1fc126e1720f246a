"""Idempotent consumers: apply in one transaction with the inbox row, ack after the commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from opentelemetry.trace import StatusCode

from bazaar.shared.db import Database, DatabaseBusy
from bazaar.shared.messaging.connection import Broker
from bazaar.shared.messaging.envelope import (
    MalformedEvent,
    attempts_of,
    decode_event,
)
from bazaar.shared.messaging.inbox import claim_message
from bazaar.shared.messaging.metrics import MessagingMetrics
from bazaar.shared.messaging.parking import park, send_to_retry
from bazaar.shared.messaging.topology import QueueNames, declare_consumer_queues, declare_exchange
from bazaar.shared.messaging.tracing import consumer_span

log = logging.getLogger("bazaar.messaging.consumer")

#: A handler applies one event inside the open transaction that also records it as processed.
Handler = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[None]]

#: Failures of the infrastructure, not of the message: wait and requeue, spending no attempt
#: (a TimeoutError, an OSError too, is the exception: it spends one).
TRANSIENT = (DatabaseBusy, OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A consumer a service declares: a name (its queue is `<service>.<name>`), events, handler."""

    name: str
    events: tuple[str, ...]
    handle: Handler

    def queue_name(self, service: str) -> str:
        """The durable queue of this consumer in `service`."""
        return f"{service}.{self.name}"


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """Prefetch, retry schedule and parking threshold of every consumer of a service."""

    prefetch: int = 32
    max_attempts: int = 5
    retry_delays_ms: tuple[int, ...] = (1000, 5000, 30000)
    transient_pause: float = 1.0


class Consumer:
    """One subscription bound to its durable queue, with retries and a parking queue."""

    def __init__(
        self,
        subscription: Subscription,
        *,
        service: str,
        db: Database,
        broker: Broker,
        metrics: MessagingMetrics,
        settings: ConsumerSettings | None = None,
    ) -> None:
        self.subscription = subscription
        self.names = QueueNames(subscription.queue_name(service))
        self.db = db
        self.broker = broker
        self.metrics = metrics
        self.settings = settings or ConsumerSettings()
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queue_name(self) -> str:
        """The consumer's main queue (also its name in the inbox)."""
        return self.names.main

    async def start(self) -> None:
        """Declare the topology and start consuming."""
        self._channel = await self.broker.channel(prefetch=self.settings.prefetch)
        exchange = await declare_exchange(self._channel)
        # The strong reference matters: a robust channel only restores queues still alive.
        self._queue = await declare_consumer_queues(
            self._channel,
            exchange,
            self.names,
            bindings=self.subscription.events,
            retry_delays_ms=self.settings.retry_delays_ms,
        )
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, drain_seconds: float) -> None:
        """Take no new messages, let those in flight finish (up to `drain_seconds`), close."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag, timeout=drain_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_seconds)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._process(message)
        except Exception:
            # Unacked, the message comes back when the channel does: nothing is lost.
            log.exception("message %s left unacknowledged", message.message_id)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _process(self, message: AbstractIncomingMessage) -> None:
        consumer = self.queue_name
        try:
            event = decode_event(message.body)
        except MalformedEvent as exc:
            await self._park(message, f"malformed: {exc}")
            return
        with consumer_span(consumer, event, message.headers or {}) as span:
            try:
                async with self.db.transaction() as conn:
                    fresh = await claim_message(conn, consumer, event["id"])
                    if fresh:
                        await self.subscription.handle(conn, event)
            except TRANSIENT as exc:
                if isinstance(exc, TimeoutError):
                    # A statement that ran out of time (command_timeout) may do so every
                    # time for this message: it spends an attempt, so it ends parked.
                    span.record_exception(exc)
                    span.set_status(StatusCode.ERROR, type(exc).__name__)
                    await self._fail(message, event, exc)
                    return
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                log.warning(
                    "%s: transient failure on %s (%s); requeued", consumer, event["id"], exc
                )
                await asyncio.sleep(self.settings.transient_pause)
                await message.nack(requeue=True)
                return
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                await self._fail(message, event, exc)
                return
        await message.ack()
        self.metrics.consumed.labels(consumer, "applied" if fresh else "duplicate").inc()
        if fresh:
            self.metrics.end_to_end.labels(consumer).observe(_age(event))

    async def _fail(
        self, message: AbstractIncomingMessage, event: dict[str, Any], exc: Exception
    ) -> None:
        attempts = attempts_of(message) + 1
        reason = f"{type(exc).__name__}: {exc}"[:500]
        if attempts >= self.settings.max_attempts:
            await self._park(message, reason, attempts=attempts)
            return
        delays = self.settings.retry_delays_ms
        delay = delays[min(attempts, len(delays)) - 1]
        log.warning(
            "%s: event %s failed (attempt %d of %d), retry in %d ms: %s",
            self.queue_name,
            event["id"],
            attempts,
            self.settings.max_attempts,
            delay,
            reason,
        )
        assert self._channel is not None
        await send_to_retry(self._channel, message, self.names.retry(delay), attempts=attempts)
        await message.ack()
        self.metrics.retried.labels(self.queue_name).inc()

    async def _park(
        self, message: AbstractIncomingMessage, reason: str, *, attempts: int = 0
    ) -> None:
        log.error("%s: message %s parked: %s", self.queue_name, message.message_id, reason)
        assert self._channel is not None
        await park(self._channel, message, self.names, reason=reason, attempts=attempts)
        await message.ack()
        self.metrics.parked.labels(self.queue_name).inc()


def _age(event: dict[str, Any]) -> float:
    try:
        created = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return max(0.0, (datetime.now(UTC) - created).total_seconds())
