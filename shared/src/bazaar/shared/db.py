"""The asyncpg pool: lifecycle, bounded acquire, and the transaction helper."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from bazaar.shared.dbfailure import DatabaseBusy, is_unavailable

__all__ = [
    "Database",
    "DatabaseBusy",
    "PoolSettings",
    "PoolStats",
    "rows_affected",
    "use_json_codecs",
]

log = logging.getLogger("bazaar.db")

#: How long closing a pool waits for borrowed connections before cutting them.
CLOSE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Sizing and timeouts of one pool."""

    dsn: str
    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float = 5.0
    command_timeout: float = 30.0
    connect_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class PoolStats:
    """What a pool is doing now (read when metrics are scraped)."""

    in_use: int
    idle: int
    max_size: int
    #: Callers waiting for a connection now.
    waiting: int
    #: Acquires that gave up since the pool was built (each answered 503).
    acquire_timeouts: int


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
        # The pool being closed: its stats are still read until `close()` returns.
        self._closing: asyncpg.Pool | None = None
        # Plain ints, kept by `connection` (no lock, no label lookup per acquire).
        self._waiting = 0
        self._acquire_timeouts = 0

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

    async def close(self, wait_seconds: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Close the pool, waiting up to `wait_seconds` for connections in use to come back.

        A connection still held after that (a task that never ends) is cut, so a shutdown
        always finishes.
        """
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self._closing = pool
            try:
                async with asyncio.timeout(wait_seconds):
                    await pool.close()
            except TimeoutError:
                log.warning(
                    "database pool: connections still in use %.0f s after closing began; "
                    "cutting them",
                    wait_seconds,
                )
                pool.terminate()
            finally:
                self._closing = None

    @property
    def pool(self) -> asyncpg.Pool:
        """The open pool; raises if `open()` was not called."""
        if self._pool is None:
            raise RuntimeError("Database.open() has not been called")
        return self._pool

    def stats(self) -> PoolStats:
        """The pool's connections in use and idle, its size, waiters and acquire timeouts.

        `waiting` counts callers only while the pool is exhausted (every connection in use
        at its maximum size): a caller waiting for a new connection to be made waits on the
        database, not on the pool, and a database that does not answer is an outage, not a
        pool too small.
        """
        pool = self._pool or self._closing
        size = idle = 0
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
        return PoolStats(
            in_use=size - idle,
            idle=idle,
            max_size=self.settings.max_size,
            waiting=self._waiting if self._exhausted(pool) else 0,
            acquire_timeouts=self._acquire_timeouts,
        )

    def _exhausted(self, pool: asyncpg.Pool | None) -> bool:
        """Whether every connection the pool may have is made and borrowed."""
        return (
            pool is not None
            and pool.get_size() >= self.settings.max_size
            and pool.get_idle_size() == 0
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Borrow a connection, or raise DatabaseBusy if none can be had (timeout, outage)."""
        pool = self.pool
        self._waiting += 1
        try:
            conn = await pool.acquire(timeout=self.settings.acquire_timeout)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and self._exhausted(pool):
                # Gave up with every connection borrowed: the pool is too small (or its
                # holders too slow). A connection that could not be made in time is an
                # outage of the database instead, and not counted here.
                self._acquire_timeouts += 1
            # Refused, reset, "starting up" (57P03), too many connections (53300), timed out.
            if is_unavailable(exc):
                raise DatabaseBusy() from exc
            raise
        finally:
            self._waiting -= 1
        try:
            yield conn
        except asyncpg.InternalClientError:
            # The protocol state is broken on a connection still open: never hand it out
            # again. Anything else (a lost socket, a statement or command timeout, another
            # call's error) leaves the pool to judge it: asyncpg discards closed connections
            # and cancels a timed-out command, so a healthy one is kept (no reconnect per
            # timeout under load).
            if not conn.is_closed():
                conn.terminate()
            raise
        finally:
            await _release(pool, conn)

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


async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Give a connection back; one whose reset fails is terminated by asyncpg, not reused."""
    try:
        await pool.release(conn)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # asyncpg has terminated it already; the caller's own error (if any) is the story.
        log.warning("a broken database connection was discarded (%s)", type(exc).__name__)
