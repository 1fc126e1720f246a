"""Stock reservation use cases: all lines or none, never below zero; idempotent release."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from bazaar.catalog.domain.errors import InsufficientStock, ReservationNotFound
from bazaar.catalog.domain.model import (
    RequestedLine,
    Reservation,
    check_one_currency,
    check_requested,
    reserve_lines,
    short_lines,
)
from bazaar.catalog.service.ports import UnitOfWork


def reservation_event_data(reservation: Reservation) -> dict[str, Any]:
    """The payload of catalog.stock.reserved / catalog.stock.released."""
    return {
        "reservation_id": reservation.id,
        "order_id": reservation.order_id,
        "lines": [
            {"product_id": li.product_id, "sku": li.sku, "quantity": li.quantity}
            for li in reservation.lines
        ],
    }


async def reserve_stock(
    order_id: UUID, lines: Sequence[RequestedLine], *, uow: UnitOfWork
) -> Reservation:
    """Reserve every line for an order, or raise InsufficientStock having reserved nothing."""
    check_requested(lines)
    products = await uow.products.lock_live(line.product_id for line in lines)
    check_one_currency(products.values())
    available = {pid: p.stock for pid, p in products.items()}
    short = short_lines(lines, available)
    if short:
        raise InsufficientStock(short)
    reservation = Reservation(
        id=uuid.uuid4(), order_id=order_id, lines=reserve_lines(lines, products)
    )
    # lock_live above holds these rows' locks already.
    await uow.products.adjust_stock(
        {line.product_id: -line.quantity for line in lines}, locked=True
    )
    await uow.reservations.add(reservation)
    await uow.events.add(
        "catalog.stock.reserved",
        subject=str(reservation.id),
        data=reservation_event_data(reservation),
    )
    return reservation


async def release_reservation(reservation_id: UUID, *, uow: UnitOfWork) -> bool:
    """Give a reservation's stock back once; True if this call released it."""
    reservation = await uow.reservations.get(reservation_id, for_update=True)
    if reservation is None:
        raise ReservationNotFound(f"Reservation {reservation_id} does not exist.")
    return await _release(reservation, uow=uow)


async def release_for_cancelled_order(
    order_id: UUID, reservation_id: UUID | None, *, uow: UnitOfWork
) -> bool:
    """Release what a cancelled order holds (its reservation, else its active one); once."""
    reservation = None
    if reservation_id is not None:
        reservation = await uow.reservations.get(reservation_id, for_update=True)
    if reservation is None:
        # Cancelled before orders learnt the reservation id: look it up by the order.
        reservation = await uow.reservations.get_by_order(order_id, for_update=True)
    if reservation is None or reservation.order_id != order_id:
        return False
    return await _release(reservation, uow=uow)


async def _release(reservation: Reservation, *, uow: UnitOfWork) -> bool:
    """Mark released, give the stock back and emit catalog.stock.released, if still active."""
    if not reservation.is_active:
        return False
    await uow.reservations.mark_released(reservation.id)
    await uow.products.adjust_stock({li.product_id: li.quantity for li in reservation.lines})
    await uow.events.add(
        "catalog.stock.released",
        subject=str(reservation.id),
        data=reservation_event_data(reservation),
    )
    return True


async def get_reservation(reservation_id: UUID, *, uow: UnitOfWork) -> Reservation:
    """The reservation, or ReservationNotFound."""
    reservation = await uow.reservations.get(reservation_id)
    if reservation is None:
        raise ReservationNotFound(f"Reservation {reservation_id} does not exist.")
    return reservation
