"""Fixed-window counters in Redis, shared by every gateway replica.

One Lua script decides a request: it reads the Redis server's clock (`TIME`), so replicas
with skewed clocks still agree on the window, and for each check it INCRs
`<prefix><policy>:<key>:<window start>` and sets the counter to expire one second after its
window ends. Scripts run atomically, so concurrent replicas can never overshoot a quota.
The script builds its counter names from the names it is given plus the window start, and
one call mixes many clients' keys, so it needs a standalone Redis, not a cluster (the
deployment runs one Redis by design); Redis >= 5 replicates the script's effects, which
`TIME` requires.

Decisions arriving in the same event-loop turn share one script call: their checks are
concatenated in arrival order, and since the script INCRs them one after another each
decision still gets its own exact count. Under load this is one round trip (and one
connection) per loop turn instead of one per request. A batch waits for a pooled
connection no longer than its callers wait for it, and sends only the decisions whose
callers still wait: a caller that fell back has counted elsewhere already.

The script call is the gateway's hottest Redis path, so it is written and read here, on a
connection of the client's pool, instead of through redis-py's command layers (a
connection-bound client, retries, a task per socket timeout, observability hooks, the
pool's lock and checks for every call: ~150 µs of CPU per call, ~20 µs this way). A
connection that answered well is kept for the next batch (at most `MAX_IDLE_CONNECTIONS`,
within the pool's `max_connections`); one that failed mid-call (timeout, reset, an answer
that is not the script's) is closed and given back to the pool. The call is bounded by the
connection's `socket_timeout`, as redis-py bounds its own calls (by `DEFAULT_CALL_TIMEOUT`
on a connection without one). The redis-py internals
this uses (a connection's `_reader`/`_writer`, the pool's `get_connection()`, `release`,
`disconnect(nowait=True)`) are pinned by `redis>=8.1,<8.2` and each is asserted by
`tests/test_gateway_redis_internals.py`, so an upgrade that moves one fails there.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.maint_notifications import MaintNotificationsConfig

from bazaar.gateway.ratelimit.key import safe_key
from bazaar.gateway.ratelimit.policy import Decision, Policy, Verdict

# KEYS[i]: counter name without the window start; ARGV[i]: that policy's window in seconds.
# Returns, per check, the count including this request and the seconds left in the window,
# as one string of space-separated integers (one bulk reply: cheaper to read than an array).
_HIT = """
local now = tonumber(redis.call('TIME')[1])
local answer = {}
for i, base in ipairs(KEYS) do
  local window = tonumber(ARGV[i])
  local start = now - now % window
  local counter = base .. ':' .. start
  local count = redis.call('INCR', counter)
  if count == 1 then
    redis.call('EXPIREAT', counter, start + window + 1)
  end
  answer[2 * i - 1] = count
  answer[2 * i] = start + window - now
