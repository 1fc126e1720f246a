"""The orders domain errors; `api/errors.py` maps each to its problem answer."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID


class OrdersError(Exception):
    """Base of every orders domain error."""


class OrderNotFound(OrdersError):
    """No order with this id is visible to the caller."""


class InvalidTransition(OrdersError):
    """A settling transition was asked of an order that is no longer pending (a bug)."""


class OrderNotCancellable(OrdersError):
    """The order's status does not allow a cancel (it was rejected)."""


class DuplicateLine(OrdersError):
    """Two lines of one order name the same product."""


class KeyUsedForAnotherOrder(OrdersError):
    """The idempotency key already opened an order with other lines."""


class InsufficientStock(OrdersError):
    """Catalog could not serve some line; the order is kept as rejected."""

    def __init__(self, product_ids: Sequence[UUID], *, order_id: UUID | None = None) -> None:
        self.product_ids = sorted(product_ids)
        self.order_id = order_id
        super().__init__(
            "Not enough stock for: " + ", ".join(str(p) for p in self.product_ids) + "."
        )


class OrderExpired(OrdersError):
    """The order stayed pending too long (catalog unreachable) and was rejected."""

    def __init__(self, message: str, *, order_id: UUID | None = None) -> None:
        self.order_id = order_id
        super().__init__(message)


class OrderRefused(OrdersError):
    """Catalog refused the order's lines as invalid (e.g. mixed currencies); kept as rejected."""

    def __init__(self, message: str, *, order_id: UUID | None = None) -> None:
        self.order_id = order_id
        super().__init__(message)
