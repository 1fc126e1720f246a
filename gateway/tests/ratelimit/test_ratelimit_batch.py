"""Batched decisions: one script call per loop turn, yet each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

from bazaar.gateway.config import GatewaySettings
from bazaar.gateway.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    Policy,
    RedisRateLimiter,
    connect_redis,
)
from bazaar.gateway.ratelimit import redis as redis_limiter
from bazaar.shared.testing.infrastructure import Resolved

#: The decision timeout a gateway runs with unless configured otherwise.
DEFAULT_TIMEOUT = GatewaySettings.model_fields["redis_timeout_seconds"].default
MANY = Policy("user", 10_000, 60)

Start = Callable[[bytes], Awaitable[str]]


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """A prefix of its own for each test, under the run's prefix (deleted at the end)."""
    return f"{redis_prefix}{uuid.uuid4().hex[:8]}:"


async def _counted(client: redis.asyncio.Redis, prefix: str) -> int:
    return sum([int(await client.get(name)) async for name in client.scan_iter(match=prefix + "*")])


def _fallback(
    client: redis.asyncio.Redis, failures: list[BaseException], *, timeout: float
) -> FallbackRateLimiter:
    return FallbackRateLimiter(
        RedisRateLimiter(client, prefix="bazaar-test:never:"),
        MemoryRateLimiter(),
        on_fallback=failures.append,
        timeout=timeout,
    )


async def test_a_batch_that_gets_a_connection_only_after_its_callers_fell_back_is_not_sent(
    redis_client: redis.asyncio.Redis, redis_server: Resolved, prefix: str
) -> None:
    failures: list[BaseException] = []
    # A pool wait longer than the decision timeout, so only the batch's own deadline ends
    # it (with equal ones the batch, starting a loop turn later, still outlived its callers).
    client = connect_redis(redis_server.url, max_connections=1, pool_timeout=2.0)
    limiter = FallbackRateLimiter(
        RedisRateLimiter(client, prefix=prefix),
        MemoryRateLimiter(),
        on_fallback=failures.append,
        timeout=0.1,
        cooldown=0.0,
    )
    try:
        # Another batch holds the only connection.
        busy = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        verdicts = await asyncio.gather(*(limiter.hit([(MANY, "alice")]) for _ in range(20)))
        await client.connection_pool.release(busy)
        await asyncio.sleep(0.2)
        in_redis = await _counted(redis_client, prefix)
        after = await limiter.hit([(MANY, "alice")])
    finally:
        await client.aclose()
    assert sorted(v.decisions[0].count for v in verdicts) == list(range(1, 21))  # in memory
    assert len(failures) == 20
    assert in_redis == 0  # not counted a second time in Redis
    assert after.decisions[0].count == 1  # Redis decides again at once
    assert len(failures) == 20


