"""Fewer round trips through the idempotency store: a first effect in the claim's statement,
and the operation's outbox events in the completing statement (a real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.idempotency import (
    IDEMPOTENCY_DDL,
    ClaimWith,
    IdempotencyKeyInUse,
    IdempotencyScope,
    IdempotencyStore,
    Outcome,
    StoredResponse,
    request_fingerprint,
)
from bazaar.shared.outbox import OUTBOX_DDL, add_event, hold_events
from bazaar.shared.testing.postgres import DatabaseFactory, execute_within

SCOPE = IdempotencyScope(principal="alice", method="POST", route="/v1/widgets")
FINGERPRINT = request_fingerprint({"n": 1})
CREATED = StoredResponse(201, {"id": "w-1"}, {})
WAIT = 10.0

# The first effect: one `widget` row, written only when the key is newly claimed.
WIDGET_DDL = "CREATE TABLE widget (key text PRIMARY KEY, note text NOT NULL)"
INSERT_WIDGET_ON_CLAIM = """
INSERT INTO widget (key, note) SELECT $7::text, $8::text FROM claim
ON CONFLICT (key) DO NOTHING
RETURNING key, note
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    url = await database_factory.create("idemrt")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(IDEMPOTENCY_DDL)
        await conn.execute(WIDGET_DDL)
        for statement in OUTBOX_DDL:
            await conn.execute(statement)
    finally:
        await conn.close()
    return url


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(PoolSettings(dsn=database_url, max_size=5))
    await database.open()
    async with database.connection() as conn:
        await execute_within(conn, "TRUNCATE idempotency_key, widget, outbox", database_url)
    yield database
    await database.close()


@pytest.fixture
def store(db: Database) -> IdempotencyStore:
    return IdempotencyStore(db)


class Landed:
    """What the claim's statement handed back, call by call."""

    def __init__(self) -> None:
        self.rows: list[Mapping[str, Any] | None] = []

    def effect(self, key: str, note: str) -> ClaimWith:
        return ClaimWith(INSERT_WIDGET_ON_CLAIM, (key, note), self.rows.append)


async def widgets(db: Database) -> list[tuple[str, str]]:
    async with db.connection() as conn:
        return [tuple(r) for r in await conn.fetch("SELECT key, note FROM widget ORDER BY key")]


async def outbox_types(db: Database) -> list[str]:
    async with db.connection() as conn:
        return [r["type"] for r in await conn.fetch("SELECT type FROM outbox ORDER BY position")]


async def test_the_first_effect_is_written_by_the_claim_and_seen_before_prepare(
    db: Database, store: IdempotencyStore
) -> None:
    landed = Landed()
    seen_by_prepare: list[list[tuple[str, str]]] = []

    async def prepare() -> None:
        seen_by_prepare.append(await widgets(db))  # committed with the claim already

    async def operation(conn: Any) -> StoredResponse:
        return CREATED

    outcome = await store.run(
        key="k-1",
        scope=SCOPE,
        fingerprint=FINGERPRINT,
        operation=operation,
        prepare=prepare,
        claim_with=landed.effect("k-1", "first"),
    )

    assert outcome == Outcome(CREATED, replayed=False)
    assert seen_by_prepare == [[("k-1", "first")]]
    [row] = landed.rows
    assert row is not None and (row["key"], row["note"]) == ("k-1", "first")


async def test_a_replay_never_runs_the_first_effect(db: Database, store: IdempotencyStore) -> None:
    async def operation(conn: Any) -> StoredResponse:
        return CREATED

    first, again = Landed(), Landed()
    await store.run(
        key="k-1",
        scope=SCOPE,
        fingerprint=FINGERPRINT,
        operation=operation,
        claim_with=first.effect("k-1", "first"),
    )
    replay = await store.run(
        key="k-1",
        scope=SCOPE,
        fingerprint=FINGERPRINT,
        operation=operation,
        claim_with=again.effect("k-1", "second"),
    )

    assert replay.replayed
    assert again.rows == []
    assert await widgets(db) == [("k-1", "first")]


async def test_a_first_effect_that_writes_nothing_lands_as_none(
    db: Database, store: IdempotencyStore
) -> None:
    async with db.connection() as conn:  # an earlier attempt stored its widget, then let go
        await conn.execute("INSERT INTO widget (key, note) VALUES ('k-1', 'earlier')")
    landed = Landed()

    async def operation(conn: Any) -> StoredResponse:
        return CREATED

    await store.run(
        key="k-1",
        scope=SCOPE,
        fingerprint=FINGERPRINT,
        operation=operation,
        claim_with=landed.effect("k-1", "again"),
    )

    assert landed.rows == [None]
    assert await widgets(db) == [("k-1", "earlier")]


async def test_the_operations_events_are_held_back_and_written_by_the_completing_statement(
    db: Database, store: IdempotencyStore
) -> None:
    in_transaction: list[int] = []

    async def operation(conn: Any) -> StoredResponse:
        await add_event(conn, source="/t", type="test.widget.made", subject="w-1", data={"n": 1})
        await add_event(conn, source="/t", type="test.widget.sold", subject="w-1", data={"n": 2})
        # Held: not one INSERT per event, nothing in the outbox yet, even in this transaction.
        in_transaction.append(await conn.fetchval("SELECT count(*) FROM outbox"))
        return CREATED

    await store.run(key="k-1", scope=SCOPE, fingerprint=FINGERPRINT, operation=operation)

    assert in_transaction == [0]
    assert await outbox_types(db) == ["test.widget.made", "test.widget.sold"]
    async with db.connection() as conn:
        event = await conn.fetchval("SELECT event FROM outbox ORDER BY position LIMIT 1")
    assert (event["type"], event["subject"], event["data"]) == ("test.widget.made", "w-1", {"n": 1})


async def test_held_events_roll_back_with_a_claim_lost_to_a_takeover(
    db: Database, store: IdempotencyStore
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(conn: Any) -> StoredResponse:
        await add_event(conn, source="/t", type="test.widget.slow", subject="w-1", data={})
        started.set()
        await release.wait()
        return CREATED

    async def quick(conn: Any) -> StoredResponse:
        await add_event(conn, source="/t", type="test.widget.retry", subject="w-1", data={})
        return CREATED

    slow_task = asyncio.create_task(
        store.run(key="k-1", scope=SCOPE, fingerprint=FINGERPRINT, operation=slow)
    )
    async with asyncio.timeout(WAIT):
        await started.wait()
    async with db.connection() as conn:  # the slow worker looks crashed
        await conn.execute("UPDATE idempotency_key SET locked_at = now() - interval '2 minutes'")
    await store.run(key="k-1", scope=SCOPE, fingerprint=FINGERPRINT, operation=quick)
    release.set()
    with pytest.raises(IdempotencyKeyInUse):
        async with asyncio.timeout(WAIT):
            await slow_task

    assert await outbox_types(db) == ["test.widget.retry"]


async def test_events_added_outside_the_hold_or_on_another_connection_are_written_at_once(
    db: Database,
) -> None:
    async with db.transaction() as conn, db.transaction() as other:
        with hold_events(conn) as held:
            await add_event(other, source="/t", type="test.other", subject="s", data={})
            assert await other.fetchval("SELECT count(*) FROM outbox") == 1
        await add_event(conn, source="/t", type="test.after", subject="s", data={})
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1
        assert held.rows == []