end
return table.concat(answer, ' ')
"""
_HIT_BYTES = _HIT.encode()
_HIT_SHA = hashlib.sha1(_HIT_BYTES).hexdigest().encode()  # the name Redis gives it

#: Checks per script call at most, so one batch never holds Redis for long.
MAX_BATCH_CHECKS = 512

#: Pooled connections kept for the next batches at most.
MAX_IDLE_CONNECTIONS = 32

#: Seconds a script call may take on a connection made with `socket_timeout=None`
#: (`connect_redis` always sets one; this is redis-py's default): a hung call must end
#: and free its connection.
DEFAULT_CALL_TIMEOUT = 5.0

#: A decision's checks, its caller's future and the loop time its caller gives up (or None).
_Pending = tuple[Sequence[tuple[Policy, str]], "asyncio.Future[Verdict]", float | None]


def connect_redis(url: str, *, max_connections: int, pool_timeout: float) -> redis.asyncio.Redis:
    """Return a client whose pool waits up to `pool_timeout` for a free connection."""
    # The default pool raises MaxConnectionsError at once when all are busy: a burst
    # would then fall back to per-replica counting although Redis is healthy. A batch
    # outlives the callers that gave up on it, so the socket timeout ends a hung call and
    # frees its connection instead of leaving it to a hanging Redis forever.
    # RESP2, and no maintenance notifications (which need RESP3): the script call reads
    # its answer itself and knows RESP2's answers only. redis-py 8 defaults to RESP3
    # (`HELLO 3`), where Redis may push a frame (`>...`) onto a connection at any time.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=pool_timeout,
        socket_connect_timeout=pool_timeout,
        protocol=2,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )
    if pool.connection_kwargs.get("protocol") != 2:  # the URL's query wins over arguments
        raise ValueError("the rate limiter speaks RESP2: the Redis URL must not set protocol")
    return redis.asyncio.Redis.from_pool(pool)  # closing the client closes the pool


class RedisRateLimiter:
    """Count requests per (policy, key) in Redis, one script call per loop turn's decisions.

    `client` comes from `connect_redis`: its connections speak RESP2, which the call reads.
    """

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str) -> None:
        self._prefix = prefix
        self._pool = client.connection_pool
        self._pending: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()
        # Connections taken from the pool that answered well, kept for the next batches:
        # taking one from the pool and giving it back costs more than the call it makes.
        self._idle: list[AbstractConnection] = []

    def counter_name(self, policy: Policy, key: str) -> str:
        """Return the counter's name without its window start (the script appends it)."""
        return f"{self._prefix}{policy.name}:{safe_key(key)}"

    async def hit(
        self, checks: Sequence[tuple[Policy, str]], *, deadline: float | None = None
    ) -> Verdict:
        """Count one request against every (policy, key); `deadline` is when the caller gives up."""
        if not checks:
            return Verdict([])
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Verdict] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after every decision of this loop turn is queued
        self._pending.append((checks, future, deadline))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        batch: list[_Pending] = []
        size = 0
        for item in pending:
            if batch and size + len(item[0]) > MAX_BATCH_CHECKS:
                self._send(batch)
                batch, size = [], 0
            batch.append(item)
            size += len(item[0])
        self._send(batch)

    def _send(self, batch: list[_Pending]) -> None:
        task = asyncio.get_running_loop().create_task(self._decide(batch))
        self._sending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)

    async def _decide(self, batch: list[_Pending]) -> None:
        deadlines = [deadline for _, _, deadline in batch if deadline is not None]
        connection: AbstractConnection | None = None
        healthy = False  # whether the connection may serve the next batch
        try:
            connection = await self._kept()
            if connection is None:
                # The batch task starts a loop turn after its callers' timers: waiting for
                # a connection past the oldest caller's deadline would send decisions that
                # caller has already counted in memory.
                async with asyncio.timeout_at(min(deadlines, default=None)):
                    connection = await self._connect()
            healthy = True
            now = asyncio.get_running_loop().time()
            late = [item for item in batch if item[2] is not None and item[2] <= now]
            _fail(late, TimeoutError())  # its caller's own timer fires in this very turn
            batch = [item for item in batch if not item[1].done()]
            if batch:
                healthy = False  # until the answer has been read whole
                keys = [
                    self.counter_name(p, k).encode() for checks, _, _ in batch for p, k in checks
                ]
                args = [b"%d" % p.window for checks, _, _ in batch for p, _ in checks]
                bound = connection.socket_timeout
                async with asyncio.timeout(DEFAULT_CALL_TIMEOUT if bound is None else bound):
                    answer = await _call(connection, keys, args)
                healthy = True
                # The callers have their verdicts before the connection goes back.
                for (_, future, _), verdict in zip(batch, _verdicts(batch, answer), strict=True):
                    if not future.done():  # a caller that gave up still counted, as one request
                        future.set_result(verdict)
        except ResponseError as exc:  # Redis refused the call: the connection is fine
            healthy = True
            _fail(batch, exc)
            return
        except Exception as exc:  # each waiting decision gets the failure
            _fail(batch, _redis_error(exc))
            return
        except BaseException:  # cancelled (shutdown): waiters get an error they handle
            _fail(batch, RedisConnectionError("the rate-limit batch was cancelled"))
            raise
        finally:
            if connection is not None:
                if healthy and len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append(connection)  # kept for the next batch
                else:
                    await asyncio.shield(self._give_back(connection, healthy))

    async def _kept(self) -> AbstractConnection | None:
        """A kept connection still open with nothing unread; those Redis closed meanwhile
        (a restart, a timeout of its own) or that hold bytes no call asked for are given
        back to the pool, closed (it reconnects them)."""
        while self._idle:
            connection = self._idle.pop()
            reader = connection._reader
            if (
                reader is not None
                and not reader.at_eof()
                and reader.exception() is None
                and not reader._buffer  # type: ignore[attr-defined]  # nothing unasked-for
            ):
                return connection
            await asyncio.shield(self._give_back(connection, healthy=False))
        return None

    async def _connect(self) -> AbstractConnection:
        """A connected connection from the pool (waiting for a free one as the pool does)."""
        connection: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return connection

    async def _give_back(self, connection: AbstractConnection, healthy: bool) -> None:
        """Give a connection back to the pool, closed first if it failed mid-call (its
        answer may still come)."""
        try:
            if not healthy:
                await connection.disconnect(nowait=True)
        finally:
            await self._pool.release(connection)


