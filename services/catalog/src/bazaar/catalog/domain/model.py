"""Products and reservations, and the rules that change them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from bazaar.catalog.domain.errors import DuplicateLine, InvalidChange, MixedCurrency

#: The product fields a merge patch may change (API.md).
PATCHABLE = ("name", "description", "price_cents", "currency", "stock")
#: Of those, the ones that may be cleared with null.
NULLABLE = frozenset({"description"})


@dataclass(frozen=True, slots=True)
class NewProduct:
    """What a client supplies to create a product."""

    sku: str
    name: str
    description: str | None
    price_cents: int
    currency: str
    stock: int


@dataclass(frozen=True, slots=True)
class Product:
    """A product as stored: its fields plus identity, version and timestamps."""

    id: UUID
    sku: str
    name: str
    description: str | None
    price_cents: int
    currency: str
    stock: int
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ProductFilter:
    """Which products a listing shows."""

    q: str | None = None
    min_price_cents: int | None = None
    max_price_cents: int | None = None
    in_stock: bool | None = None


def new_product_id() -> UUID:
    """A fresh product id."""
    return uuid.uuid4()


def apply_patch(product: Product, changes: Mapping[str, Any]) -> tuple[Product, list[str]]:
    """Apply a JSON merge patch; return the new product and the fields that really changed."""
    for name, value in changes.items():
        if name not in PATCHABLE:
            raise InvalidChange(name, f"'{name}' cannot be changed.")
        if value is None and name not in NULLABLE:
            raise InvalidChange(name, f"'{name}' cannot be null.")
    changed = [n for n in PATCHABLE if n in changes and getattr(product, n) != changes[n]]
    if not changed:
        return product, []
    updated = replace(product, **{n: changes[n] for n in changed}, version=product.version + 1)
    return updated, changed


@dataclass(frozen=True, slots=True)
class RequestedLine:
    """One line an order asks to reserve."""

    product_id: UUID
    quantity: int


@dataclass(frozen=True, slots=True)
class ReservedLine:
    """One reserved line, with the product as it was priced at reservation time."""

    product_id: UUID
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """Stock held for one order: all its lines, or nothing."""

    id: UUID
    order_id: UUID
    lines: tuple[ReservedLine, ...]
    status: str = "active"
    created_at: datetime | None = None
    released_at: datetime | None = None
    total_cents: int = field(init=False)
    currency: str = field(init=False)

    def __post_init__(self) -> None:
        currencies = {line.currency for line in self.lines}
        if len(currencies) != 1:
            raise MixedCurrency("All lines of a reservation must share one currency.")
        object.__setattr__(self, "currency", currencies.pop())
        object.__setattr__(
            self, "total_cents", sum(li.quantity * li.unit_price_cents for li in self.lines)
        )

    @property
    def is_active(self) -> bool:
        """Whether the reservation still holds stock."""
        return self.status == "active"


def check_requested(requested: Sequence[RequestedLine]) -> None:
    """Refuse a request naming one product twice (its lines would be checked one by one)."""
    ids = [line.product_id for line in requested]
    if len(set(ids)) != len(ids):
        raise DuplicateLine("Each product may appear in one line only.")


def check_one_currency(products: Iterable[Product]) -> None:
    """Refuse lines priced in more than one currency."""
    if len({p.currency for p in products}) > 1:
        raise MixedCurrency("All lines of a reservation must share one currency.")


def short_lines(requested: Sequence[RequestedLine], available: Mapping[UUID, int]) -> list[UUID]:
    """The product ids whose stock (missing products count as none) cannot serve the line."""
    return [
        line.product_id for line in requested if available.get(line.product_id, 0) < line.quantity
    ]


def reserve_lines(
    requested: Sequence[RequestedLine], products: Mapping[UUID, Product]
) -> tuple[ReservedLine, ...]:
    """Price each requested line from its product (caller checked the stock)."""
    return tuple(
        ReservedLine(
            product_id=line.product_id,
            sku=products[line.product_id].sku,
            name=products[line.product_id].name,
            quantity=line.quantity,
            unit_price_cents=products[line.product_id].price_cents,
            currency=products[line.product_id].currency,
        )
        for line in requested
    )
