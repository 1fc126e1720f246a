"""POST /v1/orders with bad input or bad credentials: refused, nothing stored or reserved."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from bazaar.shared.testing.tokens import TokenIssuer

PRODUCT = "00000000-0000-4000-8000-000000000001"


def _line(quantity: Any = 1, product_id: Any = PRODUCT) -> dict[str, Any]:
    return {"product_id": product_id, "quantity": quantity}


BAD_BODIES: dict[str, Any] = {
    "no-lines": {"lines": []},
    "lines-missing": {},
    "lines-null": {"lines": None},
    "51-lines": {"lines": [_line(product_id=str(uuid.uuid4())) for _ in range(51)]},
    "quantity-0": {"lines": [_line(0)]},
    "quantity-negative": {"lines": [_line(-1)]},
    "quantity-1001": {"lines": [_line(1001)]},
    "quantity-fraction": {"lines": [_line(1.5)]},
    "quantity-float": {"lines": [_line(1.0)]},
    "quantity-string": {"lines": [_line("1")]},
    "quantity-word": {"lines": [_line("one")]},
    "quantity-bool": {"lines": [_line(True)]},
    "quantity-missing": {"lines": [{"product_id": PRODUCT}]},
    "product-not-uuid": {"lines": [_line(product_id="mug")]},
    "product-missing": {"lines": [{"quantity": 1}]},
    "unknown-field": {"lines": [_line()], "customer_id": "someone-else"},
    "unknown-line-field": {"lines": [{**_line(), "currency": "EUR"}]},
    "lines-not-list": {"lines": {"product_id": PRODUCT, "quantity": 1}},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_an_invalid_order_is_422_and_nothing_is_stored(
    client: httpx.AsyncClient, customer: Any, stored_orders: Any, expect_problem: Any, body: Any
) -> None:
    response = await client.post(
        "/v1/orders", json=body, headers={**customer(), "Idempotency-Key": str(uuid.uuid4())}
    )

    expect_problem(response, 422, "validation-error")
    assert await stored_orders() == []


async def test_one_product_in_two_lines_is_422_and_nothing_is_reserved(
    place: Any, new_product: Any, stock_of: Any, stored_orders: Any, expect_problem: Any
) -> None:
    product = await new_product(stock=10)

    response = await place(
        [{"product_id": product["id"], "quantity": 1}, {"product_id": product["id"], "quantity": 2}]
    )

    problem = expect_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"][:2] == ["body", "lines"]
    assert await stock_of(product["id"]) == 10
    assert await stored_orders() == []


@pytest.mark.parametrize(
    "content",
    [b'{"lines": [', b"not json", b"", b"[]", b"null", b'"lines"'],
    ids=["truncated", "not-json", "empty", "array", "null", "string"],
)
async def test_a_body_that_is_not_a_json_object_is_422(
    client: httpx.AsyncClient,
    customer: Any,
    stored_orders: Any,
    expect_problem: Any,
    content: bytes,
) -> None:
    headers = {**customer(), "Idempotency-Key": str(uuid.uuid4())}
    headers["Content-Type"] = "application/json"

    response = await client.post("/v1/orders", content=content, headers=headers)

    expect_problem(response, 422, "validation-error")
    assert await stored_orders() == []


async def test_the_boundaries_50_lines_and_quantity_1000_are_accepted(
    place: Any, new_product: Any, stock_of: Any
) -> None:
    big = await new_product(stock=1000, price_cents=1)
    others = [await new_product(stock=1, price_cents=2) for _ in range(49)]
    lines = [{"product_id": big["id"], "quantity": 1000}]
    lines += [{"product_id": p["id"], "quantity": 1} for p in others]

    response = await place(lines)

    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body["lines"]) == 50
    assert body["total_cents"] == 1000 + 49 * 2
    assert await stock_of(big["id"]) == 0


async def test_an_order_without_a_token_is_401(
    client: httpx.AsyncClient, stored_orders: Any, expect_problem: Any
) -> None:
    response = await client.post(
        "/v1/orders", json={"lines": [_line()]}, headers={"Idempotency-Key": "no-token"}
    )

    expect_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await stored_orders() == []


@pytest.mark.parametrize("forgery", ["garbage", "stranger", "expired", "other-audience"])
async def test_an_order_with_a_bad_token_is_401(
    client: httpx.AsyncClient,
    token_issuer: TokenIssuer,
    stored_orders: Any,
    expect_problem: Any,
    forgery: str,
) -> None:
    scopes = ("orders:read", "orders:write")
    token = {
        "garbage": lambda: "not-a-jwt",
        "stranger": lambda: token_issuer.by_stranger(scopes=scopes),
        "expired": lambda: token_issuer.issue("c", scopes, expires_in=-3600),
        "other-audience": lambda: token_issuer.issue("c", scopes, claims={"aud": "elsewhere"}),
    }[forgery]()

    response = await client.post(
        "/v1/orders",
        json={"lines": [_line()]},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "bad-token"},
    )

    expect_problem(response, 401, "unauthorized")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert await stored_orders() == []


@pytest.mark.parametrize("scopes", [("orders:read",), ("catalog:read",), ()])
async def test_an_order_without_the_orders_write_scope_is_403(
    place: Any,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    stored_orders: Any,
    expect_problem: Any,
    scopes: tuple[str, ...],
) -> None:
    product = await new_product(stock=5)

    response = await place(
        [{"product_id": product["id"], "quantity": 1}], headers=customer("c", scopes)
    )

    expect_problem(response, 403, "forbidden")
    assert await stock_of(product["id"]) == 5
    assert await stored_orders() == []
