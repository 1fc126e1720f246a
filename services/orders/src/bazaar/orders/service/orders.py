"""Order use cases: place (two steps around the catalog call), read, list, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from bazaar.orders.domain.errors import DuplicateLine, KeyUsedForAnotherOrder, OrderNotFound
from bazaar.orders.domain.model import (
    Order,
    OrderStatus,
    RejectReason,
    RequestedLine,
    check_requested,
    unpriced_lines,
)
from bazaar.orders.service.ports import (
    Catalog,
    Invalid,
    OrderFilter,
    OutOfStock,
    Reserved,
    ReserveOutcome,
    Transactions,
    Unavailable,
    UnitOfWork,
)

PLACED = "orders.order.placed"
REJECTED = "orders.order.rejected"
CANCELLED = "orders.order.cancelled"
#: The status an order enters with each event: every transition out of pending, and every
#: cancellation, writes exactly one of these in its own transaction.
ENTERED_WITH = {
    PLACED: OrderStatus.CONFIRMED,
    REJECTED: OrderStatus.REJECTED,
    CANCELLED: OrderStatus.CANCELLED,
}


def order_data(order: Order) -> dict[str, Any]:
    """An order as events carry it (the same fields as the API's order)."""
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status.value,
        "lines": [
            {
                "product_id": line.product_id,
                "sku": line.sku,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
            }
            for line in order.lines
        ],
        "total_cents": order.total_cents,
        "currency": order.currency,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "stock_released": order.stock_released,
    }


def requested_lines(order: Order) -> list[RequestedLine]:
    """What the customer asked for, to ask catalog again."""
    return [RequestedLine(line.product_id, line.quantity) for line in order.lines]


def new_order(customer_id: str, lines: Sequence[RequestedLine]) -> Order:
    """A new pending order, not stored yet (its times are the database's once stored)."""
    check_requested(lines)
    now = datetime.now(UTC)
    return Order(
        id=uuid.uuid4(),
        customer_id=customer_id,
        status=OrderStatus.PENDING,
        lines=unpriced_lines(lines),
        created_at=now,
        updated_at=now,
    )


async def open_order(
    customer_id: str,
    lines: Sequence[RequestedLine],
    *,
    idempotency_key: str | None,
    uow: UnitOfWork,
) -> Order:
    """Store a new pending order, or find the one this key already opened."""
    order = new_order(customer_id, lines)
    stored = await uow.orders.add(order, idempotency_key=idempotency_key)
    if stored.id != order.id and requested_lines(stored) != list(lines):
        # The key's first request failed after its order was stored and gave the key back;
        # a retry must carry the same lines, as any other reuse of a key must.
        raise KeyUsedForAnotherOrder(
            "This idempotency key already placed an order with other lines."
        )
    return stored


async def settle_order(
    order_id: UUID, outcome: ReserveOutcome, *, uow: UnitOfWork, known: Order | None = None
) -> Order:
    """Apply catalog's answer to a pending order, with its event; others stay as they are.

    `known` is the order as the caller last read it: while it is still pending, its new
    state is written in one compare-and-set statement, with no read first.
    """
    if known is not None and known.is_pending and not isinstance(outcome, Unavailable):
        settled = await uow.orders.update_pending(_settled(known, outcome))
        if settled is not None:
            await _announce(settled, uow)
            return settled
    order = await uow.orders.get(order_id, for_update=True)
    if order is None:
        raise OrderNotFound(f"Order {order_id} does not exist.")
    if not order.is_pending:
        if isinstance(outcome, Reserved) and order.release_pending:
            # Cancelled (or expired) while catalog was reserving: give it back later.
            return await uow.orders.update(order.reservation_landed_late(outcome.reservation))
        return order
    if isinstance(outcome, Unavailable):
        return order
    order = await uow.orders.update(_settled(order, outcome))
    await _announce(order, uow)
    return order


def _settled(order: Order, outcome: Reserved | OutOfStock | Invalid) -> Order:
    match outcome:
        case Reserved(reservation):
            return order.confirm(reservation)
        case OutOfStock():
            return order.reject(RejectReason.INSUFFICIENT_STOCK)
        case Invalid():
            return order.reject(RejectReason.INVALID_LINES)


