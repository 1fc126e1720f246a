"""The oversell race under the short timeouts: answers may come late, stock is right anyway."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any


async def test_racers_that_timed_out_settle_later_to_exactly_the_stock_there_was(
    place: Any,
    new_product: Any,
    customer: Any,
    stock_of: Any,
    stored_orders: Any,
    catalog_db: Any,
    order_events: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=20)
    lines = [{"product_id": product["id"], "quantity": 1}]

    # Catalog takes longer than orders waits: many answers are 202, some reservations land
    # after orders gave up on them, and the reconciler must find them, never reserve anew.
    answers = await asyncio.gather(
        *(place(lines, headers=customer(f"customer-{i % 7}")) for i in range(60))
    )
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) <= {201, 202, 409}, statuses
    assert statuses[201] <= 20

    async def all_settled() -> bool:
        return not any(row["status"] == "pending" for row in await stored_orders())

    await eventually(all_settled, within=30)
    rows = await stored_orders()
    assert Counter(r["status"] for r in rows) == {"confirmed": 20, "rejected": 40}
    assert await stock_of(product["id"]) == 0
    reservations = await catalog_db.fetch("SELECT id, order_id, status FROM reservation")
    assert all(r["status"] == "active" for r in reservations)
    confirmed = {r["id"]: r["reservation_id"] for r in rows if r["status"] == "confirmed"}
    assert {r["order_id"]: r["id"] for r in reservations} == confirmed
    placed = Counter(e["subject"] for e in await order_events("orders.order.placed"))
    assert placed == Counter(str(order_id) for order_id in confirmed)
    rejected = await order_events("orders.order.rejected")
    assert len(rejected) == 40
    assert {e["data"]["reason"] for e in rejected} == {"insufficient-stock"}
