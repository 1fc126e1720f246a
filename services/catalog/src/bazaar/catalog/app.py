"""The catalog's composition root."""

from __future__ import annotations

from fastapi import FastAPI

from bazaar.catalog.adapters.events import SUBSCRIPTIONS
from bazaar.catalog.api import products, reservations
from bazaar.catalog.api.errors import ERROR_MAP
from bazaar.catalog.config import CatalogSettings
from bazaar.shared.app import create_service_app


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    """Build the catalog app from its settings (read from the environment when not given)."""
    return create_service_app(
        settings or CatalogSettings(),
        title="Bazaar Catalog",
        description="Products, stock and stock reservations.",
        routers=[products.router, reservations.router],
        error_map=ERROR_MAP,
        subscriptions=SUBSCRIPTIONS,
        # `GET /v1/products/{id}`'s plain answers skip FastAPI's per-request machinery.
        fast_routes=products.FAST_ROUTES,
    )
