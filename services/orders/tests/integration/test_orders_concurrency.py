"""Many orders at once: never oversold, and one key makes one order however often it is sent."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from bazaar.orders.config import OrdersSettings
from bazaar.shared.testing.problems import check_problem


@pytest.fixture
def orders_settings(orders_settings: OrdersSettings) -> OrdersSettings:
    """Time enough for catalog to answer every racer.

    Catalog serialises reservations of one product on its row lock, a commit each: sixty of
    them take about two seconds here, far past the suite's 0.5 s read timeout. These races
    are about stock and keys; the race under short timeouts is in test_orders_outage_race.
    Sixty connections opened at once on a loaded machine can also take longer than the
    suite's 0.5 s connect timeout (seen once under `make test`): that is given time too.
    """
    return orders_settings.model_copy(
        update={
            "catalog_connect_timeout_seconds": 5.0,
            "catalog_read_timeout_seconds": 10.0,
            "catalog_deadline_seconds": 20.0,
        }
    )


async def test_sixty_customers_racing_for_twenty_units_get_exactly_twenty_orders(
    place: Any,
    new_product: Any,
    customer: Any,
    stock_of: Any,
    stored_orders: Any,
    catalog_db: Any,
) -> None:
    product = await new_product(stock=20)
    lines = [{"product_id": product["id"], "quantity": 1}]

    answers = await asyncio.gather(
        *(place(lines, headers=customer(f"customer-{i % 7}")) for i in range(60))
    )

    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: 20, 409: 40}, statuses
    for answer in answers:
        if answer.status_code == 409:
            problem = check_problem(answer, 409, "insufficient-stock")
            assert problem["product_ids"] == [product["id"]]
        else:
            assert answer.json()["status"] == "confirmed"
    assert await stock_of(product["id"]) == 0
    rows = await stored_orders()
    assert Counter(r["status"] for r in rows) == {"confirmed": 20, "rejected": 40}
    active = await catalog_db.fetchval("SELECT count(*) FROM reservation WHERE status = 'active'")
    assert active == 20
    reserved = await catalog_db.fetchval(
        "SELECT sum(quantity) FROM reservation_line WHERE product_id = $1",
        uuid.UUID(product["id"]),
    )
    assert reserved == 20


async def test_twenty_requests_with_one_key_make_one_order_and_one_reservation(
    client: httpx.AsyncClient,
    new_product: Any,
    customer: Any,
    stock_of: Any,
    stored_orders: Any,
    catalog_db: Any,
) -> None:
    product = await new_product(stock=50)
    headers = {**customer("alice"), "Idempotency-Key": "the-one-key"}
    body = {"lines": [{"product_id": product["id"], "quantity": 2}]}

    answers = await asyncio.gather(
        *(client.post("/v1/orders", json=body, headers=headers) for _ in range(20))
    )

    created = [
        a for a in answers if a.status_code == 201 and "idempotent-replayed" not in a.headers
    ]
    replays = [a for a in answers if a.headers.get("idempotent-replayed") == "true"]
    in_use = [a for a in answers if a.status_code == 409]
    assert len(created) == 1, [a.status_code for a in answers]
    assert len(created) + len(replays) + len(in_use) == 20
    for replay in replays:
        assert replay.status_code == 201
        assert replay.json() == created[0].json()
    for busy in in_use:
        check_problem(busy, 409, "idempotency-key-in-use")
    [row] = await stored_orders()
    assert str(row["id"]) == created[0].json()["id"]
    reservations = await catalog_db.fetch("SELECT order_id FROM reservation")
    assert [r["order_id"] for r in reservations] == [row["id"]]
    assert await stock_of(product["id"]) == 48

    # Once the first answer is stored, every later try is its replay.
    late = await client.post("/v1/orders", json=body, headers=headers)
    assert late.status_code == 201
    assert late.headers["idempotent-replayed"] == "true"
    assert late.json() == created[0].json()
