"""One renewer per store for the leases of every claim in flight, on its own connection.

Renewing through the shared pool lost leases under load: with the pool taken by other
requests, a renewal waited out its acquire timeout and the claim went stale, so a retry on
another replica took over a request still running. One `UPDATE ... WHERE id = ANY($1)` per
beat for all claims, on a connection of its own (opened again after a failure), cannot be
crowded out; each beat is bounded by the beat interval so a hung database cannot stack them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg

from bazaar.shared.db import PoolSettings
from bazaar.shared.idempotency.schema import RENEW_ALL_SQL
from bazaar.shared.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews every registered claim each `interval` seconds while any is registered."""

    def __init__(self, settings: PoolSettings, interval: float) -> None:
        self._settings = settings
        self._interval = interval
        self._claims: set[uuid.UUID] = set()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def hold(self, claim_id: uuid.UUID) -> None:
        """Keep renewing `claim_id` until `let_go` (or it is no longer ours)."""
        self._claims.add(claim_id)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def let_go(self, claim_id: uuid.UUID) -> None:
        """Stop renewing `claim_id`."""
        self._claims.discard(claim_id)

    async def close(self) -> None:
        """Stop renewing and close the renewer's connection."""
        self._claims.clear()
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._disconnect()

    async def _run(self) -> None:
        try:
            while self._claims:
                await asyncio.sleep(self._interval)
                if self._claims:
                    await self._renew_all()
        finally:
            if not self._claims:  # idle: no connection held for nothing
                await self._disconnect()

    async def _renew_all(self) -> None:
        ids = list(self._claims)
        try:
            async with asyncio.timeout(self._interval):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self._settings.dsn, timeout=self._settings.connect_timeout
                    )
                rows = await self._conn.fetch(RENEW_ALL_SQL, ids)
        except Exception as exc:  # the database is down: try again at the next beat
            logger.warning("could not renew idempotency claims: %s: %s", type(exc).__name__, exc)
            await self._disconnect()
            return
        ours = {row["id"] for row in rows}
        # Completed or taken over: nothing of ours left to renew.
        self._claims.difference_update(set(ids) - ours)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
