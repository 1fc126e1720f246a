"""The demo seed: 36 products on an empty catalog, nothing new the second time."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bazaar.catalog.api.schemas import ProductCreate
from bazaar.catalog.config import CatalogSettings
from bazaar.catalog.seed import demo_products, load_demo_products


async def test_loading_the_demo_twice_creates_36_products_then_none(
    catalog_settings: CatalogSettings, catalog_db: Any
) -> None:
    first = await load_demo_products(catalog_settings)
    second = await load_demo_products(catalog_settings)

    assert (first, second) == (36, 0)
    assert await catalog_db.fetchval("SELECT count(*) FROM product") == 36
    assert await catalog_db.fetchval("SELECT count(DISTINCT sku) FROM product") == 36
    created = "SELECT count(*) FROM outbox WHERE type = 'catalog.product.created'"
    assert await catalog_db.fetchval(created) == 36


async def test_the_demo_keeps_a_product_whose_sku_is_already_in_use(
    catalog_settings: CatalogSettings, catalog_db: Any, client: Any, writer: dict[str, str]
) -> None:
    taken = demo_products()[0]
    mine = {**asdict(taken), "name": "My own"}
    assert (await client.post("/v1/products", json=mine, headers=writer)).status_code == 201

    added = await load_demo_products(catalog_settings)

    assert added == 35
    name = await catalog_db.fetchval("SELECT name FROM product WHERE sku = $1", taken.sku)
    assert name == "My own"


def test_every_demo_product_is_valid_and_its_sku_unique() -> None:
    products = demo_products()

    assert len(products) == 36
    assert len({p.sku for p in products}) == 36
    for product in products:
        ProductCreate.model_validate(asdict(product))
