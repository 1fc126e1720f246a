"""SQL for orders (table `customer_order`: `order` is a reserved word)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from bazaar.orders.domain.model import Order, OrderLine, OrderStatus
from bazaar.orders.service.ports import OrderFilter, PendingBacklog

COLUMNS = """id, customer_id, status, lines, total_cents, currency, reservation_id,
    stock_released, reject_reason, release_pending, created_at, updated_at"""

#: An idempotency key is kept 24 h; after that the customer may use it for a new order.
KEY_RETENTION = "24 hours"

FREE_EXPIRED_KEY = f"""
UPDATE customer_order SET idempotency_key = NULL
WHERE customer_id = $1 AND idempotency_key = $2 AND created_at <= now() - interval '{KEY_RETENTION}'
"""

INSERT_ORDER = f"""
INSERT INTO customer_order (id, customer_id, status, lines, idempotency_key, next_attempt_at,
                            created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), now(), now())
ON CONFLICT ON CONSTRAINT customer_order_idempotency_key DO NOTHING
RETURNING {COLUMNS}
"""

# The same insert as the idempotency claim's first effect (bazaar.shared.idempotency's
# ClaimWith): written only if the claim was, in its statement; parameters from $7, cast.
INSERT_ORDER_ON_CLAIM = f"""
INSERT INTO customer_order (id, customer_id, status, lines, idempotency_key, next_attempt_at,
                            created_at, updated_at)
SELECT $7::uuid, $8::text, $9::text, $10::jsonb, $11::text,
       now() + make_interval(secs => $12::float8), now(), now()
FROM claim
ON CONFLICT ON CONSTRAINT customer_order_idempotency_key DO NOTHING
RETURNING {COLUMNS}
"""

SELECT_ORDER = f"SELECT {COLUMNS} FROM customer_order WHERE id = $1"
SELECT_ORDER_FOR_UPDATE = f"{SELECT_ORDER} FOR UPDATE"

SELECT_BY_KEY = f"""
SELECT {COLUMNS} FROM customer_order
WHERE customer_id = $1 AND idempotency_key = $2
  AND created_at > now() - interval '{KEY_RETENTION}'
"""

# A newly set release_pending is due at once; otherwise the schedule stands.
UPDATE_ORDER = f"""
UPDATE customer_order SET
    status = $2, lines = $3, total_cents = $4, currency = $5, reservation_id = $6,
    stock_released = $7, reject_reason = $8,
    next_attempt_at = CASE WHEN $9 AND NOT release_pending THEN now() ELSE next_attempt_at END,
    release_pending = $9,
    updated_at = now()
