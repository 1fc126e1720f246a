"""The asyncpg pool: lifecycle, bounded acquire, and the transaction helper."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from bazaar.shared.problem import ServiceUnavailable


class DatabaseBusy(ServiceUnavailable):
    """No database connection could be had within the acquire timeout."""

    slug, title = "database-unavailable", "Database Unavailable"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Sizing and timeouts of one pool."""

    dsn: str
    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float = 5.0
    command_timeout: float = 30.0
    connect_timeout: float = 5.0


def rows_affected(status: str) -> int:
    """The row count of a command status such as `DELETE 42`."""
    return int(status.rsplit(" ", 1)[-1])


async def use_json_codecs(conn: asyncpg.Connection) -> None:
    """Read and write json/jsonb as Python values on this connection."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=json.dumps, decoder=json.loads
        )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Reset nothing beyond asyncpg's own roll-back of an open transaction.

    The default reset runs a round trip (UNLISTEN, RESET ALL, advisory unlock…) on every
    release. Our code takes no session-level locks (only `pg_advisory_xact_lock`), changes
    no session settings and LISTENs on connections of its own, outside the pool.
    """


class Database:
    """An asyncpg pool with bounded acquire: callers wait at most `acquire_timeout`."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Create the pool (idempotent)."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.settings.dsn,
                min_size=self.settings.min_size,
                max_size=self.settings.max_size,
                command_timeout=self.settings.command_timeout,
                timeout=self.settings.connect_timeout,
                init=use_json_codecs,
                reset=_keep_session,
            )

    async def close(self) -> None:
        """Close the pool, waiting for connections in use to come back."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        """The open pool; raises if `open()` was not called."""
        if self._pool is None:
            raise RuntimeError("Database.open() has not been called")
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Borrow a connection, or raise DatabaseBusy after the acquire timeout."""
        try:
            conn = await self.pool.acquire(timeout=self.settings.acquire_timeout)
        except (TimeoutError, OSError, asyncpg.PostgresConnectionError) as exc:
            raise DatabaseBusy("The database is not available right now.") from exc
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self, *, isolation: str = "read_committed") -> AsyncIterator[Any]:
        """Borrow a connection inside a transaction: commit on success, roll back on error."""
        async with self.connection() as conn, conn.transaction(isolation=isolation):
            yield conn

    async def ping(self) -> bool:
        """Answer whether the database answers `SELECT 1` within the acquire timeout."""
        try:
            async with asyncio.timeout(self.settings.acquire_timeout), self.connection() as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
        except Exception:
            return False
