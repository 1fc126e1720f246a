"""catalog.stock.released sets stock_released on the cancelled order it names, and nothing else."""

from __future__ import annotations

import uuid
from typing import Any

from bazaar.orders.adapters.consumers import SUBSCRIPTIONS, on_stock_released


def _released(order_id: str, reservation_id: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "catalog.stock.released",
        "data": {"order_id": order_id, "reservation_id": str(reservation_id), "lines": []},
    }


async def _apply(orders_db: Any, event: dict[str, Any]) -> None:
    async with orders_db.transaction():
        await on_stock_released(orders_db, event)


async def _stock_released(client: Any, headers: dict[str, str], order_id: str) -> bool:
    response = await client.get(f"/v1/orders/{order_id}", headers=headers)
    assert response.status_code == 200, response.text
    return bool(response.json()["stock_released"])


def test_orders_subscribes_to_catalog_stock_released() -> None:
    assert [(s.name, s.events) for s in SUBSCRIPTIONS] == [
        ("stock-released", ("catalog.stock.released",))
    ]


async def test_the_release_of_a_cancelled_orders_reservation_sets_stock_released(
    place: Any, client: Any, customer: Any, new_product: Any, orders_db: Any
) -> None:
    product = await new_product(stock=5)
    placed = await place([{"product_id": product["id"], "quantity": 2}])
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    reservation_id = await orders_db.fetchval(
        "SELECT reservation_id FROM customer_order WHERE id = $1", uuid.UUID(order_id)
    )
    cancelled = await client.post(f"/v1/orders/{order_id}/cancel", headers=customer())
    assert cancelled.json()["stock_released"] is False

    await _apply(orders_db, _released(order_id, uuid.uuid4()))  # another reservation's
    assert await _stock_released(client, customer(), order_id) is False

    await _apply(orders_db, _released(order_id, reservation_id))
    assert await _stock_released(client, customer(), order_id) is True


async def test_a_release_for_an_order_still_confirmed_changes_nothing(
    place: Any, client: Any, customer: Any, new_product: Any, orders_db: Any
) -> None:
    product = await new_product(stock=5)
    placed = await place([{"product_id": product["id"], "quantity": 1}])
    order_id = placed.json()["id"]
    reservation_id = await orders_db.fetchval(
        "SELECT reservation_id FROM customer_order WHERE id = $1", uuid.UUID(order_id)
    )
    await _apply(orders_db, _released(order_id, reservation_id))
    got = await client.get(f"/v1/orders/{order_id}", headers=customer())
    assert (got.json()["status"], got.json()["stock_released"]) == ("confirmed", False)


async def test_a_release_for_an_unknown_order_is_accepted_and_changes_nothing(
    orders_db: Any, client: Any
) -> None:
    before = await orders_db.fetchval("SELECT count(*) FROM customer_order")
    await _apply(orders_db, _released(str(uuid.uuid4()), uuid.uuid4()))
    assert await orders_db.fetchval("SELECT count(*) FROM customer_order") == before
