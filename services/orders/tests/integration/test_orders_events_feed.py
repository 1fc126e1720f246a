"""Status streams at scale and through failures: one LISTEN connection per process, no
pooled connection per waiting stream, nothing lost while the LISTEN connection is down."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr

from bazaar.orders.app import create_app
from bazaar.orders.config import OrdersSettings
from bazaar.shared.notify import ChangeFeed
from bazaar.shared.stopping import stop_notice
from bazaar.shared.testing.amqp import eventually
from bazaar.shared.testing.chaos import ChaosProxy, Mode, chaos_proxy
from bazaar.shared.testing.server import serve_on_socket
from bazaar.shared.testing.sse import OpenStream, open_stream

STREAMS = 200
ORDERS = 10
LATENCY_BUDGET_SECONDS = 0.5


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """`app` on a real socket (streams are flushed event by event), and a client of it."""
    async with serve_on_socket(app) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, limits=httpx.Limits(max_connections=None)
        ) as client:
            yield client
        stop_notice(app).set()


async def _place(client: httpx.AsyncClient, product_id: str, headers: dict[str, str]) -> str:
    response = await client.post(
        "/v1/orders",
        json={"lines": [{"product_id": product_id, "quantity": 1}]},
        headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 201, response.text
    order_id: str = response.json()["id"]
    return order_id


def _in_use(app: FastAPI) -> int:
    pool = app.state.db.pool
    return int(pool.get_size() - pool.get_idle_size())


async def test_two_hundred_waiting_streams_hold_no_pooled_connection_and_all_get_the_change(
    orders_settings: OrdersSettings,
    table_cleaner: Callable[[], Awaitable[None]],
    customer: Any,
    new_product: Any,
    orders_db: Any,
) -> None:
    await table_cleaner()
    # No reconciler round while the pool is watched: only the streams could hold connections.
    settings = orders_settings.model_copy(update={"reconcile_interval_seconds": 3600.0})
    app = create_app(settings)
    async with serving(app) as client, AsyncExitStack() as stack:
        product = await new_product(stock=100)
        orders = [await _place(client, product["id"], customer()) for _ in range(ORDERS)]

        async def follow(order_id: str) -> OpenStream:
            stream = await stack.enter_async_context(
                open_stream(client, f"/v1/orders/{order_id}/events", headers=customer())
            )
            await stream.next(within=30)
            return stream

        streams = await asyncio.gather(*(follow(orders[n % ORDERS]) for n in range(STREAMS)))
        assert len(app.state.order_feed) == STREAMS

        samples = []
        for _ in range(10):
            samples.append(_in_use(app))
            await asyncio.sleep(0.05)
        listening = await orders_db.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )

        before_commit: dict[str, float] = {}
        for order_id in orders:
            before_commit[order_id] = time.perf_counter()
            cancelled = await client.post(f"/v1/orders/{order_id}/cancel", headers=customer())
            assert cancelled.status_code == 200
        changes = await asyncio.gather(*(stream.next(within=10) for stream in streams))

    assert samples == [0] * 10
    assert listening == 1
    assert [json.loads(change.event.data)["status"] for change in changes] == [
        "cancelled"
    ] * STREAMS
    latencies = [change.at - before_commit[orders[n % ORDERS]] for n, change in enumerate(changes)]
    assert max(latencies) < LATENCY_BUDGET_SECONDS, sorted(latencies)[-5:]


@pytest_asyncio.fixture
async def db_proxy(orders_database_url: str) -> AsyncIterator[ChaosProxy]:
    """Orders' database behind a chaos proxy (for the LISTEN connection alone)."""
    parts = urlsplit(orders_database_url)
    async with chaos_proxy(f"http://{parts.hostname}:{parts.port or 5432}") as proxy:
        yield proxy


def _through(proxy: ChaosProxy, dsn: str) -> str:
    parts = urlsplit(dsn)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{proxy.port}" if auth else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _until(check: Callable[[], bool]) -> None:
    async def holds() -> bool:
        return check()

    await eventually(holds)


async def test_a_change_made_while_the_listen_connection_is_down_arrives_once_it_is_back(
    orders_settings: OrdersSettings,
    table_cleaner: Callable[[], Awaitable[None]],
    customer: Any,
    new_product: Any,
    db_proxy: ChaosProxy,
) -> None:
    await table_cleaner()
    listen_url = SecretStr(_through(db_proxy, orders_settings.dsn()))
    app = create_app(orders_settings.model_copy(update={"listen_database_url": listen_url}))
    async with serving(app) as client:
        feed: ChangeFeed = app.state.order_feed
        await _until(feed.listening.is_set)
        product = await new_product()
        order_id = await _place(client, product["id"], customer())
        url = f"/v1/orders/{order_id}/events"
        async with open_stream(client, url, headers=customer()) as stream:
            await stream.next()

            await db_proxy.set_mode(Mode.REFUSE)  # the LISTEN connection is cut, and stays out
            await _until(lambda: not feed.listening.is_set())
            cancelled = await client.post(f"/v1/orders/{order_id}/cancel", headers=customer())
            assert cancelled.status_code == 200
            # Its notice went to no one; the stream does not poll.
            assert await stream.quiet_for(1.0)

            await db_proxy.set_mode(Mode.FORWARD)
            missed = await stream.next(within=10)

    assert feed.connects == 2
    assert json.loads(missed.event.data) == cancelled.json()
