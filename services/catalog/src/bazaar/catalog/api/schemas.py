"""Request and response bodies of the catalog API, one model per operation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from bazaar.catalog.domain.model import NULLABLE, Product, Reservation
from bazaar.shared.schemas import InputModel

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=5000)]
PriceCents = Annotated[int, Field(strict=True, ge=0, le=100_000_000)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Stock = Annotated[int, Field(strict=True, ge=0, le=1_000_000)]
Quantity = Annotated[int, Field(strict=True, ge=1, le=1_000)]


class ProductCreate(InputModel):
    """A new product."""

    sku: Sku
    name: Name
    description: Description | None = None
    price_cents: PriceCents
    currency: Currency
    stock: Stock = 0


class ProductUpdate(InputModel):
    """A JSON merge patch of a product: only the fields sent change."""

    name: Name | None = None
    description: Description | None = None
    price_cents: PriceCents | None = None
    currency: Currency | None = None
    stock: Stock | None = None

    @model_validator(mode="after")
    def _only_description_may_be_null(self) -> Self:
        for name in self.model_fields_set - NULLABLE:
            if getattr(self, name) is None:
                raise ValueError(f"'{name}' cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, with their values."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class ProductRead(BaseModel):
    """A product."""

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

    @classmethod
    def of(cls, product: Product) -> ProductRead:
        """The representation of a domain product."""
        return cls.model_validate(product, from_attributes=True)


class ReservationLineCreate(InputModel):
    """One line to reserve."""

    product_id: UUID
    quantity: Quantity


class ReservationCreate(InputModel):
    """Reserve stock for an order: every line, or none."""

    order_id: UUID
    lines: Annotated[list[ReservationLineCreate], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _distinct_products(self) -> Self:
        ids = [line.product_id for line in self.lines]
        if len(set(ids)) != len(ids):
            raise ValueError("each product may appear in one line only")
        return self


class ReservationLineRead(BaseModel):
    """A reserved line, priced when it was reserved."""

    product_id: UUID
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    currency: str


class ReservationRead(BaseModel):
    """A reservation."""

    id: UUID
    order_id: UUID
    lines: list[ReservationLineRead]
    total_cents: int
    currency: str
    status: str

    @classmethod
    def of(cls, reservation: Reservation) -> ReservationRead:
        """The representation of a domain reservation."""
        return cls.model_validate(reservation, from_attributes=True)
