"""The events orders consumes, each applied in the transaction that records it as processed."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from bazaar.orders.adapters.uow import SqlUnitOfWork
from bazaar.orders.service.orders import record_stock_released
from bazaar.shared.messaging import Subscription


async def on_stock_released(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """catalog.stock.released: the order's stock is back in catalog."""
    data = event["data"]
    await record_stock_released(
        UUID(str(data["order_id"])), UUID(str(data["reservation_id"])), uow=SqlUnitOfWork(conn)
    )


SUBSCRIPTIONS = (Subscription("stock-released", ("catalog.stock.released",), on_stock_released),)
