"""The reconciler keeps database connections for requests while it drains a backlog."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from bazaar.orders.config import OrdersSettings
from bazaar.orders.domain.model import Order, OrderStatus, RequestedLine, unpriced_lines
from bazaar.orders.service.reconcile import ReconcilePolicy, reconcile_once

MUG = uuid.uuid4()


async def test_a_draining_reconciler_holds_at_most_its_share_of_database_transactions(
    transactions: Any, fake_catalog: Any
) -> None:
    fake_catalog.stock = {MUG: 100}
    fake_catalog.seconds = 0.01
    for _ in range(60):
        created = datetime.now(UTC) - timedelta(seconds=30)
        order = Order(
            id=uuid.uuid4(),
            customer_id="alice",
            status=OrderStatus.PENDING,
            lines=unpriced_lines([RequestedLine(MUG, 1)]),
            created_at=created,
            updated_at=created,
        )
        transactions.orders.rows[order.id] = order
    begin, open_now, most = transactions.begin, 0, 0

    @asynccontextmanager
    async def slow_begin() -> AsyncIterator[Any]:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            async with begin() as uow:
                await asyncio.sleep(0.02)  # a transaction holds its connection a while
                yield uow
        finally:
            open_now -= 1

    transactions.begin = slow_begin
    policy = ReconcilePolicy(concurrency=32, db_connections=4)

    await reconcile_once(transactions=transactions, catalog=fake_catalog, policy=policy)

    assert most == 4
    rows = transactions.orders.rows.values()
    assert all(o.status is OrderStatus.CONFIRMED for o in rows)


def test_the_reconciler_leaves_two_database_connections_to_requests() -> None:
    settings = OrdersSettings(_env_file=None, db_pool_max=10)  # type: ignore[call-arg]

    assert settings.reconcile_db_connections == 8
