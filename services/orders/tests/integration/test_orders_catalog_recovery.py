"""Orders follows catalog back within seconds of a fault, without hammering it meanwhile.

These tests run with the shipped breaker and pool settings (not the suite's quick ones):
they are what the defaults promise.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fastapi import FastAPI

from bazaar.orders.config import OrdersSettings
from bazaar.shared.testing.chaos import ChaosProxy, Mode

#: How long catalog hangs (as under SIGSTOP): long enough for several failed trials.
OUTAGE_SECONDS = 6.0
#: Placements per second while it hangs: clients keep coming.
PLACEMENTS_PER_SECOND = 2


@pytest.fixture
def orders_settings(orders_settings: OrdersSettings) -> OrdersSettings:
    """The suite's settings with the shipped breaker and pool defaults."""
    shipped = {
        name: OrdersSettings.model_fields[name].default
        for name in (
            "catalog_breaker_reset_seconds",
            "catalog_breaker_max_reset_seconds",
            "upstream_pool_idle_seconds",
        )
        if name in OrdersSettings.model_fields
    }
    return orders_settings.model_copy(update=shipped)


async def test_an_order_placed_two_seconds_after_a_hanging_catalog_returns_is_confirmed(
    place: Any, new_product: Any, catalog_proxy: ChaosProxy, orders_app: FastAPI
) -> None:
    product = await new_product(stock=100)
    lines = [{"product_id": product["id"], "quantity": 1}]
    assert (await place(lines)).status_code == 201
    await catalog_proxy.set_mode(Mode.HANG)
    assert (await place(lines)).status_code == 202
    assert orders_app.state.catalog.breaker.current_state == "open"

    before = catalog_proxy.connections
    placed = 0
    started = time.monotonic()
    while time.monotonic() - started < OUTAGE_SECONDS:
        assert (await place(lines)).status_code == 202
        placed += 1
        await asyncio.sleep(1 / PLACEMENTS_PER_SECOND)
    reached = catalog_proxy.connections - before

    await catalog_proxy.set_mode(Mode.FORWARD)
    back = time.monotonic()
    while (status := (await place(lines)).status_code) != 201:
        assert status == 202
        assert time.monotonic() - back < 2.5, "catalog is back, orders still does not ask it"
        await asyncio.sleep(0.1)
    # No hammering: a trial now and then (the pause doubling up to 2 s) and what arrives
    # while one hangs; never each placement's three attempts, nor the reconciler's 32.
    assert 1 <= reached <= placed, (reached, placed)


async def test_a_pooled_connection_idle_past_the_pool_idle_time_is_not_reused(
    place: Any, new_product: Any, catalog_proxy: ChaosProxy, orders_app: FastAPI
) -> None:
    product = await new_product(stock=10)
    lines = [{"product_id": product["id"], "quantity": 1}]
    assert (await place(lines)).status_code == 201
    opened = catalog_proxy.connections

    # Past the pool's idle time (2 s), short of uvicorn's keep-alive (5 s): catalog may
    # close its end any moment now, so orders must not send the next call down it.
    await asyncio.sleep(3.0)
    assert (await place(lines)).status_code == 201

    assert catalog_proxy.connections == opened + 1
    assert orders_app.state.catalog.breaker.fail_counter == 0