async def test_a_decision_whose_caller_left_before_the_batch_was_sent_is_not_counted(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    calls = [asyncio.ensure_future(limiter.hit([(MANY, "alice")])) for _ in range(3)]
    await asyncio.sleep(0)  # all three are queued for the same batch
    calls[1].cancel()
    first, second = await asyncio.gather(calls[0], calls[2])
    assert calls[1].cancelled()
    assert (first.decisions[0].count, second.decisions[0].count) == (1, 2)
    assert await _counted(redis_client, prefix) == 2


async def test_a_batch_of_decisions_with_different_numbers_of_checks_gets_each_its_own_counts(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    a, b, c = Policy("a", 100, 60), Policy("b", 100, 10), Policy("c", 100, 3600)
    verdicts = await asyncio.gather(
        limiter.hit([(a, "x")]),
        limiter.hit([(a, "y"), (b, "x")]),
        limiter.hit([(b, "x"), (a, "x"), (c, "z")]),
        limiter.hit([(a, "x")]),
    )
    assert [[(d.policy.name, d.count) for d in v.decisions] for v in verdicts] == [
        [("a", 1)],
        [("a", 1), ("b", 1)],
        [("b", 2), ("a", 2), ("c", 1)],
        [("a", 3)],
    ]
    windows = {"a": 60, "b": 10, "c": 3600}
    for verdict in verdicts:
        for decision in verdict.decisions:
            assert 1 <= decision.reset <= windows[decision.policy.name]


async def test_one_redis_error_reaches_every_decision_of_the_batch(answering_redis: Start) -> None:
    client = redis.asyncio.Redis.from_url(await answering_redis(b"-ERR boom\r\n"))
    limiter = RedisRateLimiter(client, prefix="bazaar-test:never:")
    try:
        async with asyncio.timeout(2):
            outcomes = await asyncio.gather(
                *(limiter.hit([(MANY, f"user{i}")]) for i in range(3)), return_exceptions=True
            )
    finally:
        await client.aclose()
    assert [type(o) for o in outcomes] == [ResponseError] * 3
    assert all("boom" in str(o) for o in outcomes)


@pytest.mark.parametrize(
    "answer",
    [b"*1\r\n:1\r\n", b"*2\r\n$3\r\nabc\r\n:5\r\n", b":7\r\n"],
    ids=["too-short", "not-a-number", "not-a-list"],
)
async def test_a_malformed_answer_falls_back_at_once_instead_of_after_the_timeout(
    answering_redis: Start, answer: bytes
) -> None:
    failures: list[BaseException] = []
    client = redis.asyncio.Redis.from_url(await answering_redis(answer))
    limiter = _fallback(client, failures, timeout=2.0)
    try:
        started = time.perf_counter()
        verdicts = await asyncio.gather(*(limiter.hit([(MANY, "alice")]) for _ in range(3)))
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    assert [v.decisions[0].count for v in verdicts] == [1, 2, 3]  # counted in memory
    assert elapsed < 0.5
    assert [type(f) for f in failures] == [InvalidResponse] * 3


async def test_a_cancelled_batch_sends_its_callers_to_the_fallback(answering_redis: Start) -> None:
    failures: list[BaseException] = []
    client = redis.asyncio.Redis.from_url(await answering_redis(b""))  # scripts never answered
    limiter = _fallback(client, failures, timeout=2.0)
    try:
        calls = [asyncio.ensure_future(limiter.hit([(MANY, "alice")])) for _ in range(3)]
        await asyncio.sleep(0.1)
        for task in list(limiter._primary._sending):  # as at shutdown
            task.cancel()
        async with asyncio.timeout(1):
            verdicts = await asyncio.gather(*calls)
    finally:
        await client.aclose()
    assert [v.decisions[0].count for v in verdicts] == [1, 2, 3]
    assert [type(f) for f in failures] == [RedisConnectionError] * 3


async def test_a_script_call_hanging_on_redis_gives_its_pooled_connection_back(
    answering_redis: Start,
) -> None:
    failures: list[BaseException] = []
    url = await answering_redis(b"")  # connects fine, never answers a script
    client = connect_redis(url, max_connections=2, pool_timeout=DEFAULT_TIMEOUT)
    limiter = _fallback(client, failures, timeout=DEFAULT_TIMEOUT)
    try:
        await asyncio.gather(*(limiter.hit([(MANY, "alice")]) for _ in range(5)))
        await asyncio.sleep(0.6)
        in_use = list(client.connection_pool._get_in_use_connections())
    finally:
        await client.aclose()
    assert len(failures) == 5
    assert in_use == []


async def test_a_script_call_on_a_connection_without_socket_timeout_is_still_bounded(
    answering_redis: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_limiter, "DEFAULT_CALL_TIMEOUT", 0.2)
    url = await answering_redis(b"")  # connects fine, never answers a script
    client = redis.asyncio.Redis.from_url(url, protocol=2, socket_timeout=None)
    limiter = RedisRateLimiter(client, prefix="bazaar-test:never:")
    try:
        async with asyncio.timeout(2):  # without a bound the call would wait forever
            with pytest.raises(TimeoutError):
                await limiter.hit([(MANY, "alice")])
    finally:
        await client.aclose()


async def test_callers_have_their_verdicts_before_the_connection_goes_back(
    redis_client: redis.asyncio.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_limiter, "MAX_IDLE_CONNECTIONS", 0)  # every one goes back
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    gate = asyncio.Event()
    give_back = limiter._give_back

    async def slow_give_back(connection: Any, healthy: bool) -> None:
        await gate.wait()  # a pool slow to take the connection back
        await give_back(connection, healthy)

    monkeypatch.setattr(limiter, "_give_back", slow_give_back)
    try:
        async with asyncio.timeout(1):
            verdict = await limiter.hit([(MANY, "alice")])
    finally:
        gate.set()
        await asyncio.gather(*limiter._sending)
    assert verdict.decisions[0].count == 1
