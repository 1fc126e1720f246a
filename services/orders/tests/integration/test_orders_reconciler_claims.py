"""Leasing due orders in PostgreSQL: oldest first, never for less than the work may take."""

from __future__ import annotations

from typing import Any

from bazaar.orders.adapters.orders import OrderRepository

SEED = """
INSERT INTO customer_order (id, customer_id, status, lines, next_attempt_at, created_at,
                            updated_at)
SELECT gen_random_uuid(), 'customer-1', 'pending',
       jsonb_build_array(jsonb_build_object(
           'product_id', gen_random_uuid(), 'quantity', 1,
           'sku', NULL, 'name', NULL, 'unit_price_cents', NULL)),
       now() - make_interval(secs => n), now() - make_interval(mins => $1[n]), now()
FROM generate_series(1, array_length($1::int[], 1)) AS n
RETURNING id, created_at
"""


async def test_the_oldest_due_orders_are_leased_first_for_at_least_the_work_budget(
    orders_db: Any,
) -> None:
    # Ages in minutes; the order due longest is not the oldest.
    rows = await orders_db.fetch(SEED, [3, 50, 7, 20, 1])
    oldest_first = [r["id"] for r in sorted(rows, key=lambda r: r["created_at"])]

    claimed = await OrderRepository(orders_db).claim_due(
        limit=2, lease_seconds=0.2, max_backoff=0.5, min_lease=9.0
    )

    assert [o.id for o in claimed] == oldest_first[:2]
    leases = await orders_db.fetch(
        "SELECT extract(epoch FROM next_attempt_at - now()) AS left FROM customer_order"
        " WHERE id = ANY($1::uuid[])",
        [o.id for o in claimed],
    )
    assert all(7.0 < row["left"] <= 9.0 for row in leases)  # wide: a loaded machine
