"""Product use cases: create, read, list, change, delete — each change with its event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID

from bazaar.catalog.domain.errors import ProductNotFound
from bazaar.catalog.domain.model import (
    NewProduct,
    Product,
    ProductFilter,
    apply_patch,
    new_product_id,
)
from bazaar.catalog.service.ports import UnitOfWork

#: Checks a precondition against the product's current state (raises to refuse).
Precondition = Callable[[Product], None]


def product_event_data(product: Product) -> dict[str, Any]:
    """The product as it appears in events (the same fields as the API)."""
    return asdict(product)


async def create_product(new: NewProduct, *, uow: UnitOfWork) -> Product:
    """Create a product and announce it."""
    product = await uow.products.add(new_product_id(), new)
    await uow.events.add(
        "catalog.product.created", subject=str(product.id), data=product_event_data(product)
    )
    return product


async def get_product(product_id: UUID, *, uow: UnitOfWork) -> Product:
    """The live product, or ProductNotFound."""
    product = await uow.products.get(product_id)
    if product is None:
        raise ProductNotFound(f"Product {product_id} does not exist.")
    return product


async def list_products(
    filters: ProductFilter, *, limit: int, after: tuple[datetime, UUID] | None, uow: UnitOfWork
) -> list[Product]:
    """Up to `limit` live products newest first, after a keyset position."""
    return await uow.products.list(filters, limit=limit, after=after)


async def update_product(
    product_id: UUID,
    changes: Mapping[str, Any],
    *,
    precondition: Precondition,
    uow: UnitOfWork,
) -> Product:
    """Apply a merge patch under a precondition (If-Match); announce what changed."""
    current = await uow.products.get(product_id, for_update=True)
    if current is None:
        raise ProductNotFound(f"Product {product_id} does not exist.")
    precondition(current)
    updated, changed = apply_patch(current, changes)
    if not changed:
        return current
    stored = await uow.products.update(updated)
    await uow.events.add(
        "catalog.product.updated",
        subject=str(stored.id),
        data={**product_event_data(stored), "changed": changed},
    )
    return stored


async def delete_product(product_id: UUID, *, precondition: Precondition, uow: UnitOfWork) -> None:
    """Delete a live product (later reads answer 404) and announce it."""
    current = await uow.products.get(product_id, for_update=True)
    if current is None:
        raise ProductNotFound(f"Product {product_id} does not exist.")
    precondition(current)
    await uow.products.delete(product_id)
    await uow.events.add(
        "catalog.product.deleted",
        subject=str(product_id),
        data={"product_id": product_id, "sku": current.sku},
    )
