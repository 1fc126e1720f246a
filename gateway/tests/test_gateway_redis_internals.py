"""The redis-py internals `bazaar.gateway.ratelimit.redis` relies on exist with the shape it
expects.

The rate limiter writes and reads its script call on a pooled connection's own streams
instead of through redis-py's command layers (see its docstring); the pin
`redis>=8.1,<8.2` keeps these in place, and this test makes an upgrade that moves one fail
here, by name, rather than somewhere in the limiter's behaviour.
"""

from __future__ import annotations

import asyncio
import inspect

import redis
import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.maint_notifications import MaintNotificationsConfig

from bazaar.gateway.ratelimit import connect_redis
from bazaar.shared.testing.infrastructure import Resolved


def test_the_pinned_redis_py_is_8_1() -> None:
    assert redis.__version__.startswith("8.1."), redis.__version__


def test_the_pool_takes_the_options_connect_redis_gives_it() -> None:
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        "redis://127.0.0.1:1/0",
        max_connections=3,
        timeout=0.5,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        protocol=2,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )
    assert pool.connection_kwargs["protocol"] == 2
    assert pool.connection_kwargs["socket_timeout"] == 0.5
    # The URL's query wins over the arguments (connect_redis refuses another protocol).
    assert (
        redis.asyncio.BlockingConnectionPool.from_url(
            "redis://127.0.0.1:1/0?protocol=3", protocol=2
        ).connection_kwargs["protocol"]
        == 3
    )


async def test_a_pooled_connection_has_the_streams_and_calls_the_limiter_uses(
    redis_server: Resolved,
) -> None:
    client = connect_redis(redis_server.url, max_connections=1, pool_timeout=1.0)
    pool = client.connection_pool
    try:
        assert inspect.iscoroutinefunction(pool.get_connection)
        assert inspect.iscoroutinefunction(pool.release)
        assert "nowait" in inspect.signature(AbstractConnection.disconnect).parameters
        connection = await pool.get_connection()  # no arguments: connected, ready to send
        assert isinstance(connection, AbstractConnection)
        assert connection.socket_timeout == 1.0
        reader, writer = connection._reader, connection._writer
        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(writer, asyncio.StreamWriter)
        # What the limiter's _kept reads to tell a connection fit for the next call.
        assert isinstance(reader._buffer, bytearray) and not reader._buffer  # type: ignore[attr-defined]
        assert not reader.at_eof() and reader.exception() is None
        writer.write(b"*1\r\n$4\r\nPING\r\n")  # RESP2: a simple string answers
        await writer.drain()
        assert await reader.readuntil(b"\r\n") == b"+PONG\r\n"
        await connection.disconnect(nowait=True)
        assert connection._reader is None and connection._writer is None
        await pool.release(connection)
        again = await pool.get_connection()  # the pool reconnects a closed connection
        assert again is connection and isinstance(again._reader, asyncio.StreamReader)
        await pool.release(again)
    finally:
        await client.aclose()
