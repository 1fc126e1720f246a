"""The use cases over in-memory fakes of the storage Protocols (no database)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from bazaar.catalog.domain.errors import (
    DuplicateLine,
    InsufficientStock,
    MixedCurrency,
    ProductNotFound,
)
from bazaar.catalog.domain.model import NewProduct, Product, RequestedLine, Reservation
from bazaar.catalog.service import products as product_use
from bazaar.catalog.service import reservations as reservation_use
from bazaar.catalog.service.ports import UnitOfWork

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeProducts:
    """Products in a dict (implements `Products`)."""

    def __init__(self) -> None:
        self.rows: dict[UUID, Product] = {}

    async def add(self, product_id: UUID, new: NewProduct) -> Product:
        product = Product(product_id, **asdict(new), version=1, created_at=NOW, updated_at=NOW)
        self.rows[product_id] = product
        return product

    async def get(self, product_id: UUID, *, for_update: bool = False) -> Product | None:
        return self.rows.get(product_id)

    async def sku_exists(self, sku: str) -> bool:
        return any(p.sku == sku for p in self.rows.values())

    async def list(
        self, filters: Any, *, limit: int, after: tuple[datetime, UUID] | None
    ) -> list[Product]:
        return list(self.rows.values())[:limit]

    async def update(self, product: Product) -> Product:
        self.rows[product.id] = product
        return product

    async def delete(self, product_id: UUID) -> Product | None:
        return self.rows.pop(product_id, None)

    async def lock_live(self, product_ids: Iterable[UUID]) -> dict[UUID, Product]:
        return {pid: self.rows[pid] for pid in product_ids if pid in self.rows}

    async def adjust_stock(self, deltas: Mapping[UUID, int], *, locked: bool = False) -> None:
        for pid, delta in deltas.items():
            product = self.rows[pid]
            assert product.stock + delta >= 0, "stock would go below zero"
            self.rows[pid] = replace(product, stock=product.stock + delta)


class FakeReservations:
    """Reservations in a dict (implements `Reservations`)."""

    def __init__(self) -> None:
        self.rows: dict[UUID, Reservation] = {}

    async def add(self, reservation: Reservation) -> Reservation:
        self.rows[reservation.id] = reservation
        return reservation

    async def get(self, reservation_id: UUID, *, for_update: bool = False) -> Reservation | None:
        return self.rows.get(reservation_id)

    async def get_by_order(self, order_id: UUID, *, for_update: bool = False) -> Reservation | None:
        return next((r for r in self.rows.values() if r.order_id == order_id), None)

    async def mark_released(self, reservation_id: UUID) -> bool:
        current = self.rows[reservation_id]
        if not current.is_active:
            return False
        self.rows[reservation_id] = replace(current, status="released")
        return True


class FakeEvents:
    """An outbox as a list (implements `Events`)."""

    def __init__(self) -> None:
        self.added: list[tuple[str, str, Any]] = []

    async def add(self, type: str, *, subject: str, data: Any) -> dict[str, Any]:
        self.added.append((type, subject, data))
        return {"type": type, "subject": subject, "data": data}


class FakeUnitOfWork:
    """The three fakes together (implements `UnitOfWork`)."""

    def __init__(self) -> None:
        self.products = FakeProducts()
        self.reservations = FakeReservations()
        self.events = FakeEvents()


def new(sku: str = "MUG-1", stock: int = 5) -> NewProduct:
    return NewProduct(sku, "Mug", None, 100, "EUR", stock)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


def as_port(uow: FakeUnitOfWork) -> UnitOfWork:
    return uow


def _accept(_product: Product) -> None:
    return None


class Stale(Exception):
    """The precondition refused."""


def _refuse(_product: Product) -> None:
    raise Stale


async def test_creating_a_product_announces_it(uow: FakeUnitOfWork) -> None:
    product = await product_use.create_product(new(), uow=as_port(uow))

    assert uow.events.added == [
        ("catalog.product.created", str(product.id), product_use.product_event_data(product))
    ]


async def test_an_update_that_changes_nothing_is_not_announced(uow: FakeUnitOfWork) -> None:
    product = await product_use.create_product(new(), uow=as_port(uow))
    uow.events.added.clear()

    same = await product_use.update_product(
        product.id, {"name": "Mug"}, precondition=_accept, uow=as_port(uow)
    )

    assert same == product
    assert uow.events.added == []


async def test_an_update_announces_the_product_and_what_changed(uow: FakeUnitOfWork) -> None:
    product = await product_use.create_product(new(), uow=as_port(uow))

    updated = await product_use.update_product(
        product.id, {"name": "Cup", "stock": 5}, precondition=_accept, uow=as_port(uow)
    )

    type_, subject, data = uow.events.added[-1]
    assert (type_, subject) == ("catalog.product.updated", str(product.id))
    assert data["changed"] == ["name"]
    assert data["name"] == "Cup" and data["version"] == updated.version == 2


async def test_a_refused_precondition_changes_nothing(uow: FakeUnitOfWork) -> None:
    product = await product_use.create_product(new(), uow=as_port(uow))

    with pytest.raises(Stale):
        await product_use.update_product(
            product.id, {"name": "Cup"}, precondition=_refuse, uow=as_port(uow)
        )
    with pytest.raises(Stale):
        await product_use.delete_product(product.id, precondition=_refuse, uow=as_port(uow))

    assert uow.products.rows[product.id] == product


async def test_unknown_products_are_not_found(uow: FakeUnitOfWork) -> None:
    with pytest.raises(ProductNotFound):
        await product_use.update_product(
            uuid.uuid4(), {"name": "Cup"}, precondition=_accept, uow=as_port(uow)
        )
    with pytest.raises(ProductNotFound):
        await product_use.delete_product(uuid.uuid4(), precondition=_accept, uow=as_port(uow))


async def test_deleting_announces_the_id_and_sku(uow: FakeUnitOfWork) -> None:
    product = await product_use.create_product(new("MUG-9"), uow=as_port(uow))

    await product_use.delete_product(product.id, precondition=_accept, uow=as_port(uow))

    assert uow.events.added[-1] == (
        "catalog.product.deleted",
        str(product.id),
        {"product_id": product.id, "sku": "MUG-9"},
    )


async def test_a_short_reservation_takes_nothing_and_announces_nothing(
    uow: FakeUnitOfWork,
) -> None:
    a = await product_use.create_product(new("A", stock=5), uow=as_port(uow))
    b = await product_use.create_product(new("B", stock=1), uow=as_port(uow))
    uow.events.added.clear()

    with pytest.raises(InsufficientStock) as refused:
        await reservation_use.reserve_stock(
            uuid.uuid4(), [RequestedLine(a.id, 2), RequestedLine(b.id, 2)], uow=as_port(uow)
        )

    assert refused.value.product_ids == [b.id]
    assert [p.stock for p in uow.products.rows.values()] == [5, 1]
    assert uow.reservations.rows == {} and uow.events.added == []


async def test_reserving_then_releasing_twice_gives_the_stock_back_once(
    uow: FakeUnitOfWork,
) -> None:
    a = await product_use.create_product(new("A", stock=5), uow=as_port(uow))
    uow.events.added.clear()

    made = await reservation_use.reserve_stock(
        uuid.uuid4(), [RequestedLine(a.id, 3)], uow=as_port(uow)
    )
    first = await reservation_use.release_reservation(made.id, uow=as_port(uow))
    second = await reservation_use.release_reservation(made.id, uow=as_port(uow))

    assert (first, second) == (True, False)
    assert uow.products.rows[a.id].stock == 5
    assert [type_ for type_, _, _ in uow.events.added] == [
        "catalog.stock.reserved",
        "catalog.stock.released",
    ]
    data = uow.events.added[0][2]
    assert data == {
        "reservation_id": made.id,
        "order_id": made.order_id,
        "lines": [{"product_id": a.id, "sku": "A", "quantity": 3}],
    }


async def test_a_product_named_in_two_lines_is_refused_before_any_stock_moves(
    uow: FakeUnitOfWork,
) -> None:
    a = await product_use.create_product(new("A", stock=20), uow=as_port(uow))
    uow.events.added.clear()

    with pytest.raises(DuplicateLine):
        await reservation_use.reserve_stock(
            uuid.uuid4(), [RequestedLine(a.id, 15), RequestedLine(a.id, 15)], uow=as_port(uow)
        )

    assert uow.products.rows[a.id].stock == 20
    assert uow.reservations.rows == {} and uow.events.added == []


async def test_mixed_currencies_are_refused_even_when_a_line_is_also_short(
    uow: FakeUnitOfWork,
) -> None:
    eur = await product_use.create_product(new("EUR-1", stock=1), uow=as_port(uow))
    usd = await product_use.create_product(
        NewProduct("USD-1", "Cup", None, 100, "USD", 5), uow=as_port(uow)
    )

    with pytest.raises(MixedCurrency):
        await reservation_use.reserve_stock(
            uuid.uuid4(), [RequestedLine(eur.id, 2), RequestedLine(usd.id, 1)], uow=as_port(uow)
        )

    assert [p.stock for p in uow.products.rows.values()] == [1, 5]
