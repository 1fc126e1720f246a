"""The reconciler against a real catalog: several orders at once, one call per order at a time.

Pending orders are written straight into orders' database (as an outage leaves them); the
reconciler of the running app (and of a second replica over the same database) settles them
through `slow_catalog`, which holds every reservation answer back for a while and counts what
is in flight.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bazaar.orders.app import create_app
from bazaar.orders.config import OrdersSettings
from bazaar.shared.testing.asgi import serve_in_process

#: How long catalog's answer to each reservation takes: longer than the first retry pause
#: (0.2 s here), well inside the deadline.
ANSWER_SECONDS = 1.0

SEED_PENDING = """
INSERT INTO customer_order (id, customer_id, status, lines, next_attempt_at, created_at,
                            updated_at)
SELECT gen_random_uuid(), 'customer-1', 'pending', $1::jsonb, now(),
       now() - make_interval(secs => $2 - n), now()
FROM generate_series(1, $2) AS n
RETURNING id
"""


@pytest.fixture
def orders_settings(orders_settings: OrdersSettings, slow_catalog: Any) -> OrdersSettings:
    """Catalog behind the slow hop, with time enough for a held answer."""
    slow_catalog.hold_seconds = ANSWER_SECONDS
    slow_catalog.holding = True
    return orders_settings.model_copy(
        update={
            "catalog_url": slow_catalog.url,
            "catalog_read_timeout_seconds": 3.0,
            "catalog_deadline_seconds": 4.0,
            "reconcile_interval_seconds": 0.1,
            "reconcile_concurrency": 4,
        }
    )


@pytest.fixture
def seed_pending(orders_db: Any) -> Any:
    """`await seed_pending(product_id, count)`: pending orders of one unit each, due now."""

    async def seed(product_id: str, count: int) -> list[str]:
        line = {"product_id": product_id, "quantity": 1}
        lines = [{**line, "sku": None, "name": None, "unit_price_cents": None}]
        rows = await orders_db.fetch(SEED_PENDING, lines, count)
        return [str(row["id"]) for row in rows]

    return seed


@pytest.fixture
def all_confirmed(orders_db: Any) -> Any:
    """`await all_confirmed(ids)`: every one of these orders is confirmed."""

    async def check(ids: list[str]) -> bool:
        statuses = await orders_db.fetch(
            "SELECT status FROM customer_order WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
        return all(row["status"] == "confirmed" for row in statuses)

    return check


async def test_a_backlog_is_settled_several_orders_at_once_never_more_than_the_setting(
    client: Any,
    new_product: Any,
    stock_of: Any,
    seed_pending: Any,
    all_confirmed: Any,
    slow_catalog: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=50)
    ids = await seed_pending(product["id"], 12)

    await eventually(lambda: all_confirmed(ids), within=20)

    assert 1 < slow_catalog.most_in_flight <= 4
    assert await stock_of(product["id"]) == 50 - 12


async def test_two_replicas_never_ask_catalog_for_one_order_at_the_same_time(
    client: Any,
    orders_settings: OrdersSettings,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    seed_pending: Any,
    all_confirmed: Any,
    order_events: Any,
    slow_catalog: Any,
    eventually: Any,
) -> None:
    product = await new_product(stock=50)
    async with serve_in_process(create_app(orders_settings)):  # a second replica
        ids = await seed_pending(product["id"], 6)

        await eventually(lambda: all_confirmed(ids), within=20)

    assert slow_catalog.overlapping == set()
    for order_id in ids:
        assert [r["status"] for r in await reservations_for(order_id)] == ["active"]
    assert await stock_of(product["id"]) == 50 - 6
    assert len(await order_events("orders.order.placed")) == 6
