"""The unit of work: the orders and the outbox of one open transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from bazaar.orders.adapters.orders import OrderRepository
from bazaar.shared.db import Database
from bazaar.shared.outbox import Outbox

EVENT_SOURCE = "/bazaar/orders"


class SqlUnitOfWork:
    """Everything an orders use case touches, bound to one transaction the caller opened."""

    def __init__(self, conn: asyncpg.Connection, *, reconcile_after: float = 5.0) -> None:
        self.orders = OrderRepository(conn, reconcile_after=reconcile_after)
        self.events = Outbox(conn, source=EVENT_SOURCE)


class SqlTransactions:
    """Opens a transaction and hands its unit of work (for use cases that need several)."""

    def __init__(self, db: Database, *, reconcile_after: float = 5.0) -> None:
        self._db = db
        self._reconcile_after = reconcile_after

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[SqlUnitOfWork]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self._db.transaction() as conn:
            yield SqlUnitOfWork(conn, reconcile_after=self._reconcile_after)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[SqlUnitOfWork]:
        """A unit of work whose statements each commit on their own (one round trip each)."""
        async with self._db.connection() as conn:
            yield SqlUnitOfWork(conn, reconcile_after=self._reconcile_after)
