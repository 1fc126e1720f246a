"""A connection whose call was cut (timeout, cancellation) is never used for another call:
the answer it still owes would be read as the next call's answer, and counted for the wrong
decisions. Adopted from the review of the kept-connection limiter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from bazaar.gateway.ratelimit import Policy, RedisRateLimiter, connect_redis
from bazaar.shared.testing.infrastructure import Resolved

MANY = Policy("user", 10_000, 60)


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """A prefix of its own for each test, under the run's prefix (deleted at the end)."""
    return f"{redis_prefix}{uuid.uuid4().hex[:8]}:"


@pytest.mark.parametrize("pause", [0.0, 0.6], ids=["answer-on-its-way", "answer-arrived"])
async def test_a_timed_out_call_never_lets_the_next_batch_read_its_answer(
    slow_redis: Callable[[float], Awaitable[Any]], prefix: str, pause: float
) -> None:
    slow = await slow_redis(0.0)
    client = connect_redis(slow.url, max_connections=1, pool_timeout=0.25)
    limiter = RedisRateLimiter(client, prefix=prefix)
    try:
        first = await limiter.hit([(MANY, "alice")])
        slow.delay = 0.4  # above the socket timeout: the call is cut, its answer comes later
        with pytest.raises(TimeoutError):
            await limiter.hit([(MANY, "alice")])
        slow.delay = 0.0
        # The next call goes out while the late answer is still on its way (which only
        # never reusing the connection guards against), or once it sits unread.
        await asyncio.sleep(pause)
        other = await limiter.hit([(MANY, "bob")])
        again = await limiter.hit([(MANY, "alice")])
    finally:
        await client.aclose()
    assert first.decisions[0].count == 1
    assert other.decisions[0].count == 1  # bob's own count, not alice's late answer
    assert again.decisions[0].count == 3  # the cut call counted in Redis all the same


async def test_a_cancelled_batch_never_lets_the_next_batch_read_its_answer(
    slow_redis: Callable[[float], Awaitable[Any]], prefix: str
) -> None:
    slow = await slow_redis(0.0)
    client = connect_redis(slow.url, max_connections=1, pool_timeout=1.0)
    limiter = RedisRateLimiter(client, prefix=prefix)
    try:
        await limiter.hit([(MANY, "alice")])
        slow.delay = 0.3
        call = asyncio.ensure_future(limiter.hit([(MANY, "alice")]))
        await asyncio.sleep(0.1)
        for task in list(limiter._sending):  # as at shutdown
            task.cancel()
        with pytest.raises(redis.exceptions.ConnectionError):
            await call
        slow.delay = 0.0
        await asyncio.sleep(0.5)  # the cancelled call's answer has arrived
        other = await limiter.hit([(MANY, "bob")])
    finally:
        await client.aclose()
    assert other.decisions[0].count == 1


async def test_a_script_redis_forgot_is_sent_whole_on_a_kept_connection(
    redis_client: redis.asyncio.Redis, redis_server: Resolved, prefix: str
) -> None:
    client = connect_redis(redis_server.url, max_connections=2, pool_timeout=1.0)
    limiter = RedisRateLimiter(client, prefix=prefix)
    try:
        await limiter.hit([(MANY, "a")])  # a connection is kept after this one
        await redis_client.script_flush()  # harmless for other clients: they reload it too
        verdicts = await asyncio.gather(
            *(limiter.hit([(MANY, "a"), (MANY, "b")]) for _ in range(3))
        )
        last = await limiter.hit([(MANY, "b")])
    finally:
        await client.aclose()
    assert [v.decisions[0].count for v in verdicts] == [2, 3, 4]
    assert last.decisions[0].count == 4
