"""Orders' service token: refreshed once when catalog refuses it; auth down is a pending order."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


async def test_a_token_catalog_refuses_is_replaced_once_and_the_order_goes_through(
    place: Any, new_product: Any, stock_of: Any, token_endpoint: Any
) -> None:
    product = await new_product(stock=5)
    token_endpoint.stale_tokens = 1  # the first token has died before its time

    response = await place([{"product_id": product["id"], "quantity": 1}])

    assert response.status_code == 201, response.text
    assert len(token_endpoint.issued) == 2
    assert await stock_of(product["id"]) == 4


async def test_a_token_refused_again_after_one_refresh_is_not_fetched_in_a_loop(
    place: Any, new_product: Any, stock_of: Any, token_endpoint: Any, orders_app: FastAPI
) -> None:
    product = await new_product(stock=5)
    token_endpoint.stale_tokens = 100  # auth keeps handing out tokens catalog refuses

    response = await place([{"product_id": product["id"], "quantity": 1}])

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    assert len(token_endpoint.issued) == 2
    assert await stock_of(product["id"]) == 5
    # Catalog answered; a refused token is not catalog failing.
    assert orders_app.state.catalog.breaker.current_state == "closed"


async def test_the_cached_token_is_used_until_it_nears_its_expiry(
    place: Any, new_product: Any, token_endpoint: Any
) -> None:
    product = await new_product(stock=5)
    lines = [{"product_id": product["id"], "quantity": 1}]

    first = await place(lines)
    token_endpoint.down = True
    second = await place(lines)

    assert first.status_code == second.status_code == 201
    assert len(token_endpoint.issued) == 1


async def test_auth_down_with_no_token_yet_is_a_pending_order_that_settles_once_auth_is_back(
    place: Any,
    client: Any,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    token_endpoint: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=5)
    token_endpoint.down = True

    response = await place([{"product_id": product["id"], "quantity": 2}])

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    assert await stock_of(product["id"]) == 5

    token_endpoint.down = False

    async def confirmed() -> bool:
        got = await client.get(response.headers["location"], headers=customer())
        return bool(got.json()["status"] == "confirmed")

    await eventually(confirmed)
    assert await stock_of(product["id"]) == 3
