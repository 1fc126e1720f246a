"""GET /v1/orders/{id}: one's own order; anyone else's does not exist."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest


@pytest.fixture
async def alices_order(place: Any, new_product: Any, customer: Any) -> dict[str, Any]:
    """A confirmed order of alice's."""
    product = await new_product(stock=5)
    response = await place(
        [{"product_id": product["id"], "quantity": 1}], headers=customer("alice")
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


async def test_a_customer_reads_their_own_order(
    client: httpx.AsyncClient, customer: Any, alices_order: dict[str, Any]
) -> None:
    response = await client.get(f"/v1/orders/{alices_order['id']}", headers=customer("alice"))

    assert response.status_code == 200
    assert response.json() == alices_order


async def test_another_customers_order_is_404_never_403_and_never_its_body(
    client: httpx.AsyncClient, customer: Any, alices_order: dict[str, Any], expect_problem: Any
) -> None:
    response = await client.get(f"/v1/orders/{alices_order['id']}", headers=customer("bob"))

    problem = expect_problem(response, 404, "not-found")
    assert "alice" not in response.text
    assert "lines" not in problem


async def test_an_unknown_order_is_404(
    client: httpx.AsyncClient, customer: Any, expect_problem: Any
) -> None:
    response = await client.get(f"/v1/orders/{uuid.uuid4()}", headers=customer())

    expect_problem(response, 404, "not-found")


@pytest.mark.parametrize("order_id", ["not-a-uuid", "1", "%00", "x" * 300])
async def test_an_id_that_is_not_a_uuid_is_404_or_422_never_500(
    client: httpx.AsyncClient, customer: Any, expect_problem: Any, order_id: str
) -> None:
    response = await client.get(f"/v1/orders/{order_id}", headers=customer())

    assert response.status_code in (404, 422), response.text
    expect_problem(
        response,
        response.status_code,
        "not-found" if response.status_code == 404 else "validation-error",
    )


async def test_an_admin_reads_any_order(
    client: httpx.AsyncClient, admin: dict[str, str], alices_order: dict[str, Any]
) -> None:
    response = await client.get(f"/v1/orders/{alices_order['id']}", headers=admin)

    assert response.status_code == 200
    assert response.json() == alices_order


async def test_reading_without_a_token_is_401(
    client: httpx.AsyncClient, alices_order: dict[str, Any], expect_problem: Any
) -> None:
    response = await client.get(f"/v1/orders/{alices_order['id']}")

    expect_problem(response, 401, "unauthorized")


async def test_reading_without_orders_read_is_403(
    client: httpx.AsyncClient, customer: Any, alices_order: dict[str, Any], expect_problem: Any
) -> None:
    response = await client.get(
        f"/v1/orders/{alices_order['id']}", headers=customer("alice", ("orders:write",))
    )

    expect_problem(response, 403, "forbidden")
