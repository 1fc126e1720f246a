"""The asyncpg pool against a real PostgreSQL: transactions, bounded acquire, ping, jsonb."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from bazaar.shared.db import Database, DatabaseBusy, PoolSettings
from bazaar.shared.dbadmin import ensure_database
from bazaar.shared.problem import ProblemError
from bazaar.shared.testing.infrastructure import Resolved
from bazaar.shared.testing.postgres import DatabaseFactory, with_database

ACQUIRE_TIMEOUT = 0.2
#: Nothing listens on port 1: connecting is refused at once.
UNREACHABLE_URL = "postgresql://postgres:pw@127.0.0.1:1/nowhere"


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    url = await database_factory.create("db")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE note (id int PRIMARY KEY, body text NOT NULL)")
        await conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body jsonb, raw json)")
    finally:
        await conn.close()
    return url


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(PoolSettings(dsn=database_url, max_size=2, acquire_timeout=2.0))
    await database.open()
    try:
        async with database.connection() as conn:
            await conn.execute("TRUNCATE note, doc")
        yield database
    finally:
        await database.close()


async def test_a_transaction_commits_when_its_block_succeeds(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO note VALUES (1, 'kept')")

    async with db.connection() as conn:
        assert await conn.fetchval("SELECT body FROM note WHERE id = 1") == "kept"


async def test_a_transaction_rolls_back_when_its_block_raises(db: Database) -> None:
    with pytest.raises(Boom):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO note VALUES (2, 'lost')")
            raise Boom

    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM note") == 0


async def test_a_transaction_uses_the_isolation_level_asked_for(db: Database) -> None:
    async with db.transaction() as conn:
        assert await conn.fetchval("SHOW transaction_isolation") == "read committed"
    async with db.transaction(isolation="serializable") as conn:
        assert await conn.fetchval("SHOW transaction_isolation") == "serializable"


async def test_a_connection_goes_back_to_the_pool_even_when_the_block_raises(
    database_url: str,
) -> None:
    db = Database(PoolSettings(dsn=database_url, max_size=1, acquire_timeout=ACQUIRE_TIMEOUT))
    await db.open()
    try:
        with pytest.raises(Boom):
            async with db.transaction():
                raise Boom
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def test_an_exhausted_pool_raises_database_busy_after_the_acquire_timeout(
    database_url: str,
) -> None:
    db = Database(PoolSettings(dsn=database_url, max_size=1, acquire_timeout=ACQUIRE_TIMEOUT))
    await db.open()
    try:
        async with db.connection():
            started = time.monotonic()
            with pytest.raises(DatabaseBusy) as excinfo:
                async with db.connection():
                    pytest.fail("a second connection was handed out")
            waited = time.monotonic() - started
    finally:
        await db.close()

    assert ACQUIRE_TIMEOUT * 0.9 <= waited < ACQUIRE_TIMEOUT + 2.0
    busy = excinfo.value
    assert isinstance(busy, ProblemError)
    assert busy.status == 503
    assert busy.slug == "database-unavailable"


async def test_an_unreachable_database_raises_database_busy() -> None:
    db = Database(PoolSettings(dsn=UNREACHABLE_URL, min_size=0, acquire_timeout=1.0))
    await db.open()
    try:
        with pytest.raises(DatabaseBusy) as excinfo:
            async with db.connection():
                pytest.fail("a connection was handed out")
    finally:
        await db.close()

    assert excinfo.value.status == 503
    assert "127.0.0.1" not in str(excinfo.value.detail)


async def test_ping_answers_true_when_the_database_answers(db: Database) -> None:
    assert await db.ping() is True


async def test_ping_answers_false_when_the_database_is_unreachable() -> None:
    db = Database(PoolSettings(dsn=UNREACHABLE_URL, min_size=0, acquire_timeout=1.0))
    await db.open()
    try:
        assert await db.ping() is False
    finally:
        await db.close()


async def test_ping_answers_false_promptly_when_the_pool_is_exhausted(database_url: str) -> None:
    db = Database(PoolSettings(dsn=database_url, max_size=1, acquire_timeout=ACQUIRE_TIMEOUT))
    await db.open()
    try:
        async with db.connection():
            started = time.monotonic()
            assert await db.ping() is False
            assert time.monotonic() - started < ACQUIRE_TIMEOUT + 2.0
    finally:
        await db.close()


async def test_ping_answers_false_once_the_pool_is_closed(database_url: str) -> None:
    db = Database(PoolSettings(dsn=database_url))
    await db.open()
    await db.close()

    assert await db.ping() is False


async def test_jsonb_and_json_round_trip_as_python_objects(db: Database) -> None:
    body = {"name": "Widget", "tags": ["a", "b"], "price_cents": 1999, "nested": {"ok": True}}

    async with db.transaction() as conn:
        await conn.execute("INSERT INTO doc VALUES (1, $1, $2)", body, [1, None, "x"])
        row = await conn.fetchrow("SELECT body, raw, body->'nested' AS nested FROM doc")

    assert row["body"] == body
    assert row["raw"] == [1, None, "x"]
    assert row["nested"] == {"ok": True}


async def test_ensure_database_creates_a_missing_database_once(
    postgres_server: Resolved, test_run_id: str
) -> None:
    name = f"bazaar_test_{test_run_id}_ensure"
    url = with_database(postgres_server.url, name)
    try:
        assert await ensure_database(url) is True
        assert await ensure_database(url) is False
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(postgres_server.url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_ensure_database_refuses_a_url_without_a_database_name(
    postgres_server: Resolved,
) -> None:
    with pytest.raises(ValueError, match="names no database"):
        await ensure_database(with_database(postgres_server.url, ""))


async def test_concurrent_callers_share_a_bounded_pool(database_url: str) -> None:
    db = Database(PoolSettings(dsn=database_url, max_size=2, acquire_timeout=5.0))
    await db.open()
    try:

        async def backend_pid() -> int:
            async with db.connection() as conn:
                pid: int = await conn.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
                return pid

        pids = await asyncio.gather(*(backend_pid() for _ in range(6)))
    finally:
        await db.close()

    assert len(set(pids)) <= 2
