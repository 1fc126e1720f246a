"""The outbox lag: the age of the oldest unpublished row, kept true whatever the relay does."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import Gauge

from bazaar.shared.db import Database
from bazaar.shared.messaging.relay_sql import OLDEST_PENDING_AGE

#: At the end of a pass the gauge is refreshed at most this often: under a steady trickle
#: every pass would pay one more query.
AFTER_PASS_SECONDS = 1.0


class OutboxLag:
    """Sets the outbox lag gauge every `interval` seconds, and as relay passes end."""

    def __init__(self, db: Database, gauge: Gauge, *, interval: float) -> None:
        self.db = db
        self.gauge = gauge
        self.interval = interval
        self._measured_at = -AFTER_PASS_SECONDS

    async def watch(self) -> None:
        """Refresh the gauge every `interval` until cancelled.

        Its own loop, never a relay pass's: passes stop ending while the broker is
        unreachable, or while one waits on a broker gone silent, and the lag must grow then.
        """
        while True:
            await self.measure()
            await asyncio.sleep(self.interval)

    async def after_pass(self) -> None:
        """Refresh the gauge as a pass ends (a drained outbox reads 0 at once), throttled."""
        if time.monotonic() - self._measured_at >= AFTER_PASS_SECONDS:
            await self.measure()

    async def measure(self) -> None:
        """Set the gauge from the outbox; a failure leaves it as it was until the next try."""
        self._measured_at = time.monotonic()
        with contextlib.suppress(Exception):
            async with self.db.connection() as conn:
                self.gauge.set(await conn.fetchval(OLDEST_PENDING_AGE))
