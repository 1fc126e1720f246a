"""SQL for products: every query a named constant, every row a domain object before it leaves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from bazaar.catalog.domain.errors import DuplicateSku
from bazaar.catalog.domain.model import NewProduct, Product, ProductFilter

_COLUMNS = (
    "id, sku, name, description, price_cents, currency, stock, version, created_at, updated_at"
)

INSERT_PRODUCT = f"""
INSERT INTO product (id, sku, name, description, price_cents, currency, stock)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {_COLUMNS}
"""

SELECT_PRODUCT = f"SELECT {_COLUMNS} FROM product WHERE id = $1 AND deleted_at IS NULL"

SELECT_PRODUCT_FOR_UPDATE = SELECT_PRODUCT + " FOR UPDATE"

SELECT_SKU_EXISTS = "SELECT EXISTS (SELECT 1 FROM product WHERE sku = $1 AND deleted_at IS NULL)"

# $1 q, $2 min price, $3 max price, $4 in_stock, $5/$6 cursor (created_at, id), $7 limit
LIST_PRODUCTS = f"""
SELECT {_COLUMNS} FROM product
WHERE deleted_at IS NULL
  AND ($1::text IS NULL OR strpos(lower(name), lower($1::text)) > 0)
  AND ($2::bigint IS NULL OR price_cents >= $2::bigint)
  AND ($3::bigint IS NULL OR price_cents <= $3::bigint)
  AND ($4::boolean IS NULL OR (stock > 0) = $4::boolean)
  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5::timestamptz, $6::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $7
"""

UPDATE_PRODUCT = f"""
UPDATE product
SET name = $2, description = $3, price_cents = $4, currency = $5, stock = $6,
    version = $7, updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING {_COLUMNS}
"""

SOFT_DELETE_PRODUCT = f"""
UPDATE product SET deleted_at = now(), version = version + 1, updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING {_COLUMNS}
"""

# Rows are locked in id order so concurrent reservations never deadlock each other.
LOCK_PRODUCTS = f"""
SELECT {_COLUMNS} FROM product
WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL
ORDER BY id
FOR UPDATE
"""

# Deleted products take stock back too: a release must never lose units.
LOCK_PRODUCTS_ANY_STATE = "SELECT id FROM product WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"

ADJUST_STOCK = """
UPDATE product AS p
SET stock = p.stock + d.delta, version = p.version + 1, updated_at = now()
FROM unnest($1::uuid[], $2::integer[]) AS d(product_id, delta)
WHERE p.id = d.product_id
"""


def _product(row: asyncpg.Record) -> Product:
    return Product(**dict(row))


class ProductRepository:
    """Products in PostgreSQL, through one connection of the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add(self, product_id: UUID, new: NewProduct) -> Product:
        """Insert a product; a live product with the same sku raises DuplicateSku."""
        try:
            row = await self.conn.fetchrow(
                INSERT_PRODUCT,
                product_id,
                new.sku,
                new.name,
                new.description,
                new.price_cents,
                new.currency,
                new.stock,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "product_sku_key":
                raise DuplicateSku(f"A product with sku '{new.sku}' already exists.") from exc
            raise
        return _product(row)

    async def get(self, product_id: UUID, *, for_update: bool = False) -> Product | None:
        """The live product with this id, optionally locked for the transaction."""
        query = SELECT_PRODUCT_FOR_UPDATE if for_update else SELECT_PRODUCT
        row = await self.conn.fetchrow(query, product_id)
        return _product(row) if row else None

    async def sku_exists(self, sku: str) -> bool:
        """Whether a live product uses this sku."""
        return bool(await self.conn.fetchval(SELECT_SKU_EXISTS, sku))

    async def list(
        self, filters: ProductFilter, *, limit: int, after: tuple[datetime, UUID] | None
    ) -> list[Product]:
        """Live products newest first, strictly after the keyset position `after`."""
        rows = await self.conn.fetch(
            LIST_PRODUCTS,
            filters.q,
            filters.min_price_cents,
            filters.max_price_cents,
            filters.in_stock,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [_product(r) for r in rows]

    async def update(self, product: Product) -> Product:
        """Store the changed fields and version of a product (it must be live)."""
        row = await self.conn.fetchrow(
            UPDATE_PRODUCT,
            product.id,
            product.name,
            product.description,
            product.price_cents,
            product.currency,
            product.stock,
            product.version,
        )
        return _product(row)

    async def delete(self, product_id: UUID) -> Product | None:
        """Soft-delete a live product; None if there was none."""
        row = await self.conn.fetchrow(SOFT_DELETE_PRODUCT, product_id)
        return _product(row) if row else None

    async def lock_live(self, product_ids: Iterable[UUID]) -> dict[UUID, Product]:
        """Lock the live products among `product_ids` (in id order) and return them."""
        rows = await self.conn.fetch(LOCK_PRODUCTS, sorted(set(product_ids)))
        return {row["id"]: _product(row) for row in rows}

    async def adjust_stock(self, deltas: Mapping[UUID, int], *, locked: bool = False) -> None:
        """Add each delta to its product's stock (the CHECK keeps stock from going negative).

        The rows are locked in id order first (no deadlock between two adjustments) unless
        the caller says it already holds those locks.
        """
        ids: Sequence[UUID] = sorted(deltas)
        if not locked:
            await self.conn.execute(LOCK_PRODUCTS_ANY_STATE, ids)
        await self.conn.execute(ADJUST_STOCK, ids, [deltas[i] for i in ids])
