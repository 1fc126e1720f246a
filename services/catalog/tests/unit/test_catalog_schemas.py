"""The request schemas: every documented limit on both sides, strict numbers, no extra fields."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from bazaar.catalog.api.schemas import ProductCreate, ProductUpdate, ReservationCreate

PRODUCT = {"sku": "MUG-1", "name": "Mug", "price_cents": 100, "currency": "EUR", "stock": 1}


def product(**changes: Any) -> dict[str, Any]:
    return {**PRODUCT, **changes}


@pytest.mark.parametrize(
    "body",
    [
        product(sku="a"),
        product(sku="A" * 64),
        product(sku="a.b_c-D9"),
        product(name="x"),
        product(name="x" * 200),
        product(price_cents=0),
        product(price_cents=100_000_000),
        product(stock=0),
        product(stock=1_000_000),
        product(description=None),
        {k: v for k, v in PRODUCT.items() if k != "stock"},
    ],
)
def test_a_product_at_the_limits_is_valid(body: dict[str, Any]) -> None:
    ProductCreate.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [
        product(sku=""),
        product(sku="A" * 65),
        product(sku="a b"),
        product(sku="a/b"),
        product(sku="a\n"),
        product(name=""),
        product(name="x" * 201),
        product(price_cents=-1),
        product(price_cents=100_000_001),
        product(price_cents="12"),
        product(price_cents=1.5),
        product(price_cents=12.0),
        product(currency="eur"),
        product(currency="EURO"),
        product(currency="E1R"),
        product(stock=-1),
        product(stock=1_000_001),
        product(stock="1"),
        product(version=1),
    ],
)
def test_a_product_beyond_the_limits_is_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ProductCreate.model_validate(body)


def test_an_update_reports_only_the_fields_sent() -> None:
    update = ProductUpdate.model_validate({"price_cents": 5, "description": None})

    assert update.changes() == {"price_cents": 5, "description": None}


@pytest.mark.parametrize("field", ["name", "price_cents", "currency", "stock"])
def test_an_update_may_not_null_a_required_field(field: str) -> None:
    with pytest.raises(ValidationError):
        ProductUpdate.model_validate({field: None})


@pytest.mark.parametrize(
    "body",
    [
        {"sku": "X"},
        {"id": str(uuid.uuid4())},
        {"version": 2},
        {"created_at": "2026-01-01T00:00:00Z"},
        {"name": ""},
        {"stock": -1},
        {"price_cents": "5"},
    ],
)
def test_an_update_refuses_unknown_fields_and_bad_values(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ProductUpdate.model_validate(body)


def reservation(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return {"order_id": str(uuid.uuid4()), "lines": lines}


def lines(count: int, quantity: Any = 1) -> list[dict[str, Any]]:
    return [{"product_id": str(uuid.uuid4()), "quantity": quantity} for _ in range(count)]


@pytest.mark.parametrize("body", [reservation(lines(1)), reservation(lines(50, 1000))])
def test_a_reservation_of_1_to_50_lines_of_1_to_1000_is_valid(body: dict[str, Any]) -> None:
    ReservationCreate.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [
        reservation([]),
        reservation(lines(51)),
        reservation(lines(1, 0)),
        reservation(lines(1, 1001)),
        reservation(lines(1, "1")),
        reservation(lines(1, 1.0)),
        reservation(lines(1) * 2),
        {"order_id": "nope", "lines": lines(1)},
        {**reservation(lines(1)), "customer_id": str(uuid.uuid4())},
    ],
    ids=[
        "no-lines",
        "51-lines",
        "quantity-0",
        "quantity-1001",
        "quantity-string",
        "quantity-float",
        "duplicate-product",
        "order-id",
        "extra-field",
    ],
)
def test_a_reservation_beyond_the_limits_is_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReservationCreate.model_validate(body)


def test_a_product_is_written_byte_for_byte_as_json_response_writes_it() -> None:
    # The product routes write ProductRead's JSON directly; the answers must not change.
    from datetime import UTC, datetime

    from starlette.responses import JSONResponse

    from bazaar.catalog.api.products import _product_response
    from bazaar.catalog.api.schemas import ProductRead
    from bazaar.catalog.domain.model import Product

    tricky = 'Café “Ünïcode” \\ " \n\t\x01\x7f\u2028 😀'
    for description in (None, tricky):
        item = Product(
            id=uuid.uuid4(),
            sku="MUG-1",
            name=tricky,
            description=description,
            price_cents=1999,
            currency="EUR",
            stock=3,
            version=2,
            created_at=datetime.now(UTC),
            updated_at=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        )
        expected = JSONResponse(ProductRead.of(item).model_dump(mode="json"))
        written = _product_response(item, {})
        assert written.body == expected.body
        assert written.headers["content-type"] == expected.headers["content-type"]
