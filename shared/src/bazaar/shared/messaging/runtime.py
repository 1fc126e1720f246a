"""The messaging of one service process: its broker connection, outbox relay and consumers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field

import aio_pika
from prometheus_client import CollectorRegistry

from bazaar.shared.backoff import Backoff
from bazaar.shared.db import Database
from bazaar.shared.messaging.connection import Broker
from bazaar.shared.messaging.consumer import Consumer, ConsumerSettings, Subscription
from bazaar.shared.messaging.depth import QueueDepth
from bazaar.shared.messaging.inbox import prune_processed
from bazaar.shared.messaging.metrics import MessagingMetrics
from bazaar.shared.messaging.relay import OutboxRelay, RelaySettings
from bazaar.shared.messaging.topology import UNROUTED
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.tasks import cancel_and_wait, periodically

log = logging.getLogger("bazaar.messaging")

#: How often published outbox rows and old inbox rows are deleted.
PRUNE_INTERVAL_SECONDS = 600.0
#: The longest pause before declaring a consumer's queues again after a refusal.
START_RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class MessagingSettings:
    """Everything the messaging of one service is tuned by."""

    url: str
    relay: RelaySettings = field(default_factory=RelaySettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    outbox_retention_seconds: float = 72 * 3600.0
    inbox_retention_seconds: float = 14 * 86400.0
    drain_seconds: float = 10.0
    #: How often the ready messages of the parking queues and of the unrouted queue are
    #: asked from the broker (`bazaar_queue_messages`).
    queue_depth_seconds: float = 15.0


def messaging_settings(settings: ServiceSettings) -> MessagingSettings | None:
    """The messaging settings of a service, or None when no broker is configured."""
    if settings.amqp_url is None:
        return None
    return MessagingSettings(
        url=settings.amqp_url.get_secret_value(),
        relay=RelaySettings(
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            linger_seconds=settings.outbox_linger_seconds,
        ),
        consumer=ConsumerSettings(
            prefetch=settings.consumer_prefetch,
            max_attempts=settings.consumer_max_attempts,
            retry_delays_ms=settings.consumer_retry_delays_ms,
        ),
        outbox_retention_seconds=settings.outbox_retention_hours * 3600.0,
        inbox_retention_seconds=settings.inbox_retention_days * 86400.0,
        drain_seconds=settings.consumer_drain_seconds,
    )


class Messaging:
    """Relay this service's outbox and run its consumers for as long as `running()` lasts."""

    def __init__(
        self,
        settings: MessagingSettings,
        *,
        service: str,
        db: Database,
        registry: CollectorRegistry,
        subscriptions: Sequence[Subscription] = (),
    ) -> None:
        self.settings = settings
        self.service = service
        self.db = db
        self.metrics = MessagingMetrics(registry)
        self.broker = Broker(settings.url, name=service)
        # Publishing on a connection of its own (RabbitMQ's advice): a memory or disk alarm
        # blocks a publishing connection, and the broker would stop reading the consumers'
        # acknowledgements on it too.
        self.publisher = (
            Broker(settings.url, name=f"{service} publisher") if subscriptions else self.broker
        )
        self.relay = OutboxRelay(db, self.publisher, self.metrics, settings.relay)
        self.consumers = [
            Consumer(
                s,
                service=service,
                db=db,
                broker=self.broker,
                metrics=self.metrics,
                settings=settings.consumer,
            )
            for s in subscriptions
        ]
        self.depth = QueueDepth(
            self.broker,
            [*(c.names.parking for c in self.consumers), UNROUTED],
            self.metrics.queue_messages,
            interval=settings.queue_depth_seconds,
        )
        self._started = asyncio.Event()

    async def ready(self) -> bool:
        """Answer whether the broker is connected and every consumer consumes (readiness)."""
        return self._started.is_set() and await self.broker.ping() and await self.publisher.ping()

    async def wait_started(self) -> None:
        """Wait until the consumers consume and the relay runs."""
        await self._started.wait()

    async def _run(self) -> None:
        await self.broker.connect()
        if self.publisher is not self.broker:
            await self.publisher.connect()
        for consumer in self.consumers:
            # A refused declaration (e.g. a queue declared with other arguments) is logged
            # and retried: readiness stays failing meanwhile, the process keeps serving.
            backoff = Backoff(0.5, START_RETRY_SECONDS)
            while True:
                try:
                    await consumer.start()
                    break
                except aio_pika.exceptions.ChannelPreconditionFailed as exc:
                    log.error(
                        "consumer %s: its queues exist with other arguments (%s); run the "
                        "deploy step `bazaar-%s topology` to migrate them; retrying",
                        consumer.queue_name,
                        exc,
                        self.service,
                    )
                except Exception:
                    log.exception("consumer %s could not start; retrying", consumer.queue_name)
                await backoff.sleep()
        relay = asyncio.create_task(self.relay.run(), name="outbox relay")
        self._started.set()
        try:
            await relay
        finally:
            await cancel_and_wait(relay)

    async def _watch_queues(self) -> None:
        # Once started: the consumers' queues (and the relay's unrouted) are declared then.
        await self._started.wait()
        await self.depth.watch()

    async def prune(self) -> int:
        """Delete published outbox rows and inbox rows past their retention."""
        pruned = await self.relay.prune(self.settings.outbox_retention_seconds)
        if self.consumers:
            async with self.db.connection() as conn:
                pruned += await prune_processed(conn, self.settings.inbox_retention_seconds)
        return pruned

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Connect in the background (start-up never waits on the broker); drain on exit."""
        task = asyncio.create_task(self._run(), name="messaging")
        try:
            # The gauges' own loops, from the start: the broker may be out of reach for long.
            async with (
                _in_background(self.relay.lag.watch(), name="outbox lag"),
                _in_background(self._watch_queues(), name="queue depth"),
                periodically(PRUNE_INTERVAL_SECONDS, self.prune, name="prune messaging"),
            ):
                yield
        finally:
            await asyncio.gather(
                *(c.stop(self.settings.drain_seconds) for c in self.consumers),
                return_exceptions=True,
            )
            await cancel_and_wait(task)
            await self.broker.close()
            if self.publisher is not self.broker:
                await self.publisher.close()
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("messaging stopped with an error", exc_info=task.exception())


@contextlib.asynccontextmanager
async def _in_background(job: Coroutine[None, None, None], *, name: str) -> AsyncIterator[None]:
    """Run `job` as a task inside the block; cancel it and wait for its end after."""
    task = asyncio.create_task(job, name=name)
    task.add_done_callback(_report_crash)
    try:
        yield
    finally:
        # Cancelled again until it ended: a broker call may swallow one cancellation (a
        # test hung for ever here once, the queue-depth loop going on after its cancel).
        await cancel_and_wait(task)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped with an error", task.get_name(), exc_info=task.exception())