def _command(*words: bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


class _NoScript(Exception):
    """Redis does not know the script (restarted, or SCRIPT FLUSH): send it whole."""


async def _call(connection: AbstractConnection, keys: list[bytes], args: list[bytes]) -> bytes:
    """Run the script on the connection (EVALSHA, else EVAL) and return its answer."""
    reader, writer = connection._reader, connection._writer
    if reader is None or writer is None:
        raise RedisConnectionError("the pooled connection is closed")
    count = b"%d" % len(keys)
    writer.write(_command(b"EVALSHA", _HIT_SHA, count, *keys, *args))
    await writer.drain()
    try:
        return await _read_bulk(reader)
    except _NoScript:  # nothing was counted: run it whole (which caches it again)
        writer.write(_command(b"EVAL", _HIT_BYTES, count, *keys, *args))
        await writer.drain()
        return await _read_bulk(reader)


async def _read_bulk(reader: asyncio.StreamReader) -> bytes:
    """One bulk-string answer; a Redis error is raised as ResponseError, anything else as
    InvalidResponse (the connection is then out of step and must be closed)."""
    line = await reader.readuntil(b"\r\n")
    kind = line[:1]
    if kind == b"$":
        size = int(line[1:-2])
        if size < 0:
            raise InvalidResponse("unexpected rate-limit script answer: a null string")
        return (await reader.readexactly(size + 2))[:-2]
    if kind == b"-":
        message = line[1:-2].decode("utf-8", "replace")
        if message.startswith("NOSCRIPT"):
            raise _NoScript(message)
        raise ResponseError(message)
    raise InvalidResponse(f"unexpected rate-limit script answer: {line!r:.200}")


def _redis_error(exc: Exception) -> Exception:
    """What the callers are given: Redis's own exceptions and timeouts as they are, a
    broken connection as a Redis ConnectionError, an unreadable answer as InvalidResponse."""
    if isinstance(exc, RedisError | TimeoutError):
        return exc
    error: RedisError
    if isinstance(exc, ConnectionError | OSError | asyncio.IncompleteReadError):
        error = RedisConnectionError(f"Redis connection lost: {exc!r:.200}")
    else:  # e.g. a header line too long or not a number
        error = InvalidResponse(f"unexpected rate-limit script answer: {exc!r:.200}")
    error.__cause__ = exc
    return error


def _verdicts(batch: list[_Pending], text: bytes) -> list[Verdict]:
    """Split the script's answer into each decision's verdict, by its checks' offsets."""
    try:
        answer = [int(number) for number in text.split()]
        if len(answer) != 2 * sum(len(checks) for checks, _, _ in batch):
            raise IndexError("not one count and reset per check")
        verdicts = []
        offset = 0
        for checks, _, _ in batch:
            verdicts.append(
                Verdict(
                    [
                        Decision.counted(
                            p, int(answer[offset + 2 * i]), int(answer[offset + 2 * i + 1])
                        )
                        for i, (p, _) in enumerate(checks)
                    ]
                )
            )
            offset += 2 * len(checks)
    except (IndexError, TypeError, ValueError) as exc:
        raise InvalidResponse(f"unexpected rate-limit script answer: {text!r:.200}") from exc
    return verdicts


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for _, future, _ in batch:
        if not future.done():
            future.set_exception(exc)
