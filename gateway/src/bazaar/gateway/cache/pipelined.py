"""Script calls to Redis, every call of an event-loop turn pipelined on one kept connection.

The cache asks Redis on every cacheable read, so it talks RESP on a pooled connection
itself, as the rate limiter does (see `bazaar.gateway.ratelimit.redis` for why: redis-py's
command layers cost several times the call): the calls of one loop turn are written at
once and their replies read in order, one round trip for all of them. A connection that
answered well is kept for the next batch (at most `MAX_IDLE_CONNECTIONS`); one that failed
mid-batch is closed and given back to the pool. A batch, connection wait included, takes
at most `timeout` seconds; its callers then get TimeoutError.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bazaar.gateway.cache.resp import NoScript, Reply, command, read_reply

#: Calls per pipelined batch at most, so one batch never holds Redis for long.
MAX_BATCH = 256
#: Pooled connections kept for the next batches at most.
MAX_IDLE_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and the name Redis gives it."""

    source: bytes

    @property
    def sha(self) -> bytes:
        """Its SHA1, for EVALSHA."""
        return hashlib.sha1(self.source).hexdigest().encode()


@dataclass(frozen=True, slots=True)
class _Call:
    script: Script
    keys: Sequence[bytes]
    args: Sequence[bytes]
    future: asyncio.Future[Reply]

    def evalsha(self) -> bytes:
        return command(b"EVALSHA", self.script.sha, b"%d" % len(self.keys), *self.keys, *self.args)

    def eval(self) -> bytes:
        return command(b"EVAL", self.script.source, b"%d" % len(self.keys), *self.keys, *self.args)


class PipelinedScripts:
    """Run scripts on a pool's connections (RESP2: see `connect_redis`), batched per turn."""

    def __init__(self, pool: ConnectionPool, *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._pending: list[_Call] = []
        self._idle: list[AbstractConnection] = []
        self._running: set[asyncio.Task[None]] = set()

    async def call(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> Reply:
        """The script's reply (Redis's errors raised as redis-py's exceptions)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after every call of this loop turn is queued
        self._pending.append(_Call(script, keys, args, future))
        return await future

    async def close(self) -> None:
        """Wait for the batches under way, then give the kept connections back."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._idle:
            await self._give_back(self._idle.pop(), healthy=True)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(pending), MAX_BATCH):
            task = loop.create_task(self._run(pending[start : start + MAX_BATCH]))
            self._running.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Call]) -> None:
        connection: AbstractConnection | None = None
        healthy = False  # whether the connection may serve the next batch
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._kept() or await self._connect()
                batch = [call for call in batch if not call.future.done()]  # callers gone
                if batch:
                    await _exchange(connection, batch)
            healthy = True
        except Exception as exc:  # every caller still waiting gets the failure
            _fail(batch, exc)
        except BaseException:  # cancelled (shutdown)
            _fail(batch, RedisConnectionError("the cache's Redis batch was cancelled"))
            raise
        finally:
            if connection is not None:
                if healthy and len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append(connection)
                else:
                    await asyncio.shield(self._give_back(connection, healthy))

    async def _kept(self) -> AbstractConnection | None:
        """A kept connection still open with nothing unread (others are closed and given
        back: Redis closed them meanwhile, or they hold bytes no call asked for)."""
        while self._idle:
            connection = self._idle.pop()
            reader = connection._reader
            if (
                reader is not None
                and not reader.at_eof()
                and reader.exception() is None
                and not reader._buffer  # type: ignore[attr-defined]
            ):
                return connection
            await asyncio.shield(self._give_back(connection, healthy=False))
        return None

    async def _connect(self) -> AbstractConnection:
        connection: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return connection

    async def _give_back(self, connection: AbstractConnection, healthy: bool) -> None:
        try:
            if not healthy:
                await connection.disconnect(nowait=True)
        finally:
            await self._pool.release(connection)


async def _exchange(connection: AbstractConnection, batch: list[_Call]) -> None:
    """Send every call at once, read the replies in order; resend by EVAL the scripts Redis
    did not know. Each caller gets its reply or its own Redis error."""
    reader, writer = connection._reader, connection._writer
    if reader is None or writer is None:
        raise RedisConnectionError("the pooled connection is closed")
    writer.write(b"".join(call.evalsha() for call in batch))
    await writer.drain()
    unknown: list[_Call] = []
    for call in batch:
        try:
            _settle(call, await read_reply(reader))
        except NoScript:
            unknown.append(call)
        except ResponseError as exc:  # this call's own error: the connection is fine
            _settle(call, exc)
    if unknown:
        writer.write(b"".join(call.eval() for call in unknown))
        await writer.drain()
        for call in unknown:
            try:
                _settle(call, await read_reply(reader))
            except ResponseError as exc:
                _settle(call, exc)


def _settle(call: _Call, outcome: Reply | Exception) -> None:
    if call.future.done():
        return
    if isinstance(outcome, Exception):
        call.future.set_exception(outcome)
    else:
        call.future.set_result(outcome)


def _fail(batch: list[_Call], exc: BaseException) -> None:
    for call in batch:
        if not call.future.done():
            call.future.set_exception(exc)
