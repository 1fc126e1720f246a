"""The asyncpg pool against a real PostgreSQL: transactions, bounded acquire, ping, jsonb,
and the pool's metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from bazaar.shared.db import Database, DatabaseBusy, PoolSettings
from bazaar.shared.dbadmin import ensure_database
from bazaar.shared.metrics import DatabasePoolCollector
from bazaar.shared.problem import ProblemError
from bazaar.shared.testing.amqp import eventually
from bazaar.shared.testing.infrastructure import Resolved
from bazaar.shared.testing.postgres import DatabaseFactory, execute_within, with_database

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
            await execute_within(conn, "TRUNCATE note, doc", database_url)
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
    assert busy.slug == "service-unavailable"  # API.md: one slug for any dependency down
    assert busy.headers["Retry-After"] == "1"


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


async def test_closing_cuts_a_connection_never_given_back_after_the_timeout(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(PoolSettings(dsn=database_url))
    await db.open()
    held = await db.pool.acquire()  # a task that never gives its connection back
    backend = await held.fetchval("SELECT pg_backend_pid()")
    started = time.monotonic()
    await db.close(wait_seconds=0.5)
    took = time.monotonic() - started

    assert 0.4 < took < 5
    assert "connections still in use" in caplog.text
    await backend_gone(database_url, backend)


async def test_closing_waits_for_a_connection_given_back_in_time(database_url: str) -> None:
    db = Database(PoolSettings(dsn=database_url))
    await db.open()
    held = await db.pool.acquire()
    backend = await held.fetchval("SELECT pg_backend_pid()")
    pool = db.pool

    async def give_back_soon() -> None:
        await asyncio.sleep(0.2)
        assert await held.fetchval("SELECT 1") == 1  # still usable while closing waits
        await pool.release(held)

    giving = asyncio.create_task(give_back_soon())
    await db.close(wait_seconds=5)
    assert giving.done() and giving.exception() is None
    await backend_gone(database_url, backend)


async def backend_gone(url: str, pid: int) -> None:
    """Wait (a few seconds at most) until the server has no backend of that pid."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(100):
            if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"backend {pid} still connected")
    finally:
        await conn.close()


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


# --- the pool's metrics (read when scraped) -----------------------------------------------


def _pool_metrics(db: Database) -> Callable[[], dict[str, float]]:
    """Scrape a registry holding only the pool's collector, as /metrics does."""
    registry = CollectorRegistry()
    registry.register(DatabasePoolCollector(db.stats))

    def scrape() -> dict[str, float]:
        values: dict[str, float] = {}
        for sample in (s for f in registry.collect() for s in f.samples):
            state = sample.labels.get("state")
            values[f"{sample.name}{'.' + state if state else ''}"] = sample.value
        return values

    return scrape


async def _until_waiting(scrape: Callable[[], dict[str, float]], callers: int) -> None:
    async def waiting() -> bool:
        return scrape()["bazaar_db_pool_waiting"] == callers

    await eventually(waiting, within=5, every=0.01)


async def test_the_pool_gauges_show_a_held_connection_and_a_caller_waiting_for_it(
    database_url: str,
) -> None:
    db = Database(PoolSettings(dsn=database_url, max_size=1, acquire_timeout=5.0))
    scrape = _pool_metrics(db)
    await db.open()
    try:
        at_rest = scrape()
        second_holds = asyncio.Event()
        async with db.connection():
            held = scrape()

            async def second() -> None:
                async with db.connection():
                    second_holds.set()

            task = asyncio.create_task(second())
            await _until_waiting(scrape, 1)
            waiting = scrape()
        await task
        after = scrape()
    finally:
        await db.close()

    assert second_holds.is_set()
    assert at_rest == {
        "bazaar_db_pool_connections.in_use": 0,
        "bazaar_db_pool_connections.idle": 1,
        "bazaar_db_pool_max_connections": 1,
        "bazaar_db_pool_waiting": 0,
        "bazaar_db_pool_acquire_timeouts_total": 0,
    }
    assert held["bazaar_db_pool_connections.in_use"] == 1
    assert held["bazaar_db_pool_connections.idle"] == 0
    assert held["bazaar_db_pool_waiting"] == 0
    assert waiting["bazaar_db_pool_connections.in_use"] == 1
    assert waiting["bazaar_db_pool_waiting"] == 1
    assert after == at_rest


async def test_an_acquire_that_gives_up_is_counted_and_waits_no_more(database_url: str) -> None:
    db = Database(PoolSettings(dsn=database_url, max_size=1, acquire_timeout=ACQUIRE_TIMEOUT))
    scrape = _pool_metrics(db)
    await db.open()
    try:
        async with db.connection():

            async def second() -> None:
                with pytest.raises(DatabaseBusy):
                    async with db.connection():
                        pytest.fail("a second connection was handed out")

            task = asyncio.create_task(second())
            await _until_waiting(scrape, 1)
            await task
            gave_up = scrape()
    finally:
        await db.close()

    assert gave_up["bazaar_db_pool_acquire_timeouts_total"] == 1
    assert gave_up["bazaar_db_pool_waiting"] == 0


async def test_callers_waiting_on_a_database_that_does_not_answer_are_no_pool_exhaustion() -> None:
    # A database that accepts TCP and never answers (a partition, a frozen server): callers
    # wait for a connection to be made, not for one to be freed. The pool-exhaustion
    # gauges (which page "DB_POOL_MAX too small") must stay at 0; the callers get 503s.
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    db = Database(
        PoolSettings(
            dsn=f"postgresql://nobody@127.0.0.1:{port}/none",
            min_size=0,
            max_size=10,
            acquire_timeout=ACQUIRE_TIMEOUT,
            connect_timeout=5.0,
        )
    )
    scrape = _pool_metrics(db)
    await db.open()
    try:

        async def caller() -> None:
            with pytest.raises(DatabaseBusy):
                async with db.connection():
                    pytest.fail("a connection was handed out")

        callers = [asyncio.create_task(caller()) for _ in range(3)]
        await asyncio.sleep(ACQUIRE_TIMEOUT / 2)
        meanwhile = scrape()
        await asyncio.gather(*callers)
        after = scrape()
    finally:
        await db.close()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()

    assert meanwhile["bazaar_db_pool_waiting"] == 0
    assert after["bazaar_db_pool_acquire_timeouts_total"] == 0


async def test_the_pool_gauges_still_show_borrowed_connections_while_the_pool_closes(
    database_url: str,
) -> None:
    db = Database(PoolSettings(dsn=database_url, max_size=2))
    scrape = _pool_metrics(db)
    await db.open()
    release = asyncio.Event()
    borrowed = asyncio.Event()

    async def holder() -> None:
        async with db.connection():
            borrowed.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.wait_for(borrowed.wait(), 30)
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0.2)
    while_closing = scrape()
    release.set()
    await task
    await closing
    closed = scrape()

    assert while_closing["bazaar_db_pool_connections.in_use"] == 1
    assert closed["bazaar_db_pool_connections.in_use"] == 0
