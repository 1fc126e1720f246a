"""Catalog's pact fixtures: its database (emptied) and the states its pacts name.

Catalog is the provider of orders' reservation calls and of catalog.stock.released, and the
consumer of orders.order.cancelled. Its states are set up through its own repositories and
use cases: products with the ids the pacts name, reservations under ids catalog chooses
(handed to the pact as provider-state values), except where a consumer's message fixes one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from uuid import UUID

import pytest
import pytest_asyncio

from bazaar.catalog.adapters.uow import SqlUnitOfWork
from bazaar.catalog.domain.model import NewProduct, RequestedLine, Reservation, reserve_lines
from bazaar.catalog.service.reservations import release_reservation, reserve_stock
from bazaar.shared.db import Database
from bazaar.shared.testing.postgres import empty_tables, open_emptied


@pytest_asyncio.fixture
async def catalog_database(catalog_database_url: str) -> AsyncIterator[Database]:
    """A pool over this run's catalog database, emptied first."""
    async with open_emptied(catalog_database_url, max_size=4) as db:
        async with db.connection() as conn:
            await empty_tables(conn, catalog_database_url)
        yield db


class CatalogStates:
    """What catalog holds, set up as the pacts' provider states describe it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def empty(self) -> None:
        """Nothing at all: each interaction starts from its own state only."""
        async with self.db.connection() as conn:
            await empty_tables(conn, self.db.settings.dsn)

    async def products(self, products: Sequence[Mapping[str, Any]]) -> None:
        """Products with these ids, fields and stock."""
        async with self.db.transaction() as conn:
            uow = SqlUnitOfWork(conn)
            for p in products:
                new = NewProduct(
                    sku=p["sku"],
                    name=p["name"],
                    description=None,
                    price_cents=p["price_cents"],
                    currency=p["currency"],
                    stock=p["stock"],
                )
                await uow.products.add(UUID(p["id"]), new)

    async def reserve(self, *, order_id: str, product: Mapping[str, Any], quantity: int) -> UUID:
        """Reserve `quantity` of `product` (created) for an order through the use case
        (reserve_stock); the reservation's id, catalog's choice."""
        await self.products([product])
        async with self.db.transaction() as conn:
            lines = [RequestedLine(UUID(product["id"]), quantity)]
            reservation = await reserve_stock(UUID(order_id), lines, uow=SqlUnitOfWork(conn))
        return reservation.id

    async def reservation_under(
        self, *, reservation_id: str, order_id: str, product: Mapping[str, Any], quantity: int
    ) -> None:
        """An active reservation of `quantity` of `product` (created) for an order, as
        reserve_stock makes one, under the id a message of orders' names.

        Only for catalog's own consumer tests: the message is orders' example, so the id is
        fixed before catalog could choose it (a provider state, in `reserve`, lets catalog
        choose and hands the id to the pact through `fromProviderState`).
        """
        await self.products([product])
        product_id = UUID(product["id"])
        async with self.db.transaction() as conn:
            uow = SqlUnitOfWork(conn)
            locked = await uow.products.lock_live([product_id])
            lines = reserve_lines([RequestedLine(product_id, quantity)], locked)
            await uow.products.adjust_stock({product_id: -quantity}, locked=True)
            await uow.reservations.add(
                Reservation(id=UUID(reservation_id), order_id=UUID(order_id), lines=lines)
            )

    async def release(self, reservation_id: str) -> None:
        """Release a reservation through the use case."""
        async with self.db.transaction() as conn:
            await release_reservation(UUID(reservation_id), uow=SqlUnitOfWork(conn))

    async def stock(self, product_id: str) -> int:
        """The stock catalog holds for a product."""
        async with self.db.connection() as conn:
            product = await SqlUnitOfWork(conn).products.get(UUID(product_id))
        assert product is not None, f"no product {product_id}"
        return product.stock

    async def is_active(self, reservation_id: str) -> bool:
        """Whether a reservation still holds its stock."""
        async with self.db.connection() as conn:
            reservation = await SqlUnitOfWork(conn).reservations.get(UUID(reservation_id))
        assert reservation is not None, f"no reservation {reservation_id}"
        return reservation.is_active

    async def events(self, event_type: str) -> list[dict[str, Any]]:
        """The `event_type` events catalog wrote to its outbox, oldest first."""
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                "SELECT event FROM outbox WHERE type = $1 ORDER BY position", event_type
            )
        return [row["event"] for row in rows]


@pytest.fixture
def catalog_states(catalog_database: Database) -> CatalogStates:
    """Set up and read catalog's state in this run's (emptied) catalog database."""
    return CatalogStates(catalog_database)
