"""Catalog refusing, resetting or hanging: 202 pending, the breaker opens, all settles later."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bazaar.orders.adapters.breaker import is_trial_due
from bazaar.orders.config import OrdersSettings
from bazaar.shared.testing.chaos import ChaosProxy, Mode

#: What orders may take for one POST while catalog is down: its deadline, plus its own work.
SLACK = 1.0
#: A fast failure: the breaker answers without waiting for catalog at all (a third of the
#: suite's 1.5 s deadline; such an answer takes some 30 ms here).
FAST = 0.5


def _breaker_gauge(metrics: str, name: str = "bazaar_circuit_breaker_state") -> float | None:
    match = re.search(rf'^{name}\{{dependency="catalog"\}} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else None


async def _timed(place: Any, lines: list[dict[str, Any]]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await place(lines)
    return response, time.monotonic() - started


@pytest.mark.parametrize("mode", [Mode.REFUSE, Mode.RESET, Mode.HANG])
async def test_orders_placed_while_catalog_is_down_are_pending_then_settle_once_each(
    mode: Mode,
    place: Any,
    client: httpx.AsyncClient,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    catalog_proxy: ChaosProxy,
    orders_app: FastAPI,
    orders_settings: OrdersSettings,
    eventually: Any,
) -> None:
    product = await new_product(stock=20, price_cents=300)
    lines = [{"product_id": product["id"], "quantity": 2}]
    breaker = orders_app.state.catalog.breaker
    await catalog_proxy.set_mode(mode)

    first, took = await _timed(place, lines)
    assert took < orders_settings.catalog_deadline_seconds + SLACK, took
    # Three attempts, three failures (the last cut short by the deadline when catalog
    # hangs): enough to open a breaker that opens after three.
    assert orders_settings.catalog_attempts >= orders_settings.catalog_breaker_fail_max
    assert breaker.current_state == "open"
    answers = [first]
    for _ in range(3):
        response, took = await _timed(place, lines)
        answers.append(response)
        assert took < FAST, f"{took:.2f} s with the breaker open"

    for response in answers:
        assert response.status_code == 202, response.text
        order = response.json()
        assert order["status"] == "pending"
        assert response.headers["location"] == f"/v1/orders/{order['id']}"
        assert order["total_cents"] is None and order["currency"] is None
        assert order["lines"] == [
            {
                "product_id": product["id"],
                "sku": None,
                "name": None,
                "quantity": 2,
                "unit_price_cents": None,
            }
        ]
        assert order["stock_released"] is False
    # Open (2) until its pause is over, half-open (1) once a trial is due: which one a scrape
    # sees depends on when it came (a slow run can pass the 0.5-1 s pause here).
    due_before = is_trial_due(breaker)
    metrics = (await client.get("/metrics")).text
    due_after = is_trial_due(breaker)
    expected = {1.0} if due_before else ({2.0, 1.0} if due_after else {2.0})
    assert _breaker_gauge(metrics) in expected
    assert _breaker_gauge(metrics, "bazaar_circuit_breaker_opened_total") == 1.0
    assert await stock_of(product["id"]) == 20

    await catalog_proxy.set_mode(Mode.FORWARD)

    async def all_confirmed() -> bool:
        listed = await client.get("/v1/orders", headers=customer(), params={"limit": 100})
        return all(o["status"] == "confirmed" for o in listed.json()["items"])

    await eventually(all_confirmed, within=15)
    assert await stock_of(product["id"]) == 20 - 2 * len(answers)
    for response in answers:
        order_id = response.json()["id"]
        assert [r["status"] for r in await reservations_for(order_id)] == ["active"]
        got = await client.get(f"/v1/orders/{order_id}", headers=customer())
        assert got.json()["total_cents"] == 600
        assert got.json()["lines"][0]["sku"] == product["sku"]
    assert breaker.current_state == "closed"
    assert _breaker_gauge((await client.get("/metrics")).text) == 0.0


async def test_a_replay_of_a_pending_answer_is_the_pending_answer(
    place: Any, new_product: Any, catalog_proxy: ChaosProxy
) -> None:
    product = await new_product(stock=5)
    lines = [{"product_id": product["id"], "quantity": 1}]
    await catalog_proxy.set_mode(Mode.REFUSE)

    first = await place(lines, key="pending-key")
    again = await place(lines, key="pending-key")

    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_an_order_placed_once_catalog_is_back_and_the_breaker_closed_is_confirmed(
    place: Any,
    new_product: Any,
    catalog_proxy: ChaosProxy,
    orders_app: FastAPI,
    eventually: Any,
) -> None:
    product = await new_product(stock=5)
    lines = [{"product_id": product["id"], "quantity": 1}]
    await catalog_proxy.set_mode(Mode.REFUSE)
    assert (await place(lines)).status_code == 202
    assert orders_app.state.catalog.breaker.current_state == "open"

    await catalog_proxy.set_mode(Mode.FORWARD)

    async def confirmed_at_once() -> bool:
        return (await place(lines)).status_code == 201

    # Within the breaker's reset time (1 s) and a probe, orders asks catalog again.
    await eventually(confirmed_at_once, within=5)


async def test_a_pending_order_cancelled_while_catalog_is_down_holds_no_stock_once_it_is_back(
    place: Any,
    client: httpx.AsyncClient,
    customer: Any,
    new_product: Any,
    stock_of: Any,
    reservations_for: Any,
    orders_db: Any,
    catalog_proxy: ChaosProxy,
    eventually: Any,
) -> None:
    product = await new_product(stock=5)
    await catalog_proxy.set_mode(Mode.REFUSE)
    pending = await place([{"product_id": product["id"], "quantity": 2}])
    assert pending.status_code == 202, pending.text
    order_id = pending.json()["id"]
    cancelled = await client.post(f"/v1/orders/{order_id}/cancel", headers=customer())
    assert cancelled.json()["status"] == "cancelled"

    await catalog_proxy.set_mode(Mode.FORWARD)

    async def nothing_left_to_release() -> bool:
        return not await orders_db.fetchval(
            "SELECT release_pending FROM customer_order WHERE id = $1", uuid.UUID(order_id)
        )

    await eventually(nothing_left_to_release)
    assert all(r["status"] == "released" for r in await reservations_for(order_id))
    assert await stock_of(product["id"]) == 5
    got = await client.get(f"/v1/orders/{order_id}", headers=customer())
    assert got.json()["status"] == "cancelled"
    assert got.json()["stock_released"] is True
