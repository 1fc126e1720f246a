"""The order status stream end to end: the real orders service (uvicorn on a socket, its own
database) behind a gateway served as `serve` serves it, read with a real SSE client."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from bazaar.orders.app import create_app as create_orders
from bazaar.orders.cli import MIGRATIONS_DIR
from bazaar.orders.config import OrdersSettings
from bazaar.shared import migrations
from bazaar.shared.stopping import stop_notice
from bazaar.shared.testing.postgres import DatabaseFactory
from bazaar.shared.testing.server import free_port, serve_on_socket
from bazaar.shared.testing.sse import open_stream
from bazaar.shared.testing.tokens import JwksServer, TokenIssuer

#: API.md: a change reaches an open stream within this long of its commit.
LATENCY_BUDGET_SECONDS = 0.5


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def orders_url(
    database_factory: DatabaseFactory, jwks_server: JwksServer
) -> AsyncIterator[str]:
    """The real orders on a socket, over a migrated database of its own; catalog and auth
    refuse connections, so an order placed stays pending (nothing reserved)."""
    url = await database_factory.create("gateway_orders")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = OrdersSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=url,
        jwt_jwks_url=jwks_server.url,
        jwt_issuer=TokenIssuer.ISSUER,
        jwt_audience=TokenIssuer.AUDIENCE,
        catalog_url=nowhere,
        auth_url=nowhere,
        catalog_attempts=1,
        catalog_deadline_seconds=0.5,
    )
    app = create_orders(settings)
    async with serve_on_socket(app) as base:
        yield base
        stop_notice(app).set()  # open streams end, so the server can stop


async def test_a_cancel_reaches_a_stream_through_the_gateway_within_500_ms_of_its_commit(
    live, orders_url: str, token_issuer: TokenIssuer
) -> None:
    gateway = await live({"orders": orders_url})
    alice = {"Authorization": f"Bearer {token_issuer.issue(str(uuid.uuid4()))}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=alice, timeout=10) as http:
        placed = await http.post(
            "/v1/orders",
            json={"lines": [{"product_id": str(uuid.uuid4()), "quantity": 1}]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert placed.status_code == 202, placed.text  # catalog unreachable: pending
        order: dict[str, Any] = placed.json()
        async with open_stream(http, f"/v1/orders/{order['id']}/events") as stream:
            first = await stream.next()
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            assert json.loads(first.event.data)["status"] == "pending"
            before_commit = time.perf_counter()
            cancelled = await http.post(f"/v1/orders/{order['id']}/cancel")
            change = await stream.next()
            await stream.end()  # cancelled with nothing reserved: final, the stream ends
    assert cancelled.status_code == 200, cancelled.text
    assert change.at - before_commit < LATENCY_BUDGET_SECONDS, change.at - before_commit
    assert json.loads(change.event.data) == cancelled.json()
    assert int(change.event.id) > int(first.event.id)
