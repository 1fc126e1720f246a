"""The outbox relay: publish committed events in order, with confirms, marked sent only after."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange

from bazaar.shared.backoff import Backoff
from bazaar.shared.db import Database, rows_affected
from bazaar.shared.dbfailure import is_retryable
from bazaar.shared.messaging.connection import Broker
from bazaar.shared.messaging.envelope import encode_event
from bazaar.shared.messaging.lag import OutboxLag
from bazaar.shared.messaging.listener import OutboxListener
from bazaar.shared.messaging.metrics import MessagingMetrics
from bazaar.shared.messaging.relay_sql import (
    CLAIM_BATCH,
    MARK_FAILED,
    MARK_PUBLISHED,
    PRUNE_PUBLISHED,
    RETRIES_PER_BATCH,
    STUBBORN_ATTEMPTS,
)
from bazaar.shared.messaging.topology import declare_exchange
from bazaar.shared.messaging.tracing import producer_span
from bazaar.shared.tasks import wait_at_most

log = logging.getLogger("bazaar.messaging.relay")

#: Batches in flight at once: one being confirmed while the next is claimed and queued.
PIPELINE_DEPTH = 2
#: After failed passes (an outage), the pause before the next grows, jittered, up to this.
MAX_PAUSE_SECONDS = 5.0
#: Failures that are the row's own (the broker refused it, or took too long with it); a lost
#: or blocked connection is an outage and costs the rows nothing.
ROW_FAILURES = frozenset({"unroutable", "nacked", "timeout"})


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How the relay batches, waits and gives up on one publication."""

    batch_size: int = 500
    poll_seconds: float = 1.0
    publish_timeout: float = 10.0
    #: After a wake-up, wait this long so commits arriving together go out as one batch
    #: (under load: one claim, one confirm wait and one mark for many events, not each).
    linger_seconds: float = 0.005
    #: The outbox lag gauge is refreshed this often by a loop of its own (`OutboxLag.watch`),
    #: so it keeps growing while no pass ends: a broker down or silent, a pass waiting on it.
    lag_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did."""

    claimed: int
    published: int
    failed: int
    #: Of the claimed rows, those not stubborn (a full batch of them: more may wait).
    fresh: int = 0
    #: Some publication failed for want of a broker (lost, blocked), not for its own sake.
    outage: bool = False


@dataclass(frozen=True, slots=True)
class Publication:
    """What the relay publishes for one outbox row: the AMQP message and its routing key."""

    message: aio_pika.Message
    routing_key: str


def publication(row: Mapping[str, Any], *, headers: Mapping[str, str] | None = None) -> Publication:
    """The publication of one outbox row (its `type` and `event`): the CloudEvent as its
    message, with `headers` (the trace), routed by the event type.

    Pure, so what the relay sends can be shown without a broker (the pact tests use it).
    """
    event: Mapping[str, Any] = row["event"]
    return Publication(encode_event(event, headers=headers), routing_key=str(row["type"]))


class _Queued(asyncio.Event):
    """Set once a batch's publications wait their turn on the channel; `fresh` is how many
    fresh rows it claimed (None: unknown, the claim failed)."""

    def __init__(self) -> None:
        super().__init__()
        self.fresh: int | None = None


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
        self._listener = OutboxListener(db.settings.dsn)
        self.lag = OutboxLag(db, metrics.outbox_lag, interval=self.settings.lag_seconds)

    async def run(self) -> None:
        """Relay until cancelled; a pass cut short by an outage is retried after a pause."""
        exchange = await self._exchange()
        backoff = Backoff(self.settings.poll_seconds, MAX_PAUSE_SECONDS)
        try:
            while True:
                await self._listener.listen()
                try:
                    outage = await self.relay_pending(exchange)
                except Exception as exc:
                    if is_retryable(exc):  # the database is restarting or out of reach
                        log.warning("outbox relay pass cut short by an outage (%r); retrying", exc)
                    else:
                        log.exception("outbox relay pass failed; retrying")
                    outage = True
                # Only an outage backs off: rows failing for their own reasons (unroutable,
                # nacked) are retried at the next wake-up like any, never delaying the events
                # behind them.
                if outage:
                    await backoff.sleep()
                else:
                    backoff.reset()
                await wait_at_most(self._listener.wake, self.settings.poll_seconds)
                if self.settings.linger_seconds:
                    await asyncio.sleep(self.settings.linger_seconds)
                # Cleared before a pass, never after: a commit announced during the pass keeps
                # `wake` set, which keeps the pass going or starts the next one at once.
                self._listener.wake.clear()
        finally:
            await self._listener.close()

    async def _exchange(self) -> AbstractExchange:
        """The events exchange on a channel of its own, declared (retried until it works)."""
        backoff = Backoff(self.settings.poll_seconds, MAX_PAUSE_SECONDS)
        while True:
            try:
                return await declare_exchange(await self.broker.channel())
            except Exception:
                log.exception("declaring the events exchange failed; retrying")
                await backoff.sleep()

    async def relay_pending(self, exchange: AbstractExchange) -> bool:
        """Publish batches until the outbox is drained; True if the broker was out (back off).

        Two batches overlap: the next is claimed (SKIP LOCKED) and queued on the channel
        while the broker confirms the previous one. The channel sends publications in the
        order they queued, so creation order holds on the wire.
        """
        in_flight: deque[asyncio.Task[BatchResult]] = deque()
        outage = False
        try:
            while True:
                if await self._broker_out():
                    outage = True
                    break
                queued = _Queued()
                batch = asyncio.create_task(self.publish_batch(exchange, queued=queued))
                in_flight.append(batch)
                await _until_set_or_done(queued, batch)
                fresh = batch.result().fresh if batch.done() else queued.fresh
                if fresh == 0:
                    break  # drained
                if (
                    fresh is not None
                    and fresh < self.settings.batch_size
                    and not self._listener.wake.is_set()
                ):
                    # A short batch took every fresh row committed before its claim, and no
                    # commit was announced since the pass began: no second claim that would
                    # find none. A commit announced later sets `wake`, which `run` only
                    # clears before a pass, so it starts the next pass at once. Under steady
                    # load (announced commits) the pass goes on: the next claim overlaps
                    # this batch's confirms instead of waiting for them and the linger; the
                    # first claim to come back without fresh rows ends it.
                    break
                if len(in_flight) >= PIPELINE_DEPTH and (await in_flight.popleft()).outage:
                    outage = True
                    break
        finally:
            outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
            await self.lag.after_pass()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            outage = outage or outcome.outage
        return outage

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
                if isinstance(queued, _Queued):
                    queued.fresh = sum(1 for row in rows if not row["retried"])
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
                outage = False
                if failed:
                    outage = await self._record_failures(
                        conn, failed, outage=await self._broker_out()
                    )
        finally:
            if queued is not None:
                queued.set()
        for row, error in zip(rows, outcomes, strict=True):
            if error is None:
                self.metrics.published.labels(row["type"]).inc()
        fresh = sum(1 for row in rows if not row["retried"])
        return BatchResult(len(rows), len(sent), len(failed), fresh, outage)

    async def _publish(self, exchange: AbstractExchange, row: asyncpg.Record) -> None:
        event: dict[str, Any] = row["event"]
        with producer_span(event, row["traceparent"]) as headers:
            out = publication(row, headers=headers)
            await exchange.publish(
                out.message,
                routing_key=out.routing_key,
                mandatory=True,
                timeout=self.settings.publish_timeout,
            )

    async def _broker_out(self) -> bool:
        """Answer whether the broker cannot take publications now (lost, or blocking us)."""
        return self.broker.is_blocked() or not await self.broker.ping()

    async def _record_failures(
        self,
        conn: asyncpg.Connection,
        failed: Sequence[tuple[asyncpg.Record, BaseException]],
        *,
        outage: bool,
    ) -> bool:
        """Count the failures that are the rows' own against them; True if any was an outage."""
        theirs = []
        broker_failed = outage
        for row, error in failed:
            reason = "blocked" if self.broker.is_blocked() else _reason(error)
            self.metrics.publish_failures.labels(reason).inc()
            if not outage and reason in ROW_FAILURES:
                theirs.append((row, error))
            broker_failed = broker_failed or reason not in ROW_FAILURES
            if reason == "unroutable":
                # mandatory + no binding: nobody would ever see this event. Loud, not silent.
                log.error(
                    "unroutable event %s of type %s: no queue is bound", row["id"], row["type"]
                )
        if not theirs:
            # An outage: the rows keep their attempts and their place; the pass backs off.
            log.warning("broker unavailable: %d events wait in the outbox", len(failed))
            return True
        await conn.execute(
            MARK_FAILED,
            [row["id"] for row, _ in theirs],
            [f"{_reason(error)}: {error!r}"[:500] for _, error in theirs],
        )
        return broker_failed

    async def prune(self, retention_seconds: float) -> int:
        """Delete rows published longer ago than the retention; return how many."""
        async with self.db.connection() as conn:
            status: str = await conn.execute(PRUNE_PUBLISHED, retention_seconds)
        return rows_affected(status)


def _reason(error: BaseException) -> str:
    from aio_pika.exceptions import DeliveryError, PublishError

    if isinstance(error, PublishError):
        return "unroutable"
    if isinstance(error, DeliveryError):
        return "nacked"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "connection"
