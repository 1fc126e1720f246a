"""Orders pending too long: given up only while catalog answers others, never for an outage.

Stock that landed for an order given up (or cancelled) meanwhile is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bazaar.orders.config import OrdersSettings


@pytest.fixture
def orders_settings(orders_settings: OrdersSettings, slow_catalog: Any) -> OrdersSettings:
    """Orders pending for more than a second are given up; catalog is behind the slow hop."""
    return orders_settings.model_copy(
        update={"catalog_url": slow_catalog.url, "pending_max_age_seconds": 1.0}
    )


@pytest.fixture
def settled(orders_db: Any) -> Any:
    """`await settled(order_id)`: nothing is left for the reconciler to do for this order."""

    async def check(order_id: str) -> bool:
        row = await orders_db.fetchrow(
            "SELECT status, release_pending FROM customer_order WHERE id = $1",
            uuid.UUID(order_id),
        )
        return bool(row["status"] != "pending" and not row["release_pending"])

    return check


@contextlib.asynccontextmanager
async def _others_ordering(place: Any, new_product: Any, slow_catalog: Any) -> AsyncIterator[None]:
    """Other customers keep ordering while a stuck order's (slow) 409 is in flight.

    Only answers to other calls while the order's own call is in flight show that catalog is
    up and it is this order that fails: an outage never expires an order.
    """
    slow_catalog.stuck_seconds = 0.5
    plenty = await new_product(stock=1000)

    async def keep_ordering() -> None:
        while True:
            await place([{"product_id": plenty["id"], "quantity": 1}])
            await asyncio.sleep(0.1)

    others = asyncio.create_task(keep_ordering())
    try:
        yield
    finally:
        others.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await others
        slow_catalog.stuck_seconds = 0.0


async def test_an_order_that_grew_old_while_catalog_was_down_is_confirmed_once_it_is_back(
    place: Any,
    client: Any,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    order_events: Any,
    slow_catalog: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=10)
    slow_catalog.down = True
    response = await place([{"product_id": product["id"], "quantity": 2}])
    assert response.status_code == 202, response.text
    order_id = response.json()["id"]
    asked_at_placement = slow_catalog.reservations_seen

    async def looked_at_again() -> bool:
        # The reconciler had its go at the (by now too old) order: it asked catalog once
        # more, or gave the order up.
        asked = slow_catalog.reservations_seen > asked_at_placement
        return asked or bool(await order_events("orders.order.rejected"))

    await eventually(looked_at_again)
    assert await order_events("orders.order.rejected") == []
    got = await client.get(f"/v1/orders/{order_id}", headers=customer())
    assert got.json()["status"] == "pending"

    slow_catalog.down = False

    async def confirmed() -> bool:
        got = await client.get(f"/v1/orders/{order_id}", headers=customer())
        return bool(got.json()["status"] == "confirmed")

    await eventually(confirmed, within=15)
    assert await stock_of(product["id"]) == 8
    assert [r["status"] for r in await reservations_for(order_id)] == ["active"]
    [event] = await order_events("orders.order.placed")
    assert event["subject"] == order_id
    assert await order_events("orders.order.rejected") == []


async def test_an_old_order_catalog_cannot_answer_while_it_serves_others_is_rejected_as_expired(
    place: Any,
    client: Any,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    order_events: Any,
    slow_catalog: Any,
    settled: Any,
    orders_app: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=10)
    slow_catalog.down = True
    response = await place([{"product_id": product["id"], "quantity": 2}])
    assert response.status_code == 202, response.text
    order_id = response.json()["id"]
    # Catalog is back, but keeps answering that an earlier attempt for this order is still
    # in flight; other orders it serves.
    slow_catalog.stuck.add(order_id)
    slow_catalog.down = False

    async def breaker_closed() -> bool:
        return bool(orders_app.state.catalog.breaker.current_state == "closed")

    await eventually(breaker_closed)
    other = await place([{"product_id": product["id"], "quantity": 1}])
    assert other.status_code == 201, other.text

    async def rejected() -> bool:
        return bool(await order_events("orders.order.rejected"))

    async with _others_ordering(place, new_product, slow_catalog):
        await eventually(rejected, within=20)
    [event] = await order_events("orders.order.rejected")
    assert event["subject"] == order_id
    assert event["data"] == {"order_id": order_id, "reason": "pending-too-long"}
    got = await client.get(f"/v1/orders/{order_id}", headers=customer())
    assert got.json()["status"] == "rejected"

    # Catalog unstuck: whatever it may hold for the order is given back, never kept.
    slow_catalog.stuck.clear()
    await eventually(lambda: settled(order_id))
    assert all(r["status"] == "released" for r in await reservations_for(order_id))
    assert await stock_of(product["id"]) == 9
    got = await client.get(f"/v1/orders/{order_id}", headers=customer())
    assert got.json()["status"] == "rejected"
    assert got.json()["stock_released"] is True
    placed = {e["subject"] for e in await order_events("orders.order.placed")}
    assert other.json()["id"] in placed and order_id not in placed


async def test_a_reservation_that_landed_for_an_expired_order_is_released(
    place: Any,
    client: Any,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    order_events: Any,
    slow_catalog: Any,
    settled: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=10)
    slow_catalog.holding = True
    response = await place([{"product_id": product["id"], "quantity": 2}])
    assert response.status_code == 202, response.text
    order_id = response.json()["id"]
    [landed] = await reservations_for(order_id)
    assert await stock_of(product["id"]) == 8
    # The answer was lost; then catalog keeps saying an attempt is in flight for the order.
    slow_catalog.stuck.add(order_id)
    slow_catalog.let_go()

    async def rejected() -> bool:
        return bool(await order_events("orders.order.rejected"))

    async with _others_ordering(place, new_product, slow_catalog):
        await eventually(rejected, within=20)
    [event] = await order_events("orders.order.rejected")
    assert event["data"] == {"order_id": order_id, "reason": "pending-too-long"}
    assert [r["status"] for r in await reservations_for(order_id)] == ["active"]

    slow_catalog.stuck.clear()
    await eventually(lambda: settled(order_id))
    assert await reservations_for(order_id) == [{**landed, "status": "released"}]
    assert await stock_of(product["id"]) == 10
    got = await client.get(f"/v1/orders/{order_id}", headers=customer())
    assert got.json()["status"] == "rejected"
    assert got.json()["stock_released"] is True
    assert order_id not in {e["subject"] for e in await order_events("orders.order.placed")}


async def test_a_reservation_that_landed_for_a_cancelled_order_is_released(
    place: Any,
    client: Any,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    order_events: Any,
    slow_catalog: Any,
    settled: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=10)
    slow_catalog.holding = True
    response = await place([{"product_id": product["id"], "quantity": 4}])
    assert response.status_code == 202, response.text
    order_id = response.json()["id"]
    assert await stock_of(product["id"]) == 6

    cancelled = await client.post(f"/v1/orders/{order_id}/cancel", headers=customer())
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"

    slow_catalog.let_go()
    await eventually(lambda: settled(order_id))
    assert [r["status"] for r in await reservations_for(order_id)] == ["released"]
    assert await stock_of(product["id"]) == 10
    got = await client.get(f"/v1/orders/{order_id}", headers=customer())
    assert got.json()["status"] == "cancelled"
    assert got.json()["stock_released"] is True
    assert await order_events("orders.order.placed") == []
    assert await order_events("orders.order.rejected") == []


async def test_asking_again_for_an_order_rejected_as_expired_says_so_not_out_of_stock(
    client: Any, customer: Any, new_product: Any, orders_db: Any, catalog_proxy: Any
) -> None:
    # The first answer was lost (its claim given back, as after a crash); meanwhile the
    # reconciler gave the order up. Asking again with the same key and lines says what
    # happened to it.
    product = await new_product(stock=5)
    body = {"lines": [{"product_id": product["id"], "quantity": 1}]}
    headers = {**customer(), "Idempotency-Key": "expired-then-asked-again"}
    first = await client.post("/v1/orders", json=body, headers=headers)
    assert first.status_code in (201, 202), first.text
    order_id = first.json()["id"]
    await orders_db.execute("DELETE FROM idempotency_key")
    await orders_db.execute(
        "UPDATE customer_order SET status = 'rejected', reject_reason = 'pending-too-long',"
        " stock_released = true WHERE id = $1",
        uuid.UUID(order_id),
    )
    again = await client.post("/v1/orders", json=body, headers=headers)
    assert again.status_code == 409, again.text
    problem = again.json()
    assert problem["type"].endswith("/conflict")
    assert problem["order_id"] == order_id
    assert again.headers["location"] == f"/v1/orders/{order_id}"
