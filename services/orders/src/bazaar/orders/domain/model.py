"""Orders: lines, totals and the status machine. Pure Python, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from bazaar.orders.domain.errors import DuplicateLine, InvalidTransition, OrderNotCancellable


class OrderStatus(StrEnum):
    """Where an order is in its life: pending → confirmed | rejected; → cancelled."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class RejectReason(StrEnum):
    """Why an order was rejected (the `reason` of orders.order.rejected)."""

    INSUFFICIENT_STOCK = "insufficient-stock"
    INVALID_LINES = "invalid-lines"
    EXPIRED = "pending-too-long"


@dataclass(frozen=True, slots=True)
class RequestedLine:
    """A product and how many of it, as the customer asked."""

    product_id: UUID
    quantity: int


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line of an order; sku, name and price are known once catalog has priced it."""

    product_id: UUID
    quantity: int
    sku: str | None = None
    name: str | None = None
    unit_price_cents: int | None = None


@dataclass(frozen=True, slots=True)
class PricedReservation:
    """Stock catalog holds for an order, with the prices catalog charged."""

    id: UUID
    lines: tuple[OrderLine, ...]
    total_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class Order:
    """An order and its state; transitions return a new Order."""

    id: UUID
    customer_id: str
    status: OrderStatus
    lines: tuple[OrderLine, ...]
    created_at: datetime
    updated_at: datetime
    total_cents: int | None = None
    currency: str | None = None
    reservation_id: UUID | None = None
    stock_released: bool = False
    reject_reason: str | None = None
    #: A reservation may exist that this order must give back (cancelled or expired while
    #: pending): the reconciler settles it.
    release_pending: bool = False

    @property
    def is_pending(self) -> bool:
        """Tell whether the order still waits for its reservation."""
        return self.status is OrderStatus.PENDING

    def confirm(self, reservation: PricedReservation) -> Order:
        """The reservation landed: the order takes catalog's prices and is confirmed."""
        self._must_be_pending("confirm")
        return replace(
            self,
            status=OrderStatus.CONFIRMED,
            lines=_in_requested_order(self.lines, reservation.lines),
            total_cents=reservation.total_cents,
            currency=reservation.currency,
            reservation_id=reservation.id,
        )

    def reject(self, reason: RejectReason) -> Order:
        """Catalog refused (or the order waited too long): nothing is reserved for it."""
        self._must_be_pending("reject")
        return replace(
            self,
            status=OrderStatus.REJECTED,
            reject_reason=reason.value,
            stock_released=True,
            # Expired while catalog was unreachable: an attempt may still have reserved.
            release_pending=reason is RejectReason.EXPIRED,
        )

    def _must_be_pending(self, transition: str) -> None:
        if not self.is_pending:
            raise InvalidTransition(f"cannot {transition} an order that is {self.status.value}")

    def cancel(self) -> Order:
        """Cancel a pending or confirmed order; cancelling twice changes nothing."""
        if self.status is OrderStatus.CANCELLED:
            return self
        if self.status is OrderStatus.REJECTED:
            raise OrderNotCancellable("A rejected order cannot be cancelled.")
        was_pending = self.is_pending
        return replace(
            self,
            status=OrderStatus.CANCELLED,
            # Nothing was reserved yet as far as we know: released at once. The reconciler
            # still checks that no late reservation landed (release_pending).
            stock_released=was_pending,
            release_pending=was_pending,
        )

    def reservation_landed_late(self, reservation: PricedReservation) -> Order:
        """A reservation for an order no longer pending: remember it so it is released."""
        return replace(
            self, reservation_id=reservation.id, release_pending=True, stock_released=False
        )

    def late_reservation_released(self, reservation_id: UUID | None) -> Order:
        """The late reservation (if any) is released: nothing is held for this order."""
        return replace(
            self,
            reservation_id=reservation_id or self.reservation_id,
            release_pending=False,
            stock_released=True,
        )


def check_requested(lines: Sequence[RequestedLine]) -> None:
    """Refuse an order naming one product twice."""
    ids = [line.product_id for line in lines]
    if len(set(ids)) != len(ids):
        raise DuplicateLine("Each product may appear in one line only.")


def unpriced_lines(lines: Sequence[RequestedLine]) -> tuple[OrderLine, ...]:
    """The lines of a new order, before catalog has priced them."""
    return tuple(OrderLine(line.product_id, line.quantity) for line in lines)


def _in_requested_order(
    requested: Sequence[OrderLine], priced: Sequence[OrderLine]
) -> tuple[OrderLine, ...]:
    by_product = {line.product_id: line for line in priced}
    return tuple(by_product.get(line.product_id, line) for line in requested)
