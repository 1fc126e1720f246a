"""Per-run PostgreSQL databases: created fresh for a test run, dropped when it ends."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Set
from contextlib import AbstractContextManager, asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bazaar.shared.db import Database, PoolSettings, use_json_codecs
from bazaar.shared.testing.infrastructure import Resolved, resolve

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
_SAFE_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


#: The image a run starts when no PostgreSQL answers (testcontainers fallback).
POSTGRES_IMAGE = "postgres:16-alpine"


def _start_postgres_container() -> tuple[str, AbstractContextManager[object]]:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(POSTGRES_IMAGE, driver=None)
    container.__enter__()
    return container.get_connection_url(), container


def resolve_postgres() -> Resolved:
    """The PostgreSQL server of this run (see `resolve`)."""
    return resolve(
        env_var="BAZAAR_TEST_DATABASE_URL",
        local_default=LOCAL_POSTGRES,
        start_container=_start_postgres_container,
        what="PostgreSQL",
    )


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


#: How long a statement of the toolkit (DROP DATABASE, TRUNCATE) may wait, e.g. for a lock
#: that a connection left open by a test holds; it then fails naming the sessions in the way.
STATEMENT_SECONDS = 60
#: How long opening (or closing) a connection may take.
CONNECT_SECONDS = 30

_SESSIONS = """
SELECT pid, state, wait_event_type, now() - xact_start AS in_transaction_for,
       left(query, 160) AS query
FROM pg_stat_activity
WHERE datname = $1 AND pid <> pg_backend_pid()
ORDER BY xact_start NULLS LAST
LIMIT 20
"""


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=CONNECT_SECONDS)


async def _sessions(server_url: str, database: str) -> str:
    """The other sessions on `database`, described for an error message."""
    try:
        conn = await _connect(server_url)
        try:
            rows = await conn.fetch(_SESSIONS, database, timeout=10)
        finally:
            await conn.close(timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"(could not list its sessions: {exc!r})"
    return "; ".join(str(dict(row)) for row in rows) or "(no other session)"


async def execute_within(
    conn: asyncpg.Connection, statement: str, url: str, seconds: float = STATEMENT_SECONDS
) -> None:
    """Run `statement` on `conn` (connected to `url`); past `seconds` (a lock held by a
    connection a test left open, say), fail naming the other sessions on that database."""
    try:
        await conn.execute(statement, timeout=seconds)
    except TimeoutError:
        database = urlsplit(url).path.lstrip("/") or "postgres"
        sessions = await _sessions(with_database(url, "postgres"), database)
        raise TimeoutError(
            f"{statement[:120]!r} did not finish within {seconds:.0f} s; "
            f"the other sessions on {database}: {sessions}"
        ) from None


class DatabaseFactory:
    """Creates databases named after the run and drops them all at the end."""

    def __init__(self, server_url: str, run_id: str) -> None:
        self.server_url = server_url
        self.run_id = run_id
        self.created: list[str] = []

    async def create(self, label: str, *, ddl: Iterable[str] = ()) -> str:
        """Create a database for `label`, run `ddl` in it, and return its URL."""
        name = f"bazaar_test_{self.run_id}_{label}"
        if not _SAFE_NAME.match(name):
            raise ValueError(f"unsafe database name {name!r}")
        conn = await _connect(self.server_url)
        try:
            drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            await execute_within(conn, drop, with_database(self.server_url, name))
            create = f'CREATE DATABASE "{name}"'
            await execute_within(conn, create, with_database(self.server_url, "template1"))
        finally:
            await conn.close(timeout=CONNECT_SECONDS)
        self.created.append(name)
        url = with_database(self.server_url, name)
        statements = list(ddl)
        if statements:
            conn = await _connect(url)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close(timeout=CONNECT_SECONDS)
        return url

    async def drop_all(self) -> None:
        """Drop every database this factory created."""
        conn = await _connect(self.server_url)
        try:
            for name in reversed(self.created):
                drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                await execute_within(conn, drop, with_database(self.server_url, name))
        finally:
            await conn.close(timeout=CONNECT_SECONDS)
        self.created.clear()


@asynccontextmanager
async def json_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to `url` reading json/jsonb as the services' pools do."""
    conn = await _connect(url)
    try:
        await use_json_codecs(conn)
        yield conn
    finally:
        await conn.close(timeout=CONNECT_SECONDS)


@asynccontextmanager
async def open_emptied(url: str, *tables: str, max_size: int = 10) -> AsyncIterator[Database]:
    """An open pool over `url` with `tables` emptied first; closed when the block ends."""
    database = Database(PoolSettings(dsn=url, max_size=max_size))
    await database.open()
    try:
        if tables:
            async with database.connection() as conn:
                truncate = f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"
                await execute_within(conn, truncate, url)
        yield database
    finally:
        await database.close()


async def truncate_all(url: str, *, keep: Set[str] = frozenset({"alembic_version"})) -> None:
    """Empty every table of the public schema except `keep`, so each test starts clean."""
    conn = await _connect(url)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            if r["tablename"] not in keep
        ]
        if tables:
            quoted = ", ".join(f'"{t}"' for t in tables)
            truncate = f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"
            await execute_within(conn, truncate, url)
    finally:
        await conn.close(timeout=CONNECT_SECONDS)


async def empty_tables(
    conn: asyncpg.Connection,
    url: str,
    *,
    keep: Set[str] = frozenset({"alembic_version"}),
    seconds: float = STATEMENT_SECONDS,
) -> None:
    """Delete every row of the public schema's tables but `keep`'s, foreign keys aside, on
    `conn` (connected to `url`): what truncate_all does, ten times faster between tests.

    TRUNCATE recreates each table's files and costs a fsync per table: 0.2-0.5 s a database,
    for every test. DELETE of a few rows in one transaction takes milliseconds. Bounded like
    execute_within: a row lock held by a connection an earlier test left open fails here,
    naming that session, instead of waiting for ever.
    """
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    tables = [row["tablename"] for row in rows if row["tablename"] not in keep]
    if not tables:
        return
    # The names come from pg_tables, never from input.
    statements = "".join(f'DELETE FROM "{table}";' for table in tables)  # noqa: S608
    async with conn.transaction():
        await execute_within(
            conn, "SET LOCAL session_replication_role = replica;" + statements, url, seconds
        )
