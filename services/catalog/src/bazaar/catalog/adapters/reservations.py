"""SQL for reservations and their lines."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from bazaar.catalog.domain.errors import OrderAlreadyReserved
from bazaar.catalog.domain.model import Reservation, ReservedLine

# The reservation and its lines in one statement (one round trip).
INSERT_RESERVATION = """
WITH reservation AS (
    INSERT INTO reservation (id, order_id, status, total_cents, currency)
    VALUES ($1, $2, 'active', $9, $10)
    RETURNING id
)
INSERT INTO reservation_line
    (reservation_id, line_no, product_id, sku, name, quantity, unit_price_cents, currency)
SELECT reservation.id, l.line_no, l.product_id, l.sku, l.name, l.quantity, l.unit_price_cents,
       l.currency
FROM reservation,
     unnest($3::integer[], $4::uuid[], $5::text[], $6::text[], $7::integer[], $8::bigint[],
            $11::text[])
    AS l(line_no, product_id, sku, name, quantity, unit_price_cents, currency)
"""

SELECT_RESERVATION = """
SELECT id, order_id, status, created_at, released_at FROM reservation WHERE id = $1
"""

SELECT_ORDER_RESERVATION_ID = "SELECT id FROM reservation WHERE order_id = $1"

SELECT_LINES = """
SELECT product_id, sku, name, quantity, unit_price_cents, currency
FROM reservation_line WHERE reservation_id = $1 ORDER BY line_no
"""

MARK_RELEASED = """
UPDATE reservation SET status = 'released', released_at = now()
WHERE id = $1 AND status = 'active'
RETURNING released_at
"""


class ReservationRepository:
    """Reservations in PostgreSQL, through one connection of the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add(self, reservation: Reservation) -> Reservation:
        """Insert a reservation with its lines; an order holds at most one."""
        lines = reservation.lines
        try:
            await self.conn.execute(
                INSERT_RESERVATION,
                reservation.id,
                reservation.order_id,
                list(range(1, len(lines) + 1)),
                [li.product_id for li in lines],
                [li.sku for li in lines],
                [li.name for li in lines],
                [li.quantity for li in lines],
                [li.unit_price_cents for li in lines],
                reservation.total_cents,
                reservation.currency,
                [li.currency for li in lines],
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "reservation_order_id_key":
                raise OrderAlreadyReserved(
                    f"Order {reservation.order_id} already holds a reservation."
                ) from exc
            raise
        return reservation

    async def get(self, reservation_id: UUID, *, for_update: bool = False) -> Reservation | None:
        """The reservation with its lines, or None."""
        query = SELECT_RESERVATION + (" FOR UPDATE" if for_update else "")
        row = await self.conn.fetchrow(query, reservation_id)
        if row is None:
            return None
        lines = [
            ReservedLine(**dict(r)) for r in await self.conn.fetch(SELECT_LINES, reservation_id)
        ]
        return Reservation(
            id=row["id"],
            order_id=row["order_id"],
            lines=tuple(lines),
            status=row["status"],
            created_at=row["created_at"],
            released_at=row["released_at"],
        )

    async def get_by_order(self, order_id: UUID, *, for_update: bool = False) -> Reservation | None:
        """The order's reservation (an order holds at most one), or None."""
        reservation_id = await self.conn.fetchval(SELECT_ORDER_RESERVATION_ID, order_id)
        if reservation_id is None:
            return None
        return await self.get(reservation_id, for_update=for_update)

    async def mark_released(self, reservation_id: UUID) -> bool:
        """Mark an active reservation released; False if it was not active."""
        return await self.conn.fetchval(MARK_RELEASED, reservation_id) is not None