WHERE id = $1
RETURNING {COLUMNS}
"""

# Compare-and-set: the new state applies only if the order is still pending.
UPDATE_PENDING = UPDATE_ORDER.replace("WHERE id = $1", "WHERE id = $1 AND status = 'pending'")

LIST_ORDERS = f"""
SELECT {COLUMNS} FROM customer_order
WHERE ($1::text IS NULL OR customer_id = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
ORDER BY created_at DESC, id DESC
LIMIT $5
"""

# Several replicas may run this at once: SKIP LOCKED hands each row to one of them, and the
# lease (next_attempt_at, growing with each attempt) keeps the others off it afterwards. The
# lease is never shorter than $4, the longest the holder may work on the order, so no other
# replica takes it up while a catalog call for it may still be in flight. Oldest first: those
# closest to their maximum age are settled first after an outage.
CLAIM_DUE = f"""
WITH due AS (
    SELECT id FROM customer_order
    WHERE (status = 'pending' OR release_pending) AND next_attempt_at <= now()
    ORDER BY created_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE customer_order o SET
    attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(
        secs => greatest($4, least($2 * power(2, least(o.attempts, 10)), $3))
    )
FROM due WHERE o.id = due.id
RETURNING {", ".join("o." + c.strip() for c in COLUMNS.split(","))}
"""

MARK_STOCK_RELEASED = """
UPDATE customer_order SET stock_released = true, updated_at = now()
WHERE id = $1 AND status IN ('cancelled', 'rejected') AND NOT stock_released
  AND (reservation_id IS NULL OR reservation_id = $2)
RETURNING id
"""


# Read from customer_order_due_oldest_idx (its predicate covers every pending order): one
# pass over the pending and to-release orders, no sort, the heap visited only for `status`.
PENDING_BACKLOG = """
SELECT count(*) AS count,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_seconds
FROM customer_order WHERE status = 'pending'
"""


def insert_on_claim(
    order: Order, *, idempotency_key: str, reconcile_after: float
) -> tuple[str, tuple[Any, ...]]:
    """The statement and arguments that insert `order` in the idempotency claim's statement."""
    return INSERT_ORDER_ON_CLAIM, _insert_args(order, idempotency_key, reconcile_after)


def _insert_args(
    order: Order, idempotency_key: str | None, reconcile_after: float
) -> tuple[Any, ...]:
    """The arguments of INSERT_ORDER and INSERT_ORDER_ON_CLAIM, in their order."""
    return (
        order.id,
        order.customer_id,
        order.status.value,
        _lines_json(order.lines),
        idempotency_key,
        reconcile_after,
    )


def order_inserted(row: Mapping[str, Any] | None) -> Order | None:
    """The order INSERT_ORDER_ON_CLAIM stored, or None."""
    return _order(row) if row is not None else None


class OrderRepository:
    """Orders in PostgreSQL, through one connection of the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection, *, reconcile_after: float = 5.0) -> None:
        self.conn = conn
        self.reconcile_after = reconcile_after
        #: The orders this repository inserted (each entered `pending` then).
        self.inserted: list[Order] = []

    async def add(self, order: Order, *, idempotency_key: str | None) -> Order:
        """Insert a new order, or return the one this customer opened with this key (24 h).

        One statement in the common case; the UNIQUE constraint, not a prior read, decides.
        """
        args = _insert_args(order, idempotency_key, self.reconcile_after)
        row = await self.conn.fetchrow(INSERT_ORDER, *args)
        if row is not None:
            return self._inserted(row)
        assert idempotency_key is not None  # a NULL key never conflicts
        existing = await self.find_by_key(order.customer_id, idempotency_key)
        if existing is not None:
            return existing
        # The key's holder is older than the retention: the key is free for a new order.
        await self.conn.execute(FREE_EXPIRED_KEY, order.customer_id, idempotency_key)
        row = await self.conn.fetchrow(INSERT_ORDER, *args)
        if row is None:  # another request took the freed key first
            return await self.add(order, idempotency_key=idempotency_key)
        return self._inserted(row)

    def _inserted(self, row: Mapping[str, Any]) -> Order:
        order = _order(row)
        self.inserted.append(order)
        return order

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        """The order, or None."""
        row = await self.conn.fetchrow(
            SELECT_ORDER_FOR_UPDATE if for_update else SELECT_ORDER, order_id
        )
        return _order(row) if row is not None else None

    async def find_by_key(self, customer_id: str, idempotency_key: str) -> Order | None:
        """The order this customer opened with this key in the last 24 h, or None."""
        row = await self.conn.fetchrow(SELECT_BY_KEY, customer_id, idempotency_key)
        return _order(row) if row is not None else None

    async def update(self, order: Order) -> Order:
        """Write the order's state."""
        row = await self.conn.fetchrow(UPDATE_ORDER, *_state(order))
        return _order(row)

    async def update_pending(self, order: Order) -> Order | None:
        """Write the order's new state if it is still pending; None if it no longer is."""
        row = await self.conn.fetchrow(UPDATE_PENDING, *_state(order))
        return _order(row) if row is not None else None

    async def find(
        self, filters: OrderFilter, *, limit: int, after: tuple[datetime, UUID] | None
    ) -> list[Order]:
        """One page of orders, newest first, after the keyset `after`."""
        created_at, order_id = after if after is not None else (None, None)
        rows = await self.conn.fetch(
            LIST_ORDERS,
            filters.customer_id,
            filters.status.value if filters.status else None,
            created_at,
            order_id,
            limit,
        )
        return [_order(row) for row in rows]

    async def claim_due(
        self, *, limit: int, lease_seconds: float, max_backoff: float, min_lease: float
    ) -> list[Order]:
        """Lease up to `limit` orders the reconciler must look at now, oldest first."""
        rows = await self.conn.fetch(CLAIM_DUE, limit, lease_seconds, max_backoff, min_lease)
        return [_order(row) for row in rows]

    async def mark_stock_released(self, order_id: UUID, reservation_id: UUID) -> bool:
        """Record that catalog released the order's stock; False if nothing changed."""
        return await self.conn.fetchval(MARK_STOCK_RELEASED, order_id, reservation_id) is not None

    async def pending_backlog(self) -> PendingBacklog:
        """How many orders are pending now, and how long the oldest has waited."""
        row = await self.conn.fetchrow(PENDING_BACKLOG)
        assert row is not None  # an aggregate always answers one row
        return PendingBacklog(count=row["count"], oldest_seconds=max(0.0, row["oldest_seconds"]))


def _state(order: Order) -> tuple[Any, ...]:
    return (
        order.id,
        order.status.value,
        _lines_json(order.lines),
        order.total_cents,
        order.currency,
        order.reservation_id,
        order.stock_released,
        order.reject_reason,
        order.release_pending,
    )


def _lines_json(lines: tuple[OrderLine, ...]) -> list[dict[str, Any]]:
    return [
        {
            "product_id": str(line.product_id),
            "quantity": line.quantity,
            "sku": line.sku,
            "name": line.name,
            "unit_price_cents": line.unit_price_cents,
        }
        for line in lines
    ]


def _order(row: Mapping[str, Any]) -> Order:
    return Order(
        id=row["id"],
        customer_id=row["customer_id"],
        status=OrderStatus(row["status"]),
        lines=tuple(
            OrderLine(
                product_id=UUID(line["product_id"]),
                quantity=line["quantity"],
                sku=line["sku"],
                name=line["name"],
                unit_price_cents=line["unit_price_cents"],
            )
            for line in row["lines"]
        ),
        total_cents=row["total_cents"],
        currency=row["currency"],
        reservation_id=row["reservation_id"],
        stock_released=row["stock_released"],
        reject_reason=row["reject_reason"],
        release_pending=row["release_pending"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
