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
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        url = with_database(self.server_url, name)
        statements = list(ddl)
        if statements:
            conn = await asyncpg.connect(url)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()
        return url

    async def drop_all(self) -> None:
        """Drop every database this factory created."""
        conn = await asyncpg.connect(self.server_url)
        try:
            for name in reversed(self.created):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        self.created.clear()


@asynccontextmanager
async def json_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to `url` reading json/jsonb as the services' pools do."""
    conn = await asyncpg.connect(url)
    try:
        await use_json_codecs(conn)
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def open_emptied(url: str, *tables: str, max_size: int = 10) -> AsyncIterator[Database]:
    """An open pool over `url` with `tables` emptied first; closed when the block ends."""
    database = Database(PoolSettings(dsn=url, max_size=max_size))
    await database.open()
    try:
        if tables:
            async with database.connection() as conn:
                await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        yield database
    finally:
        await database.close()


async def truncate_all(url: str, *, keep: Set[str] = frozenset({"alembic_version"})) -> None:
    """Empty every table of the public schema except `keep`, so each test starts clean."""
    conn = await asyncpg.connect(url)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            if r["tablename"] not in keep
        ]
        if tables:
            quoted = ", ".join(f'"{t}"' for t in tables)
            await conn.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
