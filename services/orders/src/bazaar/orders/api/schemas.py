"""Request and response bodies of the order routes, one model per operation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, Field

from bazaar.orders.domain.model import Order, OrderStatus
from bazaar.shared.schemas import InputModel

Quantity = Annotated[int, Field(strict=True, ge=1, le=1_000)]


class OrderLineCreate(InputModel):
    """One line to order."""

    product_id: UUID
    quantity: Quantity


class OrderCreate(InputModel):
    """Place an order: 1 to 50 lines of distinct products."""

    lines: Annotated[list[OrderLineCreate], Field(min_length=1, max_length=50)]


class OrderLineRead(BaseModel):
    """A line of an order; sku, name and price are null until catalog has priced it."""

    product_id: UUID
    sku: str | None
    name: str | None
    quantity: int
    unit_price_cents: int | None


class OrderRead(BaseModel):
    """An order."""

    id: UUID
    customer_id: str
    status: OrderStatus
    lines: list[OrderLineRead]
    total_cents: int | None
    currency: str | None
    created_at: datetime
    updated_at: datetime
    stock_released: bool

    @classmethod
    def of(cls, order: Order) -> OrderRead:
        """The representation of a domain order."""
        return cls.model_validate(order, from_attributes=True)