async def _announce(order: Order, uow: UnitOfWork) -> None:
    """The event of a freshly settled order."""
    if order.status is OrderStatus.CONFIRMED:
        await uow.events.add(PLACED, subject=str(order.id), data=order_data(order))
    else:
        await uow.events.add(
            REJECTED,
            subject=str(order.id),
            data={"order_id": order.id, "reason": order.reject_reason},
        )


async def reject_order(order: Order, reason: RejectReason, *, uow: UnitOfWork) -> Order:
    """Reject a pending order (locked by the caller) and say so in an event."""
    order = await uow.orders.update(order.reject(reason))
    await _announce(order, uow)
    return order


class OrderPlacement:
    """Placing one order: open it, ask catalog outside any transaction, then settle it."""

    def __init__(
        self,
        customer_id: str,
        lines: Sequence[RequestedLine],
        *,
        idempotency_key: str | None,
        transactions: Transactions,
        catalog: Catalog,
    ) -> None:
        self._customer_id = customer_id
        self._lines = list(lines)
        self._key = idempotency_key
        self._transactions = transactions
        self._catalog = catalog
        self.order: Order | None = None
        self.outcome: ReserveOutcome = Unavailable("catalog was not asked")

    def new_order(self) -> Order | None:
        """The order to store in the idempotency claim's own statement (see `opened`), or
        None when its lines are refused: reserve() then refuses them after the claim, so the
        refusal is the key's stored answer as before."""
        try:
            return new_order(self._customer_id, self._lines)
        except DuplicateLine:
            return None

    def opened(self, order: Order | None) -> None:
        """The order the claim's statement stored (None: it stored none, reserve() opens)."""
        self.order = order

    async def reserve(self) -> None:
        """Commit the pending order (so it is never lost), then reserve its stock."""
        if self.order is None:
            # One INSERT, committed on its own: the order exists before catalog is asked.
            async with self._transactions.autocommit() as uow:
                self.order = await open_order(
                    self._customer_id, self._lines, idempotency_key=self._key, uow=uow
                )
        if self.order.is_pending:
            self.outcome = await self._catalog.reserve(self.order.id, requested_lines(self.order))

    async def settle(self, uow: UnitOfWork) -> Order:
        """Record catalog's answer in the caller's transaction; return the order as it is."""
        assert self.order is not None, "reserve() runs first"
        return await settle_order(self.order.id, self.outcome, uow=uow, known=self.order)


async def get_order(order_id: UUID, *, viewer: str | None, uow: UnitOfWork) -> Order:
    """The order, if `viewer` owns it (None: an admin sees every order)."""
    order = await uow.orders.get(order_id)
    if order is None or (viewer is not None and order.customer_id != viewer):
        # Another customer's order does not exist, as far as this caller can tell.
        raise OrderNotFound(f"Order {order_id} does not exist.")
    return order


async def list_orders(
    filters: OrderFilter, *, limit: int, after: tuple[datetime, UUID] | None, uow: UnitOfWork
) -> list[Order]:
    """Up to `limit` orders matching `filters`, newest first, after the keyset `after`."""
    return await uow.orders.find(filters, limit=limit, after=after)


async def cancel_order(order_id: UUID, *, viewer: str | None, uow: UnitOfWork) -> Order:
    """Cancel a pending or confirmed order, with its event; cancelling again changes nothing."""
    order = await uow.orders.get(order_id, for_update=True)
    if order is None or (viewer is not None and order.customer_id != viewer):
        raise OrderNotFound(f"Order {order_id} does not exist.")
    cancelled = order.cancel()
    if cancelled is order:
        return order
    order = await uow.orders.update(cancelled)
    await uow.events.add(
        CANCELLED,
        subject=str(order.id),
        data={
            "order_id": order.id,
            "customer_id": order.customer_id,
            "reservation_id": order.reservation_id,
        },
    )
    return order


async def record_stock_released(order_id: UUID, reservation_id: UUID, *, uow: UnitOfWork) -> bool:
    """Catalog released an order's stock (catalog.stock.released): remember it."""
    return await uow.orders.mark_stock_released(order_id, reservation_id)
