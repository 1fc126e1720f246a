"""Ready messages in the queues operators watch: this service's parking queues, and the
events exchange's keep queues (unrouted, and unsubscribed) that every service reports.

Asked from the broker with a passive declaration (its answer carries the ready count) on a
short-lived channel of the service's own connection. The gauge never claims a count it
could not read: a queue the broker cannot be asked about has no series until it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from prometheus_client import Gauge

from bazaar.shared.messaging.connection import Broker
from bazaar.shared.messaging.topology import UNROUTED, UNSUBSCRIBED

log = logging.getLogger("bazaar.messaging.depth")

#: The longest one refresh may wait on the broker (a broker gone silent answers nothing).
ASK_TIMEOUT_SECONDS = 5.0
#: While the broker cannot be asked, one WARNING line per this many seconds at most.
WARN_SECONDS = 60.0
#: Asked besides the queues a service names: the events exchange's keep queues.
EXCHANGE_QUEUES = (UNROUTED, UNSUBSCRIBED)


class QueueDepth:
    """Sets `gauge{queue}` to each queue's ready messages every `interval` seconds.

    The queues a service names, and always the events exchange's keep queues (EXCHANGE_QUEUES).
    """

    def __init__(
        self, broker: Broker, queues: Sequence[str], gauge: Gauge, *, interval: float
    ) -> None:
        self.broker = broker
        self.queues = tuple(dict.fromkeys([*queues, *EXCHANGE_QUEUES]))
        self.gauge = gauge
        self.interval = interval
        self._warned_at: float | None = None
        self._held = 0

    async def watch(self) -> None:
        """Refresh every `interval` from the first connection on, until cancelled; never raises."""
        await self.broker.ready()
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Read every queue's ready messages; drop the series of those that cannot be read."""
        try:
            if not await self.broker.ping():
                raise ConnectionError("not connected to the broker")
            async with asyncio.timeout(ASK_TIMEOUT_SECONDS):
                counts = await self._ask(await self.broker.ready())
        except Exception as exc:
            for queue in self.queues:
                self.gauge.remove(queue)
            self._warn(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        for queue, count in counts.items():
            if count is None:
                self.gauge.remove(queue)
            else:
                self.gauge.labels(queue).set(count)
        missing = [queue for queue, count in counts.items() if count is None]
        if missing:
            self._warn(f"no such queue: {', '.join(missing)} (run the topology deploy step)")
        else:
            self._answered()

    async def _ask(self, connection: AbstractConnection) -> dict[str, int | None]:
        """Each queue's ready messages; None for a queue the broker does not have."""
        counts: dict[str, int | None] = {}
        channel: AbstractChannel | None = None
        try:
            for queue in self.queues:
                if channel is None or channel.is_closed:
                    # A plain channel, never a robust one: that would answer a passive
                    # declaration from its own memory, and reopen itself after a 404.
                    channel = aio_pika.Channel(connection, publisher_confirms=False)
                    await channel.initialize()
                try:
                    declared = await channel.declare_queue(queue, passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    counts[queue] = None  # the broker closed the channel over it
                    continue
                counts[queue] = declared.declaration_result.message_count or 0
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return counts

    def _warn(self, reason: str) -> None:
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < WARN_SECONDS:
            self._held += 1
            return
        more = f" ({self._held} more failures since the last line)" if self._held else ""
        self._warned_at, self._held = now, 0
        log.warning("queue depth unknown: the broker cannot be asked (%s)%s", reason, more)

    def _answered(self) -> None:
        if self._warned_at is not None:
            log.info("queue depth known again")
        self._warned_at, self._held = None, 0
