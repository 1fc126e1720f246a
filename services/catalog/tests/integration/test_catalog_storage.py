"""The SQL adapters and use cases against the real PostgreSQL, below the HTTP layer."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from bazaar.catalog.adapters.products import ProductRepository
from bazaar.catalog.adapters.reservations import ReservationRepository
from bazaar.catalog.adapters.uow import SqlUnitOfWork
from bazaar.catalog.domain.errors import (
    DuplicateSku,
    InsufficientStock,
    OrderAlreadyReserved,
    ProductNotFound,
    ReservationNotFound,
)
from bazaar.catalog.domain.model import (
    NewProduct,
    ProductFilter,
    RequestedLine,
    Reservation,
    reserve_lines,
)
from bazaar.catalog.service import products as product_use
from bazaar.catalog.service import reservations as reservation_use


def new(sku: str = "MUG-1", *, stock: int = 10, currency: str = "EUR") -> NewProduct:
    return NewProduct(
        sku=sku, name="Mug", description=None, price_cents=500, currency=currency, stock=stock
    )


async def add(conn: Any, sku: str = "MUG-1", **kwargs: Any) -> Any:
    async with conn.transaction():
        return await product_use.create_product(new(sku, **kwargs), uow=SqlUnitOfWork(conn))


async def test_the_database_refuses_negative_stock_even_when_code_is_bypassed(
    catalog_db: Any,
) -> None:
    product = await add(catalog_db, stock=3)

    with pytest.raises(asyncpg.CheckViolationError):
        async with catalog_db.transaction():
            await ProductRepository(catalog_db).adjust_stock({product.id: -4})

    assert await catalog_db.fetchval("SELECT stock FROM product WHERE id = $1", product.id) == 3


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("sku", "bad sku"),
        ("name", ""),
        ("price_cents", -1),
        ("price_cents", 100_000_001),
        ("currency", "eur"),
    ],
)
async def test_the_database_holds_the_product_rules_too(
    catalog_db: Any, column: str, value: Any
) -> None:
    row = {"sku": "OK-1", "name": "Mug", "price_cents": 1, "currency": "EUR", **{column: value}}

    with pytest.raises(asyncpg.CheckViolationError):
        await catalog_db.execute(
            "INSERT INTO product (id, sku, name, price_cents, currency, stock)"
            " VALUES ($1, $2, $3, $4, $5, 0)",
            uuid.uuid4(),
            row["sku"],
            row["name"],
            row["price_cents"],
            row["currency"],
        )


async def test_a_live_sku_is_unique_but_a_deleted_one_may_be_reused(catalog_db: Any) -> None:
    first = await add(catalog_db, "MUG-1")

    with pytest.raises(DuplicateSku):
        await add(catalog_db, "MUG-1")
    async with catalog_db.transaction():
        await product_use.delete_product(
            first.id, precondition=lambda _p: None, uow=SqlUnitOfWork(catalog_db)
        )
    again = await add(catalog_db, "MUG-1")

    assert again.id != first.id
    assert await ProductRepository(catalog_db).sku_exists("MUG-1")


async def test_a_short_reservation_raises_and_leaves_every_stock_untouched(
    catalog_db: Any,
) -> None:
    plenty, short = await add(catalog_db, "A", stock=10), await add(catalog_db, "B", stock=1)
    lines = [RequestedLine(plenty.id, 5), RequestedLine(short.id, 2)]

    with pytest.raises(InsufficientStock) as refused:
        async with catalog_db.transaction():
            await reservation_use.reserve_stock(uuid.uuid4(), lines, uow=SqlUnitOfWork(catalog_db))

    assert refused.value.product_ids == [short.id]
    stocks = await catalog_db.fetch("SELECT sku, stock FROM product ORDER BY sku")
    assert [(r["sku"], r["stock"]) for r in stocks] == [("A", 10), ("B", 1)]
    assert (
        await catalog_db.fetchval("SELECT count(*) FROM outbox WHERE type LIKE 'catalog.stock%'")
        == 0
    )


async def test_a_reservation_is_stored_with_its_lines_and_released_only_once(
    catalog_db: Any,
) -> None:
    a, b = await add(catalog_db, "A", stock=10), await add(catalog_db, "B", stock=10)
    order_id = uuid.uuid4()
    async with catalog_db.transaction():
        made = await reservation_use.reserve_stock(
            order_id,
            [RequestedLine(b.id, 2), RequestedLine(a.id, 3)],
            uow=SqlUnitOfWork(catalog_db),
        )

    async with catalog_db.transaction():
        stored = await reservation_use.get_reservation(made.id, uow=SqlUnitOfWork(catalog_db))
    async with catalog_db.transaction():
        first = await reservation_use.release_reservation(made.id, uow=SqlUnitOfWork(catalog_db))
    async with catalog_db.transaction():
        second = await reservation_use.release_reservation(made.id, uow=SqlUnitOfWork(catalog_db))

    assert stored.order_id == order_id
    assert [(li.sku, li.quantity) for li in stored.lines] == [("B", 2), ("A", 3)]
    assert stored.total_cents == 5 * 500
    assert (first, second) == (True, False)
    assert await catalog_db.fetchval("SELECT sum(stock) FROM product") == 20


async def test_one_order_holds_at_most_one_reservation(catalog_db: Any) -> None:
    product = await add(catalog_db, stock=10)
    order_id = uuid.uuid4()
    async with catalog_db.transaction():
        await reservation_use.reserve_stock(
            order_id, [RequestedLine(product.id, 1)], uow=SqlUnitOfWork(catalog_db)
        )

    with pytest.raises(OrderAlreadyReserved):
        async with catalog_db.transaction():
            await reservation_use.reserve_stock(
                order_id, [RequestedLine(product.id, 1)], uow=SqlUnitOfWork(catalog_db)
            )

    assert await catalog_db.fetchval("SELECT stock FROM product") == 9


async def test_unknown_ids_raise_not_found(catalog_db: Any) -> None:
    uow = SqlUnitOfWork(catalog_db)

    with pytest.raises(ProductNotFound):
        await product_use.get_product(uuid.uuid4(), uow=uow)
    with pytest.raises(ReservationNotFound):
        await reservation_use.get_reservation(uuid.uuid4(), uow=uow)
    with pytest.raises(ReservationNotFound):
        async with catalog_db.transaction():
            await reservation_use.release_reservation(uuid.uuid4(), uow=uow)


async def test_the_list_query_is_keyset_strictly_after_the_position(catalog_db: Any) -> None:
    products = [await add(catalog_db, f"P{i}") for i in range(5)]
    await catalog_db.execute(
        "UPDATE product SET created_at = $1", products[0].created_at - timedelta(days=1)
    )
    repo = ProductRepository(catalog_db)
    everything = await repo.list(ProductFilter(), limit=10, after=None)

    after_second = await repo.list(
        ProductFilter(), limit=10, after=(everything[1].created_at, everything[1].id)
    )

    assert [p.id for p in after_second] == [p.id for p in everything[2:]]
    assert sorted(p.id for p in everything) == sorted(p.id for p in products)
    assert [p.id for p in everything] == sorted((p.id for p in everything), reverse=True)


async def test_each_change_writes_its_event_in_the_same_transaction(catalog_db: Any) -> None:
    with pytest.raises(RuntimeError, match="rolled back"):
        async with catalog_db.transaction():
            await product_use.create_product(new(), uow=SqlUnitOfWork(catalog_db))
            raise RuntimeError("rolled back")

    assert await catalog_db.fetchval("SELECT count(*) FROM product") == 0
    assert await catalog_db.fetchval("SELECT count(*) FROM outbox") == 0


class CountingConnection:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements = 0

    def __getattr__(self, name: str) -> Any:
        if name in {"execute", "executemany", "fetch", "fetchrow", "fetchval"}:
            self.statements += 1
        return getattr(self.conn, name)


async def test_a_reservation_and_all_its_lines_are_stored_in_one_statement(
    catalog_db: Any,
) -> None:
    a, b = await add(catalog_db, "A", stock=10), await add(catalog_db, "B", stock=10)
    reservation = Reservation(
        id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        lines=reserve_lines([RequestedLine(b.id, 2), RequestedLine(a.id, 3)], {a.id: a, b.id: b}),
    )
    counting = CountingConnection(catalog_db)
    async with catalog_db.transaction():
        await ReservationRepository(counting).add(reservation)  # type: ignore[arg-type]

    assert counting.statements == 1
    stored = await ReservationRepository(catalog_db).get(reservation.id)
    assert stored is not None
    assert [(li.sku, li.quantity, li.unit_price_cents) for li in stored.lines] == [
        ("B", 2, 500),
        ("A", 3, 500),
    ]
    assert (stored.order_id, stored.status) == (reservation.order_id, "active")
