"""Idempotency keys across a database outage: a key whose request failed is free again
within a few seconds of the database coming back, on any replica.

Replica A reaches PostgreSQL through a chaos proxy and loses it mid-request, so giving its
claims back fails; replica B (another store on the same database) serves the retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.dbfailure import is_unavailable
from bazaar.shared.idempotency import (
    IDEMPOTENCY_DDL,
    IdempotencyKeyInUse,
    IdempotencyScope,
    IdempotencyStore,
    Outcome,
    StoredResponse,
    request_fingerprint,
)
from bazaar.shared.testing.chaos import ChaosProxy, Mode, chaos_proxy
from bazaar.shared.testing.postgres import DatabaseFactory, execute_within

SCOPE = IdempotencyScope(principal="alice", method="POST", route="/v1/orders")
FINGERPRINT = request_fingerprint({"lines": [{"product_id": "p-1", "quantity": 1}]})
CREATED = StoredResponse(201, {"status": "confirmed"}, {})
KEYS = [f"outage-key-{n}" for n in range(8)]
#: "Retriable within a few seconds of the database coming back."
BUDGET = 3.0
OUTAGE = 1.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create(
        "idem_outage",
        ddl=[IDEMPOTENCY_DDL, "CREATE TABLE effect (id bigserial PRIMARY KEY, note text)"],
    )


@pytest_asyncio.fixture
async def proxy(database_url: str) -> AsyncIterator[ChaosProxy]:
    parts = urlsplit(database_url)
    async with chaos_proxy(f"http://{parts.hostname}:{parts.port or 5432}") as chaos:
        yield chaos


async def open_database(url: str) -> Database:
    db = Database(PoolSettings(dsn=url, min_size=1, max_size=12, acquire_timeout=1.0))
    await db.open()
    return db


def through(url: str, proxy: ChaosProxy) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{proxy.port}" if auth else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_keys_whose_requests_failed_in_an_outage_are_retriable_within_3_s_of_its_end(
    database_url: str, proxy: ChaosProxy
) -> None:
    db_a = await open_database(through(database_url, proxy))
    db_b = await open_database(database_url)
    replica_a, replica_b = IdempotencyStore(db_a), IdempotencyStore(db_b)
    try:
        async with db_b.connection() as conn:
            await execute_within(conn, "TRUNCATE idempotency_key, effect", database_url)
        inside = asyncio.Barrier(len(KEYS) + 1)
        cut = asyncio.Event()

        async def doomed(conn: Any) -> StoredResponse:
            await conn.execute("INSERT INTO effect (note) VALUES ('first try')")
            await inside.wait()
            await cut.wait()
            await conn.execute("SELECT 1")  # the database is gone by now
            return CREATED

        attempts = [
            asyncio.create_task(
                replica_a.run(key=key, scope=SCOPE, fingerprint=FINGERPRINT, operation=doomed)
            )
            for key in KEYS
        ]
        async with asyncio.timeout(10):
            await inside.wait()
        await proxy.set_mode(Mode.REFUSE)  # cuts every open connection, refuses new ones
        cut.set()
        failures = await asyncio.gather(*attempts, return_exceptions=True)
        await asyncio.sleep(OUTAGE)
        await proxy.set_mode(Mode.FORWARD)
        back_at = time.monotonic()

        async def retried(key: str) -> tuple[Outcome, float, int]:
            refused = 0
            while True:
                try:
                    outcome = await replica_b.run(
                        key=key, scope=SCOPE, fingerprint=FINGERPRINT, operation=succeeds
                    )
                    return outcome, time.monotonic() - back_at, refused
                except IdempotencyKeyInUse:
                    refused += 1
                    if time.monotonic() - back_at > BUDGET:
                        raise
                    await asyncio.sleep(0.1)

        async def succeeds(conn: Any) -> StoredResponse:
            await conn.execute("INSERT INTO effect (note) VALUES ('retry')")
            return CREATED

        results = await asyncio.gather(*(retried(key) for key in KEYS))
        async with db_b.connection() as conn:
            notes = [r["note"] for r in await conn.fetch("SELECT note FROM effect ORDER BY id")]
    finally:
        await replica_a.drain()
        await db_a.close()
        await db_b.close()

    assert all(isinstance(f, Exception) and is_unavailable(f) for f in failures), failures
    for outcome, took, _refused in results:
        assert outcome == Outcome(CREATED, replayed=False)
        assert took < BUDGET
    assert notes == ["retry"] * len(KEYS)  # each key's effect once: the first tries rolled back


async def test_a_claim_given_back_late_is_not_given_back_twice_over_a_new_owner(
    database_url: str,
) -> None:
    """A release that lands after a takeover must not delete the new owner's claim."""
    db = await open_database(database_url)
    store = IdempotencyStore(db)
    try:
        async with db.connection() as conn:
            await execute_within(conn, "TRUNCATE idempotency_key, effect", database_url)
            old_id = await conn.fetchval(
                "INSERT INTO idempotency_key (principal, method, route, key, fingerprint,"
                " status, locked_at, expires_at) VALUES ($1, $2, $3, 'k', $4, 'in_flight',"
                " now() - interval '1 hour', now() + interval '1 day') RETURNING id",
                SCOPE.principal,
                SCOPE.method,
                SCOPE.route,
                FINGERPRINT,
            )
        gate = asyncio.Event()
        started = asyncio.Event()

        async def slow(conn: Any) -> StoredResponse:
            started.set()
            await gate.wait()
            return CREATED

        owner = asyncio.create_task(
            store.run(key="k", scope=SCOPE, fingerprint=FINGERPRINT, operation=slow)
        )
        async with asyncio.timeout(10):
            await started.wait()
        async with db.connection() as conn:  # the crashed worker's release lands now
            deleted = await conn.execute(
                "DELETE FROM idempotency_key WHERE id = $1 AND status = 'in_flight'", old_id
            )
        with pytest.raises(IdempotencyKeyInUse):  # the new owner still holds the key
            await store.run(key="k", scope=SCOPE, fingerprint=FINGERPRINT, operation=slow)
        gate.set()
        outcome = await owner
    finally:
        await store.drain()
        await db.close()

    assert deleted == "DELETE 0"
    assert outcome == Outcome(CREATED, replayed=False)
