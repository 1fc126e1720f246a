"""The happy path end to end against a real catalog: place, get, list, cancel."""

from __future__ import annotations

from typing import Any


async def test_an_order_in_stock_is_confirmed_with_catalogs_prices(
    place: Any, new_product: Any, stock_of: Any, client: Any, customer: Any
) -> None:
    product = await new_product(stock=5, price_cents=250)
    response = await place([{"product_id": product["id"], "quantity": 2}])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "confirmed"
    assert body["total_cents"] == 500
    assert body["currency"] == "EUR"
    assert body["lines"][0]["sku"] == product["sku"]
    assert response.headers["location"] == f"/v1/orders/{body['id']}"
    assert await stock_of(product["id"]) == 3
    got = await client.get(response.headers["location"], headers=customer())
    assert got.status_code == 200
    assert got.json() == body
