"""The events catalog consumes: an order's cancellation gives its reserved stock back."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from bazaar.catalog.adapters.uow import SqlUnitOfWork
from bazaar.catalog.service.reservations import release_for_cancelled_order
from bazaar.shared.messaging import Subscription


async def on_order_cancelled(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """Release the cancelled order's reservation; catalog.stock.released goes out with it."""
    data = event["data"]
    reservation_id = data.get("reservation_id")
    await release_for_cancelled_order(
        UUID(data["order_id"]),
        UUID(reservation_id) if reservation_id else None,
        uow=SqlUnitOfWork(conn),
    )


#: Catalog's consumers; the queue of each is `catalog.<name>`.
SUBSCRIPTIONS = (Subscription("order-cancelled", ("orders.order.cancelled",), on_order_cancelled),)
