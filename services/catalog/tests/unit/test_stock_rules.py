"""short_lines, reserve_lines and Reservation: which lines can be served, priced and totalled."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from bazaar.catalog.domain.errors import InsufficientStock, MixedCurrency
from bazaar.catalog.domain.model import (
    Product,
    RequestedLine,
    Reservation,
    ReservedLine,
    reserve_lines,
    short_lines,
)

A, B, C = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def reserved(quantity: int, price: int, currency: str = "EUR", pid: uuid.UUID = A) -> ReservedLine:
    return ReservedLine(pid, "SKU", "Name", quantity, price, currency)


def stored(pid: uuid.UUID, *, price: int = 100, currency: str = "EUR", stock: int = 5) -> Product:
    return Product(pid, f"SKU-{pid.int}", f"P{pid.int}", None, price, currency, stock, 1, NOW, NOW)


def test_a_line_exactly_covered_by_stock_is_not_short() -> None:
    assert short_lines([RequestedLine(A, 5)], {A: 5}) == []


def test_a_line_above_stock_is_short() -> None:
    assert short_lines([RequestedLine(A, 6)], {A: 5}) == [A]


def test_a_product_missing_from_the_stock_counts_as_none_left() -> None:
    assert short_lines([RequestedLine(A, 1)], {}) == [A]


def test_every_short_line_is_listed_in_request_order() -> None:
    lines = [RequestedLine(C, 1), RequestedLine(A, 1), RequestedLine(B, 9)]

    assert short_lines(lines, {A: 1, B: 3, C: 0}) == [C, B]


def test_insufficient_stock_names_every_short_product_sorted() -> None:
    error = InsufficientStock([C, A])

    assert error.product_ids == [A, C]
    assert str(A) in str(error) and str(C) in str(error)


def test_reserved_lines_are_priced_from_their_products_in_request_order() -> None:
    products = {A: stored(A, price=250), B: stored(B, price=99, currency="EUR")}

    lines = reserve_lines([RequestedLine(B, 2), RequestedLine(A, 1)], products)

    assert [(li.product_id, li.sku, li.quantity, li.unit_price_cents) for li in lines] == [
        (B, "SKU-2", 2, 99),
        (A, "SKU-1", 1, 250),
    ]
    assert all(li.currency == "EUR" for li in lines)


def test_a_reservation_totals_quantity_times_unit_price() -> None:
    reservation = Reservation(
        id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        lines=(reserved(2, 1290, pid=A), reserved(3, 450, pid=B)),
    )

    assert reservation.total_cents == 2 * 1290 + 3 * 450
    assert reservation.currency == "EUR"
    assert reservation.status == "active" and reservation.is_active


def test_a_reservation_at_the_largest_sizes_totals_exactly() -> None:
    lines = tuple(reserved(1000, 100_000_000, pid=uuid.uuid4()) for _ in range(50))

    reservation = Reservation(id=uuid.uuid4(), order_id=uuid.uuid4(), lines=lines)

    assert reservation.total_cents == 5_000_000_000_000


def test_a_reservation_of_free_products_totals_zero() -> None:
    reservation = Reservation(id=uuid.uuid4(), order_id=uuid.uuid4(), lines=(reserved(3, 0),))

    assert reservation.total_cents == 0


def test_lines_in_two_currencies_cannot_form_a_reservation() -> None:
    with pytest.raises(MixedCurrency):
        Reservation(
            id=uuid.uuid4(),
            order_id=uuid.uuid4(),
            lines=(reserved(1, 100, "EUR", A), reserved(1, 100, "USD", B)),
        )


def test_a_released_reservation_is_not_active() -> None:
    reservation = Reservation(
        id=uuid.uuid4(), order_id=uuid.uuid4(), lines=(reserved(1, 1),), status="released"
    )

    assert not reservation.is_active
