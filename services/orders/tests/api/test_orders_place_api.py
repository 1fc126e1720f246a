"""POST /v1/orders: confirmed, out of stock, refused, and the Idempotency-Key rules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from bazaar.orders.adapters.uow import SqlTransactions

ORDER_FIELDS = {
    "id",
    "customer_id",
    "status",
    "lines",
    "total_cents",
    "currency",
    "created_at",
    "updated_at",
    "stock_released",
}
LINE_FIELDS = {"product_id", "sku", "name", "quantity", "unit_price_cents"}


async def test_a_confirmed_order_is_priced_by_catalog_line_by_line_in_the_order_asked(
    place: Any, new_product: Any, stock_of: Any, customer: Any
) -> None:
    mug = await new_product(name="Mug", price_cents=1250, stock=5)
    tea = await new_product(name="Tea", price_cents=399, stock=7)

    response = await place(
        [{"product_id": tea["id"], "quantity": 3}, {"product_id": mug["id"], "quantity": 2}],
        headers=customer("alice"),
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == ORDER_FIELDS
    assert uuid.UUID(body["id"])
    assert response.headers["location"] == f"/v1/orders/{body['id']}"
    assert body["customer_id"] == "alice"
    assert body["status"] == "confirmed"
    assert body["stock_released"] is False
    assert [set(line) for line in body["lines"]] == [LINE_FIELDS, LINE_FIELDS]
    assert body["lines"] == [
        {
            "product_id": tea["id"],
            "sku": tea["sku"],
            "name": "Tea",
            "quantity": 3,
            "unit_price_cents": 399,
        },
        {
            "product_id": mug["id"],
            "sku": mug["sku"],
            "name": "Mug",
            "quantity": 2,
            "unit_price_cents": 1250,
        },
    ]
    assert body["total_cents"] == 3 * 399 + 2 * 1250
    assert body["currency"] == "EUR"
    created = datetime.fromisoformat(body["created_at"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert datetime.fromisoformat(body["updated_at"]) >= created
    assert await stock_of(tea["id"]) == 4
    assert await stock_of(mug["id"]) == 3


async def test_a_price_sent_by_the_client_is_refused_and_nothing_is_reserved(
    place: Any, new_product: Any, stock_of: Any, stored_orders: Any, expect_problem: Any
) -> None:
    product = await new_product(price_cents=1000, stock=5)

    response = await place([{"product_id": product["id"], "quantity": 1, "unit_price_cents": 1}])

    expect_problem(response, 422, "validation-error")
    assert await stock_of(product["id"]) == 5
    assert await stored_orders() == []


async def test_the_placed_event_carries_the_confirmed_order_as_the_api_shows_it(
    place: Any, new_product: Any, order_events: Any, client: httpx.AsyncClient, customer: Any
) -> None:
    product = await new_product(price_cents=700, stock=3)

    response = await place([{"product_id": product["id"], "quantity": 2}])
    assert response.status_code == 201, response.text
    order = response.json()

    events = await order_events("orders.order.placed")
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "orders.order.placed"
    assert event["source"] == "/bazaar/orders"
    assert event["subject"] == order["id"]
    assert event["specversion"] == "1.0"
    data = event["data"]
    assert data["id"] == order["id"]
    assert data["status"] == "confirmed"
    assert data["customer_id"] == order["customer_id"]
    assert data["lines"] == order["lines"]
    assert data["total_cents"] == 1400
    assert data["currency"] == "EUR"
    assert datetime.fromisoformat(data["created_at"]) == datetime.fromisoformat(order["created_at"])
    assert await order_events("orders.order.rejected") == []
    got = await client.get(f"/v1/orders/{order['id']}", headers=customer())
    assert got.json() == order


async def test_an_order_catalog_cannot_serve_is_409_and_kept_as_rejected(
    place: Any,
    new_product: Any,
    stock_of: Any,
    client: httpx.AsyncClient,
    customer: Any,
    order_events: Any,
    expect_problem: Any,
) -> None:
    plenty = await new_product(stock=10)
    scarce = await new_product(stock=1)

    response = await place(
        [{"product_id": plenty["id"], "quantity": 2}, {"product_id": scarce["id"], "quantity": 2}]
    )

    problem = expect_problem(response, 409, "insufficient-stock")
    assert problem["product_ids"] == [scarce["id"]]
    # Nothing is reserved, not even the line catalog could have served.
    assert await stock_of(plenty["id"]) == 10
    assert await stock_of(scarce["id"]) == 1
    listed = await client.get("/v1/orders", headers=customer())
    [order] = listed.json()["items"]
    assert order["status"] == "rejected"
    assert order["stock_released"] is True
    assert order["total_cents"] is None
    assert order["id"] == problem["order_id"]
    got = await client.get(f"/v1/orders/{order['id']}", headers=customer())
    assert got.status_code == 200
    assert got.json()["status"] == "rejected"
    [event] = await order_events("orders.order.rejected")
    assert event["subject"] == order["id"]
    assert event["data"] == {"order_id": order["id"], "reason": "insufficient-stock"}
    assert await order_events("orders.order.placed") == []


async def test_an_unknown_product_is_out_of_stock(
    place: Any, stored_orders: Any, expect_problem: Any
) -> None:
    unknown = str(uuid.uuid4())

    response = await place([{"product_id": unknown, "quantity": 1}])

    problem = expect_problem(response, 409, "insufficient-stock")
    assert problem["product_ids"] == [unknown]
    [row] = await stored_orders()
    assert row["status"] == "rejected"


async def test_products_in_two_currencies_are_refused_and_the_order_kept_as_rejected(
    place: Any,
    new_product: Any,
    stock_of: Any,
    stored_orders: Any,
    order_events: Any,
    expect_problem: Any,
) -> None:
    euro = await new_product(currency="EUR", stock=5)
    dollar = await new_product(currency="USD", stock=5)

    response = await place(
        [{"product_id": euro["id"], "quantity": 1}, {"product_id": dollar["id"], "quantity": 1}]
    )

    expect_problem(response, 422, "validation-error")
    assert await stock_of(euro["id"]) == 5
    assert await stock_of(dollar["id"]) == 5
    [row] = await stored_orders()
    assert row["status"] == "rejected"
    [event] = await order_events("orders.order.rejected")
    assert event["data"]["order_id"] == str(row["id"])
    assert event["data"]["reason"]


async def test_an_order_without_idempotency_key_is_400_and_not_placed(
    client: httpx.AsyncClient,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    stored_orders: Any,
    expect_problem: Any,
) -> None:
    product = await new_product(stock=5)

    response = await client.post(
        "/v1/orders",
        json={"lines": [{"product_id": product["id"], "quantity": 1}]},
        headers=customer(),
    )

    expect_problem(response, 400, "idempotency-key-missing")
    assert await stock_of(product["id"]) == 5
    assert await stored_orders() == []


async def test_a_replay_answers_the_first_answer_again_and_reserves_nothing_more(
    place: Any, new_product: Any, stock_of: Any, stored_orders: Any
) -> None:
    product = await new_product(stock=5)
    lines = [{"product_id": product["id"], "quantity": 2}]

    first = await place(lines, key="order-once-1")
    again = await place(lines, key="order-once-1")

    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert await stock_of(product["id"]) == 3
    assert len(await stored_orders()) == 1


async def test_a_replayed_rejection_is_the_same_409(
    place: Any, new_product: Any, stored_orders: Any, expect_problem: Any
) -> None:
    product = await new_product(stock=1)
    lines = [{"product_id": product["id"], "quantity": 5}]

    first = await place(lines, key="too-many-1")
    again = await place(lines, key="too-many-1")

    expect_problem(first, 409, "insufficient-stock")
    expect_problem(again, 409, "insufficient-stock")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["product_ids"] == first.json()["product_ids"]
    assert len(await stored_orders()) == 1


async def test_a_key_reused_with_another_body_is_422_and_places_nothing(
    place: Any, new_product: Any, stock_of: Any, stored_orders: Any, expect_problem: Any
) -> None:
    product = await new_product(stock=5)

    first = await place([{"product_id": product["id"], "quantity": 1}], key="reused-1")
    other = await place([{"product_id": product["id"], "quantity": 2}], key="reused-1")

    assert first.status_code == 201
    expect_problem(other, 422, "idempotency-key-mismatch")
    assert await stock_of(product["id"]) == 4
    assert len(await stored_orders()) == 1


async def test_one_key_used_by_two_customers_places_two_orders(
    place: Any, new_product: Any, customer: Any, stock_of: Any
) -> None:
    product = await new_product(stock=5)
    lines = [{"product_id": product["id"], "quantity": 1}]

    alice = await place(lines, key="shared-key", headers=customer("alice"))
    bob = await place(lines, key="shared-key", headers=customer("bob"))

    assert alice.status_code == bob.status_code == 201
    assert "idempotent-replayed" not in bob.headers
    assert alice.json()["id"] != bob.json()["id"]
    assert bob.json()["customer_id"] == "bob"
    assert await stock_of(product["id"]) == 3


async def test_the_pending_order_is_written_by_the_statement_that_claims_the_key(
    place: Any,
    new_product: Any,
    customer: Any,
    stored_orders: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One round trip and one commit for the claim and the order: no INSERT of its own.
    def no_separate_insert(self: SqlTransactions) -> Any:
        raise AssertionError("the order was inserted apart from the claim")

    monkeypatch.setattr(SqlTransactions, "autocommit", no_separate_insert)
    mug = await new_product(stock=5)

    response = await place([{"product_id": mug["id"], "quantity": 1}], headers=customer("alice"))

    assert response.status_code == 201, response.text
    [row] = await stored_orders()
    assert (str(row["id"]), row["status"]) == (response.json()["id"], "confirmed")


async def test_duplicate_lines_are_refused_after_the_claim_so_the_refusal_is_replayed(
    place: Any, new_product: Any, customer: Any, stored_orders: Any
) -> None:
    mug = await new_product(stock=5)
    lines = [{"product_id": mug["id"], "quantity": 1}, {"product_id": mug["id"], "quantity": 2}]

    first = await place(lines, key="dup-lines", headers=customer("alice"))
    again = await place(lines, key="dup-lines", headers=customer("alice"))

    assert first.status_code == again.status_code
    assert 400 <= first.status_code < 500
    assert again.headers.get("idempotent-replayed") == "true"
    assert await stored_orders() == []
