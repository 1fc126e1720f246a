"""The outbox relay: publish committed events in order, with confirms, marked sent only after."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aio_pika.abc import AbstractExchange

from bazaar.shared.db import Database, rows_affected
from bazaar.shared.messaging.connection import Broker
from bazaar.shared.messaging.envelope import encode_event
from bazaar.shared.messaging.metrics import MessagingMetrics
from bazaar.shared.messaging.topology import declare_exchange
from bazaar.shared.messaging.tracing import producer_span
from bazaar.shared.outbox import OUTBOX_CHANNEL

log = logging.getLogger("bazaar.messaging.relay")

#: Batches in flight at once: one being confirmed while the next is claimed and queued.
PIPELINE_DEPTH = 2
#: The outbox lag gauge is refreshed at most this often.
LAG_INTERVAL_SECONDS = 1.0

#: A row that failed this many times is stubborn (a broken binding, say, not an outage)…
STUBBORN_ATTEMPTS = 5
#: …and stubborn rows are retried at most this many per batch, beside the others.
RETRIES_PER_BATCH = 10

# SKIP LOCKED: replicas take disjoint batches instead of queueing behind each other.
# Stubborn rows are claimed apart, so they can never fill every batch and stall the events
# behind them; rows that failed a few times (a broker outage) keep their place in line.
CLAIM_BATCH = """
WITH fresh AS (
    SELECT id, position, type, event, traceparent FROM outbox
    WHERE published_at IS NULL AND attempts < $3 ORDER BY position LIMIT $1
    FOR UPDATE SKIP LOCKED
), retried AS (
    SELECT id, position, type, event, traceparent FROM outbox
    WHERE published_at IS NULL AND attempts >= $3 ORDER BY position LIMIT $2
    FOR UPDATE SKIP LOCKED
)
SELECT id, position, type, event, traceparent, false AS retried FROM fresh
UNION ALL
SELECT id, position, type, event, traceparent, true AS retried FROM retried
ORDER BY position
"""
MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])"
MARK_FAILED = """
UPDATE outbox SET attempts = attempts + 1, last_error = f.error
FROM unnest($1::uuid[], $2::text[]) AS f(id, error) WHERE outbox.id = f.id
"""
OLDEST_PENDING_AGE = """
SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM (
    SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY position LIMIT 1
) AS oldest
"""
PRUNE_PUBLISHED = """
DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)
"""


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How the relay batches, waits and gives up on one publication."""

    batch_size: int = 500
    poll_seconds: float = 1.0
    publish_timeout: float = 10.0
    #: After a wake-up, wait this long so commits arriving together go out as one batch
    #: (under load: one claim, one confirm wait and one mark for many events, not each).
    linger_seconds: float = 0.005


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did."""

    claimed: int
    published: int
    failed: int
    #: Of the claimed rows, those not stubborn (a full batch of them: more may wait).
    fresh: int = 0


async def _until_set_or_done(event: asyncio.Event, task: asyncio.Task[BatchResult]) -> None:
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


class OutboxRelay:
    """Publish pending outbox rows to `bazaar.events`; wake on NOTIFY, poll as a fallback."""

    def __init__(
        self,
        db: Database,
        broker: Broker,
        metrics: MessagingMetrics,
        settings: RelaySettings | None = None,
    ) -> None:
        self.db = db
        self.broker = broker
        self.metrics = metrics
        self.settings = settings or RelaySettings()
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._lag_recorded_at = -LAG_INTERVAL_SECONDS

    async def run(self) -> None:
        """Relay until cancelled; a failed pass is logged and retried after a pause."""
        exchange = await self._exchange()
        try:
            while True:
                await self._listen()
                try:
                    backoff = await self.relay_pending(exchange)
                except Exception:
                    log.exception("outbox relay pass failed; retrying")
                    backoff = True
                if backoff:
                    await asyncio.sleep(self.settings.poll_seconds)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
                if self.settings.linger_seconds:
                    await asyncio.sleep(self.settings.linger_seconds)
                self._wake.clear()
        finally:
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close()
                self._listener = None

    async def _exchange(self) -> AbstractExchange:
        """The events exchange on a channel of its own, declared (retried until it works)."""
        while True:
            try:
                return await declare_exchange(await self.broker.channel())
            except Exception:
                log.exception("declaring the events exchange failed; retrying")
                await asyncio.sleep(self.settings.poll_seconds)

    async def relay_pending(self, exchange: AbstractExchange) -> bool:
        """Publish batches until the outbox is drained; True if something failed (back off).

        Two batches overlap: the next is claimed (SKIP LOCKED) and queued on the channel
        while the broker confirms the previous one. The channel sends publications in the
        order they queued, so creation order holds on the wire.
        """
        in_flight: deque[asyncio.Task[BatchResult]] = deque()
        failed = False
        try:
            while True:
                if not await self.broker.ping():
                    failed = True
                    break
                queued = asyncio.Event()
                batch = asyncio.create_task(self.publish_batch(exchange, queued=queued))
                in_flight.append(batch)
                await _until_set_or_done(queued, batch)
                if batch.done() and batch.result().fresh < self.settings.batch_size:
                    break  # drained
                if len(in_flight) >= PIPELINE_DEPTH and (await in_flight.popleft()).failed:
                    failed = True
                    break
        finally:
            outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
            await self._record_lag()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            failed = failed or outcome.failed > 0
        return failed

    async def publish_batch(
        self, exchange: AbstractExchange, *, queued: asyncio.Event | None = None
    ) -> BatchResult:
        """Publish one batch in creation order; mark sent what the broker confirmed.

        `queued` is set once every publication of the batch waits its turn on the channel.
        """
        try:
            async with self.db.transaction() as conn:
                rows = await conn.fetch(
                    CLAIM_BATCH, self.settings.batch_size, RETRIES_PER_BATCH, STUBBORN_ATTEMPTS
                )
                if not rows:
                    return BatchResult(0, 0, 0)
                publications = [asyncio.create_task(self._publish(exchange, r)) for r in rows]
                # One loop turn: each publication runs to the channel's lock, in order.
                await asyncio.sleep(0)
                if queued is not None:
                    queued.set()
                outcomes = await asyncio.gather(*publications, return_exceptions=True)
                sent = [r["id"] for r, error in zip(rows, outcomes, strict=True) if error is None]
                failed = [
                    (row, error)
                    for row, error in zip(rows, outcomes, strict=True)
                    if isinstance(error, BaseException)
                ]
                if sent:
                    await conn.execute(MARK_PUBLISHED, sent)
                if failed:
                    await self._record_failures(conn, failed)
        finally:
            if queued is not None:
                queued.set()
        for row, error in zip(rows, outcomes, strict=True):
            if error is None:
                self.metrics.published.labels(row["type"]).inc()
        fresh = sum(1 for row in rows if not row["retried"])
        return BatchResult(len(rows), len(sent), len(failed), fresh)

    async def _publish(self, exchange: AbstractExchange, row: asyncpg.Record) -> None:
        event: dict[str, Any] = row["event"]
        with producer_span(event, row["traceparent"]) as headers:
            await exchange.publish(
                encode_event(event, headers=headers),
                routing_key=row["type"],
                mandatory=True,
                timeout=self.settings.publish_timeout,
            )

    async def _record_failures(
        self, conn: asyncpg.Connection, failed: Sequence[tuple[asyncpg.Record, BaseException]]
    ) -> None:
        for row, error in failed:
            reason = _reason(error)
            self.metrics.publish_failures.labels(reason).inc()
            if reason == "unroutable":
                # mandatory + no binding: nobody would ever see this event. Loud, not silent.
                log.error(
                    "unroutable event %s of type %s: no queue is bound", row["id"], row["type"]
                )
        await conn.execute(
            MARK_FAILED,
            [row["id"] for row, _ in failed],
            [f"{_reason(error)}: {error!r}"[:500] for _, error in failed],
        )

    async def _record_lag(self) -> None:
        # At most once a second: under a steady trickle every pass would pay one more query.
        now = time.monotonic()
        if now - self._lag_recorded_at < LAG_INTERVAL_SECONDS:
            return
        self._lag_recorded_at = now
        with contextlib.suppress(Exception):
            async with self.db.connection() as conn:
                self.metrics.outbox_lag.set(await conn.fetchval(OLDEST_PENDING_AGE))

    async def prune(self, retention_seconds: float) -> int:
        """Delete rows published longer ago than the retention; return how many."""
        async with self.db.connection() as conn:
            status: str = await conn.execute(PRUNE_PUBLISHED, retention_seconds)
        return rows_affected(status)

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        """LISTEN on the outbox channel, again after a lost connection; polling covers gaps."""
        if self._listener is not None and not self._listener.is_closed():
            return
        listener: asyncpg.Connection | None = None
        try:
            listener = await asyncpg.connect(self.db.settings.dsn, timeout=5)
            await listener.add_listener(OUTBOX_CHANNEL, self._on_notify)
            # A lost listener wakes the loop, which listens again at once.
            listener.add_termination_listener(self._on_notify)
        except Exception as exc:
            log.warning("outbox LISTEN unavailable (%s); polling meanwhile", exc)
            if listener is not None:  # connected, but LISTEN failed: do not leak it
                listener.terminate()
            return
        self._listener = listener
        # Events committed while nobody listened are found by the pass that follows.
        self._wake.set()


def _reason(error: BaseException) -> str:
    from aio_pika.exceptions import DeliveryError, PublishError

    if isinstance(error, PublishError):
        return "unroutable"
    if isinstance(error, DeliveryError):
        return "nacked"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "connection"
