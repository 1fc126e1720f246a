"""Demo products for a newcomer's `make up` (loaded idempotently: existing skus are kept)."""

from __future__ import annotations

import json
from importlib import resources

from bazaar.catalog.adapters.uow import SqlUnitOfWork
from bazaar.catalog.config import CatalogSettings
from bazaar.catalog.domain.model import NewProduct
from bazaar.catalog.service.products import create_product
from bazaar.shared.app import database_for


def demo_products() -> list[NewProduct]:
    """The demo catalog shipped with the package."""
    raw = resources.files("bazaar.catalog").joinpath("demo_products.json").read_text("utf-8")
    return [NewProduct(**item) for item in json.loads(raw)]


async def load_demo_products(settings: CatalogSettings) -> int:
    """Create each demo product whose sku is not in use yet; return how many were created."""
    db = database_for(settings)
    await db.open()
    added = 0
    try:
        for new in demo_products():
            async with db.transaction() as conn:
                uow = SqlUnitOfWork(conn)
                if not await uow.products.sku_exists(new.sku):
                    await create_product(new, uow=uow)
                    added += 1
    finally:
        await db.close()
    return added
