"""The catalog's domain errors; `api/errors.py` maps each to its problem answer."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID


class CatalogError(Exception):
    """Base of every catalog domain error."""


class ProductNotFound(CatalogError):
    """No live product has this id."""


class DuplicateSku(CatalogError):
    """Another live product already uses this sku."""


class InsufficientStock(CatalogError):
    """Some line cannot be served from stock; nothing was reserved."""

    def __init__(self, product_ids: Sequence[UUID]) -> None:
        self.product_ids = sorted(product_ids)
        super().__init__(
            "Not enough stock for: " + ", ".join(str(p) for p in self.product_ids) + "."
        )


class DuplicateLine(CatalogError):
    """Two lines of one reservation name the same product."""


class MixedCurrency(CatalogError):
    """The lines of one reservation are priced in more than one currency."""


class ReservationNotFound(CatalogError):
    """No reservation has this id."""


class OrderAlreadyReserved(CatalogError):
    """The order already holds a reservation made under another idempotency key."""


class InvalidChange(CatalogError):
    """A change would break a product rule (e.g. a required field set to null)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)
