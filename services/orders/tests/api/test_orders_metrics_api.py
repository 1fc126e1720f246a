"""Orders' domain metrics as scraped: each order counted once per status it entered (every
order enters `pending` as it is first stored, whatever the answer), and the pending backlog as
the reconciler's rounds leave it."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from bazaar.orders import app as orders_app_module
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.chaos import ChaosProxy, Mode

STATUSES = ("pending", "confirmed", "rejected", "cancelled")


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics by (name, labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def entered(client: httpx.AsyncClient) -> dict[str, float]:
    """bazaar_orders_total by status (every status is there from the start)."""
    samples = await scrape(client)
    return {
        status: samples[("bazaar_orders_total", frozenset({("status", status)}))]
        for status in STATUSES
    }


def counted(**counts: float) -> dict[str, float]:
    return {status: counts.get(status, 0.0) for status in STATUSES}


async def backlog(client: httpx.AsyncClient) -> tuple[float, float]:
    """bazaar_orders_pending and bazaar_orders_pending_oldest_seconds."""
    samples = await scrape(client)
    return (
        samples[("bazaar_orders_pending", frozenset())],
        samples[("bazaar_orders_pending_oldest_seconds", frozenset())],
    )


async def test_a_confirmed_placement_counts_once_and_its_replay_not_again(
    client: httpx.AsyncClient, place: Any, new_product: Any
) -> None:
    product = await new_product(stock=5)
    assert await entered(client) == counted()
    key = str(uuid.uuid4())

    first = await place([{"product_id": product["id"], "quantity": 1}], key=key)
    replay = await place([{"product_id": product["id"], "quantity": 1}], key=key)

    assert first.status_code == 201, first.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    # Placed (pending, as its row was stored), then confirmed: confirmed / pending is the
    # share of placed orders confirmed.
    assert await entered(client) == counted(pending=1, confirmed=1)


async def test_an_order_placed_again_with_its_key_after_24_hours_is_a_new_order_counted(
    client: httpx.AsyncClient, place: Any, new_product: Any, orders_db: Any
) -> None:
    product = await new_product(stock=5)
    key = str(uuid.uuid4())
    first = await place([{"product_id": product["id"], "quantity": 1}], key=key)
    assert first.status_code == 201, first.text
    # A day and more later the key is free again; its old order still holds it, so the new
    # order is not stored by the key's claim but inserted afterwards, once the key is freed.
    await orders_db.execute("UPDATE customer_order SET created_at = now() - interval '25 hours'")
    await orders_db.execute("UPDATE idempotency_key SET expires_at = now() - interval '1 hour'")

    again = await place([{"product_id": product["id"], "quantity": 1}], key=key)

    assert again.status_code == 201, again.text
    assert again.json()["id"] != first.json()["id"]
    assert await entered(client) == counted(pending=2, confirmed=2)


async def test_placements_catalog_refuses_count_as_rejected(
    client: httpx.AsyncClient, place: Any, new_product: Any
) -> None:
    scarce = await new_product(stock=1)
    euros, dollars = await new_product(currency="EUR"), await new_product(currency="USD")

    out_of_stock = await place([{"product_id": scarce["id"], "quantity": 2}])
    mixed = await place(
        [{"product_id": euros["id"], "quantity": 1}, {"product_id": dollars["id"], "quantity": 1}]
    )
    # Refused before any order exists: nothing entered a status.
    twice = await place(
        [{"product_id": scarce["id"], "quantity": 1}, {"product_id": scarce["id"], "quantity": 1}]
    )

    assert out_of_stock.status_code == 409, out_of_stock.text
    assert mixed.status_code == 422, mixed.text
    assert mixed.json()["order_id"]
    assert twice.status_code == 422, twice.text
    assert await entered(client) == counted(pending=2, rejected=2)


async def test_a_cancellation_counts_once_however_often_it_is_asked(
    client: httpx.AsyncClient, place: Any, new_product: Any, customer: Any
) -> None:
    product = await new_product(stock=5)
    order = (await place([{"product_id": product["id"], "quantity": 1}])).json()

    for _ in range(2):
        response = await client.post(f"/v1/orders/{order['id']}/cancel", headers=customer())
        assert response.status_code == 200, response.text

    assert await entered(client) == counted(pending=1, confirmed=1, cancelled=1)


async def test_pending_placements_then_the_reconciler_settling_them_are_counted_and_gauged(
    client: httpx.AsyncClient,
    place: Any,
    new_product: Any,
    catalog_proxy: ChaosProxy,
    catalog_db: Any,
    eventually: Any,
) -> None:
    mug, tea = await new_product(stock=5), await new_product(stock=5)
    assert await backlog(client) == (0.0, 0.0)
    await catalog_proxy.set_mode(Mode.REFUSE)
    first = await place([{"product_id": mug["id"], "quantity": 1}])
    second = await place([{"product_id": tea["id"], "quantity": 1}])
    assert (first.status_code, second.status_code) == (202, 202), second.text
    assert await entered(client) == counted(pending=2)

    async def gauged() -> bool:
        # Rounds run every 0.2 s; the 15 s refresh has not come yet.
        pending, oldest = await backlog(client)
        return pending == 2 and oldest >= 0.5

    await eventually(gauged)
    # While catalog is away the tea runs out: the reconciler will find it refused.
    await catalog_db.execute("UPDATE product SET stock = 0 WHERE id = $1", uuid.UUID(tea["id"]))
    await catalog_proxy.set_mode(Mode.FORWARD)

    async def settled() -> bool:
        return await entered(client) == counted(pending=2, confirmed=1, rejected=1)

    await eventually(settled, within=20)
    await eventually(lambda: _backlog_is(client, (0.0, 0.0)))


async def _backlog_is(client: httpx.AsyncClient, expected: tuple[float, float]) -> bool:
    return await backlog(client) == expected


async def test_the_pending_gauges_refresh_logs_its_routine_turns_at_debug_only(
    orders_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    eventually: Any,
) -> None:
    # Every 15 s per replica in production: shortened here to see a few turns.
    monkeypatch.setattr(orders_app_module, "BACKLOG_SECONDS", 0.05)
    caplog.set_level(logging.DEBUG)

    def turns() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "measure pending orders done"]

    async def measured() -> bool:
        return len(turns()) >= 2

    async with serve_in_process(orders_app):
        await eventually(measured)

    assert {r.levelno for r in turns()} == {logging.DEBUG}
