"""Catalog reserved but answered too late: a retry with the same key never reserves twice."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from bazaar.orders.config import OrdersSettings


@pytest.fixture
def orders_settings(orders_settings: OrdersSettings, slow_catalog: Any) -> OrdersSettings:
    """Orders talking to catalog through the hop that can hold catalog's answers back."""
    return orders_settings.model_copy(update={"catalog_url": slow_catalog.url})


async def test_a_retry_after_a_timeout_gets_the_reservation_the_first_attempt_made(
    place: Any,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    slow_catalog: Any,
    orders_settings: OrdersSettings,
) -> None:
    product = await new_product(stock=10, price_cents=450)
    slow_catalog.hold_next = 1

    started = time.monotonic()
    response = await place([{"product_id": product["id"], "quantity": 3}])
    took = time.monotonic() - started

    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "confirmed"
    assert order["total_cents"] == 1350
    # The first attempt timed out after catalog had reserved; the second was a replay.
    assert took >= orders_settings.catalog_read_timeout_seconds
    assert slow_catalog.held == 1
    assert slow_catalog.answered == [201, 201]
    assert [r["status"] for r in await reservations_for(order["id"])] == ["active"]
    assert await stock_of(product["id"]) == 7


async def test_an_order_whose_answers_all_came_too_late_settles_on_the_reservation_that_landed(
    place: Any,
    client: Any,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    orders_db: Any,
    slow_catalog: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=10)
    slow_catalog.holding = True

    response = await place([{"product_id": product["id"], "quantity": 2}])

    assert response.status_code == 202, response.text
    order_id = response.json()["id"]
    # Catalog did reserve (once, whatever the attempts); orders does not know it yet.
    [landed] = await reservations_for(order_id)
    assert landed["status"] == "active"
    assert await stock_of(product["id"]) == 8

    slow_catalog.let_go()

    async def confirmed() -> bool:
        got = await client.get(f"/v1/orders/{order_id}", headers=customer())
        return bool(got.json()["status"] == "confirmed")

    await eventually(confirmed)
    assert await reservations_for(order_id) == [landed]
    assert await stock_of(product["id"]) == 8
    stored = await orders_db.fetchval(
        "SELECT reservation_id FROM customer_order WHERE id = $1", uuid.UUID(order_id)
    )
    assert stored == landed["id"]
