"""The idempotency lease holds under load, and shutdown leaves no clean-up running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.idempotency import (
    IDEMPOTENCY_DDL,
    IdempotencyKeyInUse,
    IdempotencyScope,
    IdempotencyStore,
    StoredResponse,
    request_fingerprint,
)
from bazaar.shared.testing.chaos import Mode, chaos_proxy

SCOPE = IdempotencyScope("alice", "POST", "/v1/orders")
FINGERPRINT = request_fingerprint({"sku": "A"})
LEASE = timedelta(seconds=1)


@pytest_asyncio.fixture
async def url(database_factory: Any) -> AsyncIterator[str]:
    url = await database_factory.create("idemlease")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(IDEMPOTENCY_DDL)
        await conn.execute("CREATE TABLE effect (note text NOT NULL)")
    finally:
        await conn.close()
    yield url


async def open_db(url: str, **sizing: Any) -> Database:
    db = Database(PoolSettings(dsn=url, **sizing))
    await db.open()
    return db


def writes(note: str) -> Any:
    async def operation(conn: asyncpg.Connection) -> StoredResponse:
        await conn.execute("INSERT INTO effect VALUES ($1)", note)
        return StoredResponse(201, {"by": note}, {})

    return operation


async def test_a_request_keeps_its_key_while_its_replicas_pool_is_saturated(url: str) -> None:
    # Replica A: 2 connections, 0.3 s to get one; other requests hold both for 3 leases.
    a = await open_db(url, min_size=2, max_size=2, acquire_timeout=0.3)
    b = await open_db(url, max_size=2)
    store_a = IdempotencyStore(a, in_flight_timeout=LEASE)
    store_b = IdempotencyStore(b, in_flight_timeout=LEASE)
    prepared: list[str] = []
    hogs_hold = asyncio.Event()

    async def hog() -> None:
        async with a.connection() as conn:
            hogs_hold.set()
            await conn.execute("SELECT pg_sleep(3)")

    async def prepare_a() -> None:  # waits on a remote call while the pool is taken
        prepared.append("A")
        hogs = [asyncio.create_task(hog()) for _ in range(2)]
        await asyncio.gather(*hogs)

    async def prepare_b() -> None:
        prepared.append("B")

    try:
        first = asyncio.create_task(
            store_a.run(
                key="k",
                scope=SCOPE,
                fingerprint=FINGERPRINT,
                operation=writes("A"),
                prepare=prepare_a,
            )
        )
        await asyncio.wait_for(hogs_hold.wait(), 5)
        refused = 0
        for _ in range(5):  # 2.5 leases into the saturation, a retry lands on replica B
            await asyncio.sleep(0.5)
            with pytest.raises(IdempotencyKeyInUse):
                await store_b.run(
                    key="k",
                    scope=SCOPE,
                    fingerprint=FINGERPRINT,
                    operation=writes("B"),
                    prepare=prepare_b,
                )
            refused += 1
        outcome = await asyncio.wait_for(first, 10)
    finally:
        await store_a.drain()
        await store_b.drain()
        await a.close()
        await b.close()

    assert refused == 5
    assert outcome.replayed is False and outcome.response.body == {"by": "A"}
    assert prepared == ["A"]
    conn = await asyncpg.connect(url)
    try:
        assert [r["note"] for r in await conn.fetch("SELECT note FROM effect")] == ["A"]
    finally:
        await conn.close()


async def test_shutdown_leaves_no_release_retry_running_against_the_closed_pool(
    url: str,
) -> None:
    parts = urlsplit(url)
    async with chaos_proxy(f"http://{parts.hostname}:{parts.port}") as proxy:
        proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        db = await open_db(proxied, min_size=0, max_size=2, acquire_timeout=1, connect_timeout=0.5)
        store = IdempotencyStore(db, in_flight_timeout=LEASE * 10)
        database_gone = asyncio.Event()

        async def fails_as_the_database_goes(conn: asyncpg.Connection) -> StoredResponse:
            await proxy.set_mode(Mode.HANG)  # giving the key back now hangs, then fails
            database_gone.set()
            raise RuntimeError("the request failed")

        request = asyncio.create_task(
            store.run(
                key="k", scope=SCOPE, fingerprint=FINGERPRINT, operation=fails_as_the_database_goes
            )
        )
        try:
            await asyncio.wait_for(database_gone.wait(), 5)
            await asyncio.sleep(0.1)  # the first release attempt is under way
            await store.drain(grace=2)
            await db.close()
            with contextlib.suppress(Exception):
                await request
            others = asyncio.all_tasks() - {asyncio.current_task()}
            left = [t for t in others if "IdempotencyStore" in repr(t.get_coro())]
            assert left == [], left
        finally:
            request.cancel()
            await proxy.set_mode(Mode.FORWARD)
