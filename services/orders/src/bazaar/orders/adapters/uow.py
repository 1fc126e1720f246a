"""The unit of work: the orders and the outbox of one open transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from bazaar.orders.adapters.metrics import OrderMetrics
from bazaar.orders.adapters.orders import OrderRepository, insert_on_claim, order_inserted
from bazaar.orders.domain.model import Order, OrderStatus
from bazaar.orders.service.orders import ENTERED_WITH
from bazaar.shared.db import Database
from bazaar.shared.idempotency import ClaimWith
from bazaar.shared.outbox import Outbox

EVENT_SOURCE = "/bazaar/orders"


class _WrittenOutbox(Outbox):
    """The outbox, remembering the types of the events written through it."""

    def __init__(self, conn: asyncpg.Connection, *, source: str) -> None:
        super().__init__(conn, source=source)
        self.types: list[str] = []

    async def add(self, type: str, *, subject: str, data: Any) -> dict[str, Any]:
        """Write one event in this transaction."""
        event = await super().add(type, subject=subject, data=data)
        self.types.append(type)
        return event


class SqlUnitOfWork:
    """Everything an orders use case touches, bound to one transaction the caller opened."""

    def __init__(self, conn: asyncpg.Connection, *, reconcile_after: float = 5.0) -> None:
        self.orders = OrderRepository(conn, reconcile_after=reconcile_after)
        self.events = _WrittenOutbox(conn, source=EVENT_SOURCE)

    @property
    def entered(self) -> list[OrderStatus]:
        """The statuses orders entered in this unit of work: `pending` for each order it
        inserted, the others known from its events."""
        opened = [OrderStatus.PENDING] * len(self.orders.inserted)
        return opened + [ENTERED_WITH[t] for t in self.events.types if t in ENTERED_WITH]


class SqlTransactions:
    """Opens a transaction and hands its unit of work (for use cases that need several).

    With `metrics`, the orders that entered a status are counted as soon as their change
    committed, with nothing awaited in between: giving the connection back is awaited, and
    a cancellation there (a shutdown cutting requests short) must not lose the count of a
    change that is in the database.
    """

    def __init__(
        self, db: Database, *, reconcile_after: float = 5.0, metrics: OrderMetrics | None = None
    ) -> None:
        self._db = db
        self._reconcile_after = reconcile_after
        self._metrics = metrics

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[SqlUnitOfWork]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self._db.connection() as conn:
            uow = SqlUnitOfWork(conn, reconcile_after=self._reconcile_after)
            async with conn.transaction(isolation="read_committed"):
                yield uow
            self._count(uow)  # committed; the connection is not given back yet

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[SqlUnitOfWork]:
        """A unit of work whose statements each commit on their own (one round trip each)."""
        async with self._db.connection() as conn:
            uow = SqlUnitOfWork(conn, reconcile_after=self._reconcile_after)
            try:
                yield uow
            finally:
                # Each statement committed as it returned, whatever the block did after.
                self._count(uow)

    def _count(self, uow: SqlUnitOfWork) -> None:
        if self._metrics is not None:
            self._metrics.count(uow.entered)

    def open_on_claim(
        self, order: Order, *, idempotency_key: str, opened: Callable[[Order | None], None]
    ) -> ClaimWith:
        """Insert `order` in the statement that claims its idempotency key (one round trip and
        one commit for both); `opened` gets the order stored, or None if none was."""
        sql, args = insert_on_claim(
            order, idempotency_key=idempotency_key, reconcile_after=self._reconcile_after
        )

        def landed(row: Mapping[str, Any] | None) -> None:
            # Called as the claim's statement returns: the order committed, it is pending.
            stored = order_inserted(row)
            if stored is not None and self._metrics is not None:
                self._metrics.count([OrderStatus.PENDING])
            opened(stored)

        return ClaimWith(sql, args, landed)
