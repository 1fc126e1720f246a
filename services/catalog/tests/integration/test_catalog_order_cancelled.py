"""Catalog consumes orders.order.cancelled over the real broker: stock comes back, once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr

from bazaar.catalog.config import CatalogSettings
from bazaar.shared.events import make_event
from bazaar.shared.messaging import EVENTS_EXCHANGE, encode_event
from bazaar.shared.testing.amqp import EventTap, eventually, tap_events

CANCELLED = "orders.order.cancelled"
RELEASED = "catalog.stock.released"
QUEUE = "catalog.order-cancelled"


@pytest.fixture
def catalog_settings(catalog_settings: CatalogSettings, amqp_url: str) -> CatalogSettings:
    """The suite's settings with this run's broker: the app runs its relay and consumer."""
    return catalog_settings.model_copy(
        update={"amqp_url": SecretStr(amqp_url), "outbox_poll_seconds": 0.2}
    )


@pytest_asyncio.fixture
async def released(
    client: httpx.AsyncClient, catalog_app: FastAPI, amqp_url: str
) -> AsyncIterator[EventTap]:
    """What an outside subscriber of catalog.stock.released receives (the app is started)."""
    assert client is not None
    await catalog_app.state.messaging.wait_started()
    async with tap_events(amqp_url, RELEASED) as tap:
        yield tap


async def cancel(amqp_url: str, order_id: str, reservation_id: str | None, times: int = 1) -> None:
    """Publish orders.order.cancelled as the orders service would (same id each time)."""
    event = make_event(
        source="/bazaar/orders",
        type=CANCELLED,
        subject=order_id,
        data={"order_id": order_id, "customer_id": "user-1", "reservation_id": reservation_id},
    )
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        for _ in range(times):
            await exchange.publish(encode_event(event), routing_key=CANCELLED)


async def reserve(
    client: httpx.AsyncClient, reserver: dict[str, str], product: dict[str, Any], quantity: int
) -> dict[str, Any]:
    body = {
        "order_id": str(uuid.uuid4()),
        "lines": [{"product_id": product["id"], "quantity": quantity}],
    }
    headers = {**reserver, "Idempotency-Key": uuid.uuid4().hex}
    response = await client.post("/v1/reservations", json=body, headers=headers)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def consumed(app: FastAPI, outcome: str) -> float:
    return float(
        app.state.messaging.metrics.value(
            "bazaar_events_consumed_total", consumer=QUEUE, outcome=outcome
        )
    )


async def test_a_cancelled_order_gets_its_stock_back_once_even_when_delivered_twice(
    client: httpx.AsyncClient,
    catalog_app: FastAPI,
    reserver: dict[str, str],
    new_product: Any,
    stock_of: Any,
    released: EventTap,
    amqp_url: str,
) -> None:
    product = await new_product(stock=10)
    reservation = await reserve(client, reserver, product, 4)
    assert await stock_of(product["id"]) == 6
    await cancel(amqp_url, reservation["order_id"], reservation["id"], times=2)

    async def both_seen() -> bool:
        return consumed(catalog_app, "applied") + consumed(catalog_app, "duplicate") == 2

    await eventually(both_seen)
    [event] = await released.wait_for(1)
    assert event["data"] == {
        "reservation_id": reservation["id"],
        "order_id": reservation["order_id"],
        "lines": [{"product_id": product["id"], "sku": product["sku"], "quantity": 4}],
    }
    assert await stock_of(product["id"]) == 10
    assert consumed(catalog_app, "duplicate") == 1
    got = await client.get(f"/v1/reservations/{reservation['id']}", headers=reserver)
    assert got.json()["status"] == "released"


async def test_a_cancellation_without_reservation_id_releases_the_orders_active_reservation(
    client: httpx.AsyncClient,
    catalog_app: FastAPI,
    reserver: dict[str, str],
    new_product: Any,
    stock_of: Any,
    released: EventTap,
    amqp_url: str,
) -> None:
    product = await new_product(stock=5)
    reservation = await reserve(client, reserver, product, 5)
    await cancel(amqp_url, reservation["order_id"], None)
    [event] = await released.wait_for(1)
    assert event["subject"] == reservation["id"]
    assert await stock_of(product["id"]) == 5


async def test_a_cancelled_order_that_holds_nothing_changes_nothing(
    client: httpx.AsyncClient,
    catalog_app: FastAPI,
    reserver: dict[str, str],
    new_product: Any,
    stock_of: Any,
    released: EventTap,
    amqp_url: str,
    outbox_events: Any,
) -> None:
    product = await new_product(stock=3)
    other = await reserve(client, reserver, product, 2)
    # Nothing reserved for this order; another order's reservation id must not be touched.
    await cancel(amqp_url, str(uuid.uuid4()), None)
    await cancel(amqp_url, str(uuid.uuid4()), other["id"])

    async def both_applied() -> bool:
        return consumed(catalog_app, "applied") == 2

    await eventually(both_applied)
    assert await stock_of(product["id"]) == 1
    assert await outbox_events(RELEASED) == []
    assert released.events == []
