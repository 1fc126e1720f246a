"""POST /v1/orders/{id}/cancel: confirmed or pending → cancelled, once, with its event."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from bazaar.shared.testing.chaos import ChaosProxy, Mode


@pytest.fixture
async def confirmed(place: Any, new_product: Any, customer: Any) -> dict[str, Any]:
    """A confirmed order of alice's (2 units of a product with stock 5)."""
    product = await new_product(stock=5)
    response = await place(
        [{"product_id": product["id"], "quantity": 2}], headers=customer("alice")
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


async def _cancel(
    client: httpx.AsyncClient, order_id: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(f"/v1/orders/{order_id}/cancel", headers=headers)


async def test_a_confirmed_order_is_cancelled_with_its_event_in_the_outbox(
    client: httpx.AsyncClient,
    customer: Any,
    confirmed: dict[str, Any],
    order_events: Any,
    reservations_for: Any,
) -> None:
    response = await _cancel(client, confirmed["id"], customer("alice"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["id"] == confirmed["id"]
    assert body["lines"] == confirmed["lines"]
    assert body["total_cents"] == confirmed["total_cents"]
    # Catalog gives the stock back when it hears of the cancel, not before.
    assert body["stock_released"] is False
    assert body["updated_at"] > confirmed["updated_at"]
    [reservation] = await reservations_for(confirmed["id"])
    [event] = await order_events("orders.order.cancelled")
    assert event["subject"] == confirmed["id"]
    assert event["source"] == "/bazaar/orders"
    assert event["data"] == {
        "order_id": confirmed["id"],
        "customer_id": "alice",
        "reservation_id": str(reservation["id"]),
    }
    got = await client.get(f"/v1/orders/{confirmed['id']}", headers=customer("alice"))
    assert got.json() == body


async def test_cancelling_again_answers_the_order_unchanged_and_emits_nothing_more(
    client: httpx.AsyncClient, customer: Any, confirmed: dict[str, Any], order_events: Any
) -> None:
    first = await _cancel(client, confirmed["id"], customer("alice"))
    again = await _cancel(client, confirmed["id"], customer("alice"))

    assert again.status_code == 200
    assert again.json() == first.json()
    assert len(await order_events("orders.order.cancelled")) == 1


async def test_a_pending_order_is_cancelled_with_its_stock_released_at_once(
    client: httpx.AsyncClient,
    customer: Any,
    place: Any,
    new_product: Any,
    catalog_proxy: ChaosProxy,
    order_events: Any,
) -> None:
    product = await new_product(stock=5)
    await catalog_proxy.set_mode(Mode.REFUSE)
    pending = await place([{"product_id": product["id"], "quantity": 1}], headers=customer("alice"))
    assert pending.status_code == 202, pending.text

    response = await _cancel(client, pending.json()["id"], customer("alice"))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["stock_released"] is True
    [event] = await order_events("orders.order.cancelled")
    assert event["data"] == {
        "order_id": pending.json()["id"],
        "customer_id": "alice",
        "reservation_id": None,
    }


async def test_a_rejected_order_cannot_be_cancelled(
    client: httpx.AsyncClient,
    customer: Any,
    place: Any,
    new_product: Any,
    order_events: Any,
    expect_problem: Any,
) -> None:
    product = await new_product(stock=0)
    rejected = await place([{"product_id": product["id"], "quantity": 1}], headers=customer("a"))
    order_id = rejected.json()["order_id"]

    response = await _cancel(client, order_id, customer("a"))

    expect_problem(response, 409, "conflict")
    got = await client.get(f"/v1/orders/{order_id}", headers=customer("a"))
    assert got.json()["status"] == "rejected"
    assert await order_events("orders.order.cancelled") == []


async def test_another_customers_order_is_404_and_stays_confirmed(
    client: httpx.AsyncClient,
    customer: Any,
    confirmed: dict[str, Any],
    order_events: Any,
    expect_problem: Any,
) -> None:
    response = await _cancel(client, confirmed["id"], customer("bob"))

    expect_problem(response, 404, "not-found")
    got = await client.get(f"/v1/orders/{confirmed['id']}", headers=customer("alice"))
    assert got.json() == confirmed
    assert await order_events("orders.order.cancelled") == []


async def test_an_unknown_order_is_404(
    client: httpx.AsyncClient, customer: Any, expect_problem: Any
) -> None:
    expect_problem(await _cancel(client, str(uuid.uuid4()), customer()), 404, "not-found")


async def test_an_admin_cancels_any_order(
    client: httpx.AsyncClient, admin: dict[str, str], confirmed: dict[str, Any], order_events: Any
) -> None:
    response = await _cancel(client, confirmed["id"], admin)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    [event] = await order_events("orders.order.cancelled")
    assert event["data"]["customer_id"] == "alice"


async def test_an_admin_scope_alone_is_enough_to_cancel(
    client: httpx.AsyncClient, customer: Any, confirmed: dict[str, Any]
) -> None:
    response = await _cancel(client, confirmed["id"], customer("ops", ("orders:admin",)))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


@pytest.mark.parametrize("scopes", [("orders:read",), ()])
async def test_cancelling_without_orders_write_or_admin_is_403(
    client: httpx.AsyncClient,
    customer: Any,
    confirmed: dict[str, Any],
    order_events: Any,
    expect_problem: Any,
    scopes: tuple[str, ...],
) -> None:
    response = await _cancel(client, confirmed["id"], customer("alice", scopes))

    expect_problem(response, 403, "forbidden")
    got = await client.get(f"/v1/orders/{confirmed['id']}", headers=customer("alice"))
    assert got.json()["status"] == "confirmed"
    assert await order_events("orders.order.cancelled") == []


async def test_cancelling_without_a_token_is_401(
    client: httpx.AsyncClient, confirmed: dict[str, Any], expect_problem: Any
) -> None:
    response = await client.post(f"/v1/orders/{confirmed['id']}/cancel")

    expect_problem(response, 401, "unauthorized")


async def test_cancelling_a_non_uuid_id_is_404_or_422_never_500(
    client: httpx.AsyncClient, customer: Any
) -> None:
    response = await client.post("/v1/orders/not-a-uuid/cancel", headers=customer())

    assert response.status_code in (404, 422), response.text


async def test_a_cancel_whose_event_cannot_be_stored_is_not_a_cancel(
    client: httpx.AsyncClient,
    customer: Any,
    confirmed: dict[str, Any],
    orders_db: Any,
    order_events: Any,
) -> None:
    await orders_db.execute(
        """
        CREATE FUNCTION test_refuse_events() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'the outbox refuses'; END $$;
        CREATE TRIGGER test_refuse_events BEFORE INSERT ON outbox
            FOR EACH ROW EXECUTE FUNCTION test_refuse_events();
        """
    )
    try:
        response = await _cancel(client, confirmed["id"], customer("alice"))
    finally:
        await orders_db.execute(
            "DROP TRIGGER test_refuse_events ON outbox; DROP FUNCTION test_refuse_events();"
        )

    assert response.status_code == 500
    got = await client.get(f"/v1/orders/{confirmed['id']}", headers=customer("alice"))
    assert got.json() == confirmed
    assert await order_events("orders.order.cancelled") == []
