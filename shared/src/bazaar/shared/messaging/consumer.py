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
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity import wait_random_exponential as jittered

from bazaar.shared.db import Database
from bazaar.shared.dbfailure import is_retryable, sqlstate
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
from bazaar.shared.tasks import wait_at_most

log = logging.getLogger("bazaar.messaging.consumer")

#: A handler applies one event inside the open transaction that also records it as processed.
Handler = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[None]]

#: The server's statement_timeout (or an operator's pg_cancel_backend): query_canceled.
QUERY_CANCELED = "57014"
#: The longest pause between two tries of a message during a database outage.
TRANSIENT_MAX_PAUSE = 5.0


def is_transient(exc: BaseException) -> bool:
    """Answer whether a failure is the infrastructure's, so the message spends no attempt.

    The database's own classification (`dbfailure.is_retryable`: unreachable, starting or
    shutting down, too many connections, serialization failure, deadlock). Timeouts are
    the exception: a statement that runs out of time (asyncpg's command_timeout, the
    server's statement_timeout) may do so every time for this message, so it spends an
    attempt and ends parked instead of holding its consumer forever.
    """
    if isinstance(exc, DatabaseUnresponsive):
        return True
    if isinstance(exc, TimeoutError) or sqlstate(exc) == QUERY_CANCELED:
        return False
    return is_retryable(exc)


class DatabaseUnresponsive(Exception):
    """A statement timed out and the database then did not answer a ping: an outage.

    A database that silently hangs answers nothing and refuses nothing; without this check
    every message would spend its attempts on timeouts and end parked.
    """


@dataclass(frozen=True, slots=True)
class Subscription:
    """A consumer a service declares: a name (its queue is `<service>.<name>`), events, handler."""

    name: str
    events: tuple[str, ...]
    handle: Handler

    def queue_name(self, service: str) -> str:
        """The durable queue of this consumer in `service`."""
        return f"{service}.{self.name}"

    def receives(self, routing_key: str) -> bool:
        """Whether the broker routes a message with `routing_key` to this consumer's queue:
        its queue is bound to the topic exchange with each of `events` (`declare_consumer_queues`).
        """
        return any(topic_matches(binding, routing_key) for binding in self.events)


def topic_matches(binding: str, routing_key: str) -> bool:
    """Whether a topic exchange routes `routing_key` through a binding of `binding`, as
    RabbitMQ does: dot-separated words, `*` stands for exactly one word, `#` for zero or more.
    """
    return _words_match(tuple(binding.split(".")), tuple(routing_key.split(".")))


def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _words_match(rest, words[1:])


async def apply_once(db: Database, consumer: str, handle: Handler, event: dict[str, Any]) -> bool:
    """Apply `event` once for `consumer` (its queue's name): its inbox row and `handle` in one
    transaction, so either both commit or neither; False (nothing done) if it already was.

    What a consumer does with each message it takes (`Consumer` adds retries, acks and
    parking around it); the pact tests apply the pacts' messages with it.
    """
    async with db.transaction() as conn:
        fresh = await claim_message(conn, consumer, event["id"])
        if fresh:
            await handle(conn, event)
    return fresh


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """Prefetch, retry schedule and parking threshold of every consumer of a service."""

    prefetch: int = 32
    max_attempts: int = 5
    retry_delays_ms: tuple[int, ...] = (1000, 5000, 30000)
    #: The first pause of a message held through a database outage; later ones grow (with
    #: jitter) to TRANSIENT_MAX_PAUSE. Held, not requeued: no delivery is spent.
    transient_pause: float = 0.5


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
        self._stopping = asyncio.Event()

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
        self._stopping.set()  # messages held through an outage go back to the queue
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag, timeout=drain_seconds)
        await wait_at_most(self._idle, drain_seconds)
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
                fresh = await self._apply(event, message)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                if message.channel.is_closed:
                    # The broker took it back (restart, consumer timeout): it is redelivered.
                    log.warning("%s: event %s given back with its channel", consumer, event["id"])
                    return
                if is_transient(exc):
                    # Only when stopping: someone else takes it once the database is back.
                    await message.nack(requeue=True)
                else:
                    await self._fail(message, event, exc)
                return
        await message.ack()
        self.metrics.consumed.labels(consumer, "applied" if fresh else "duplicate").inc()
        if fresh:
            self.metrics.end_to_end.labels(consumer).observe(_age(event))

    async def _apply(self, event: dict[str, Any], message: AbstractIncomingMessage) -> bool:
        """Apply the event with its inbox row in one transaction; False if it already was.

        A failure of the infrastructure is retried here, holding the message, until it
        succeeds or the consumer stops: a requeue would count against the queue's delivery
        limit (`topology.DELIVERY_LIMIT`), a pause here counts nothing. Holding ends when the
        consumer stops or the broker has taken the message back (its channel closed): the
        broker redelivers it, so trying on would only apply it twice at once.
        """
        fresh = False

        def let_go(_state: RetryCallState) -> bool:
            return self._stopping.is_set() or message.channel.is_closed

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=jittered(self.settings.transient_pause, TRANSIENT_MAX_PAUSE),
            stop=let_go,
            sleep=self._pause,
            before_sleep=lambda state: self._log_transient(event, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    fresh = await apply_once(
                        self.db, self.queue_name, self.subscription.handle, event
                    )
                except TimeoutError as exc:
                    # The message's own slowness, or a database that stopped answering?
                    if not await self.db.ping():
                        raise DatabaseUnresponsive("no answer to a ping after a timeout") from exc
                    raise
        return fresh

    async def _pause(self, seconds: float) -> None:
        # Cut short by stop(): a held message must not delay the drain.
        await wait_at_most(self._stopping, seconds)

    def _log_transient(self, event: dict[str, Any], state: RetryCallState) -> None:
        # The first failure and every tenth: a prefetch of messages waiting out an outage
        # would otherwise log a few lines a second each.
        if state.attempt_number != 1 and state.attempt_number % 10:
            return
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        log.warning(
            "%s: event %s waits for the database (try %d: %s)",
            self.queue_name,
            event["id"],
            state.attempt_number,
            type(exc).__name__,
        )

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
        assert self._channel is not None  # noqa: S101 - narrows: consuming by now
        await send_to_retry(self._channel, message, self.names.retry(delay), attempts=attempts)
        await message.ack()
        self.metrics.retried.labels(self.queue_name).inc()

    async def _park(
        self, message: AbstractIncomingMessage, reason: str, *, attempts: int = 0
    ) -> None:
        log.error("%s: message %s parked: %s", self.queue_name, message.message_id, reason)
        assert self._channel is not None  # noqa: S101 - narrows: consuming by now
        await park(self._channel, message, self.names, reason=reason, attempts=attempts)
        await message.ack()
        self.metrics.parked.labels(self.queue_name).inc()


def _age(event: dict[str, Any]) -> float:
    try:
        created = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return max(0.0, (datetime.now(UTC) - created).total_seconds())
