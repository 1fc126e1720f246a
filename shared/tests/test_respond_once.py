"""respond_once: a keyed request runs once per (principal, route, key); reuse elsewhere is 422."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
import httpx
import pytest_asyncio
from fastapi import FastAPI, Header, Request
from starlette.responses import Response

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.errors import install_problem_handlers
from bazaar.shared.idempotency import (
    IDEMPOTENCY_DDL,
    IdempotencyStore,
    OptionalIdempotencyKey,
    StoredResponse,
)
from bazaar.shared.idempotency.respond import respond_once
from bazaar.shared.testing.postgres import DatabaseFactory, truncate_all

CANCELS = "CREATE TABLE cancel_log (order_id text NOT NULL)"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database(database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    url = await database_factory.create("respond_once")
    conn = await asyncpg.connect(url)
    await conn.execute(IDEMPOTENCY_DDL)
    await conn.execute(CANCELS)
    await conn.close()
    db = Database(PoolSettings(dsn=url, max_size=5))
    await db.open()
    yield db
    await db.close()


@pytest_asyncio.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    await truncate_all(database.settings.dsn)
    app = FastAPI()
    install_problem_handlers(app, {})
    store = IdempotencyStore(database)

    @app.post("/orders/{order_id}/cancel")
    async def cancel(
        order_id: str,
        request: Request,
        key: OptionalIdempotencyKey,
        x_principal: Annotated[str, Header()] = "alice",
    ) -> Response:
        async def operation(conn: asyncpg.Connection) -> StoredResponse:
            await conn.execute("INSERT INTO cancel_log VALUES ($1)", order_id)
            return StoredResponse(200, {"cancelled": order_id}, {})

        return await respond_once(
            request,
            operation=operation,
            db=database,
            store=store,
            key=key,
            principal=x_principal,
            body=None,
        )

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


async def _cancelled(database: Database) -> list[str]:
    async with database.connection() as conn:
        return [r["order_id"] for r in await conn.fetch("SELECT order_id FROM cancel_log")]


async def test_one_key_reused_for_another_resource_is_a_mismatch_not_a_replay(
    client: httpx.AsyncClient, database: Database
) -> None:
    first = await client.post("/orders/A/cancel", headers={"Idempotency-Key": "k"})
    other = await client.post("/orders/B/cancel", headers={"Idempotency-Key": "k"})

    assert first.status_code == 200 and first.json() == {"cancelled": "A"}
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-mismatch")
    assert await _cancelled(database) == ["A"]


async def test_the_same_resource_and_key_replays(
    client: httpx.AsyncClient, database: Database
) -> None:
    first = await client.post("/orders/A/cancel", headers={"Idempotency-Key": "k"})
    again = await client.post("/orders/A/cancel", headers={"Idempotency-Key": "k"})

    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await _cancelled(database) == ["A"]


async def test_without_a_key_each_request_runs_in_its_own_transaction(
    client: httpx.AsyncClient, database: Database
) -> None:
    await client.post("/orders/A/cancel")
    await client.post("/orders/A/cancel")

    assert await _cancelled(database) == ["A", "A"]
