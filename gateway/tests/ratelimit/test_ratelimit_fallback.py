"""The fallback limiter: in-process counters decide when Redis is down or hangs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from bazaar.gateway.config import GatewaySettings
from bazaar.gateway.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    Policy,
    RedisRateLimiter,
    connect_redis,
)
from bazaar.shared.testing.infrastructure import Resolved

TWO = Policy("user", 2, 60)
#: The decision timeout a gateway runs with unless configured otherwise.
DEFAULT_TIMEOUT = GatewaySettings.model_fields["redis_timeout_seconds"].default


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _limiter_for(
    url: str,
    failures: list[BaseException],
    *,
    timeout: float = 0.05,
    cooldown: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[redis.asyncio.Redis, FallbackRateLimiter, MemoryRateLimiter]:
    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=0.05, socket_timeout=0.05)
    memory = MemoryRateLimiter()
    limiter = FallbackRateLimiter(
        RedisRateLimiter(client, prefix="bazaar-test:never:"),
        memory,
        on_fallback=failures.append,
        timeout=timeout,
        cooldown=cooldown,
        clock=clock,
    )
    return client, limiter, memory


async def test_a_closed_port_falls_back_to_in_process_counters(closed_url: str) -> None:
    failures: list[BaseException] = []
    client, limiter, memory = _limiter_for(closed_url, failures, cooldown=0.0)
    try:
        verdicts = [await limiter.hit([(TWO, "alice")]) for _ in range(3)]
    finally:
        await client.aclose()
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert len(memory) == 1
    assert len(failures) == 3
    assert all(isinstance(f, RedisConnectionError | TimeoutError) for f in failures)


async def test_a_hanging_redis_is_given_up_on_within_the_timeout(hanging_url: str) -> None:
    failures: list[BaseException] = []
    client, limiter, _ = _limiter_for(hanging_url, failures, timeout=0.05)
    try:
        started = time.perf_counter()
        verdict = await limiter.hit([(TWO, "alice")])
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    assert verdict.allowed
    assert elapsed < 0.25
    assert len(failures) == 1
    assert isinstance(failures[0], TimeoutError)


async def test_after_a_failure_redis_is_skipped_until_the_cooldown_ends(
    hanging_url: str,
) -> None:
    failures: list[BaseException] = []
    clock = Clock()
    client, limiter, _ = _limiter_for(
        hanging_url, failures, timeout=0.05, cooldown=1.0, clock=clock
    )
    try:
        await limiter.hit([(TWO, "alice")])
        started = time.perf_counter()
        second = await limiter.hit([(TWO, "alice")])
        skipped = time.perf_counter() - started
        clock.now += 1.0
        started = time.perf_counter()
        await limiter.hit([(TWO, "alice")])
        retried = time.perf_counter() - started
    finally:
        await client.aclose()
    assert second.decisions[0].count == 2
    assert skipped < 0.02
    assert retried >= 0.04
    assert len(failures) == 3


async def test_a_healthy_redis_decides_alone(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    failures: list[BaseException] = []
    memory = MemoryRateLimiter()
    limiter = FallbackRateLimiter(
        RedisRateLimiter(redis_client, prefix=f"{redis_prefix}{uuid.uuid4().hex[:8]}:"),
        memory,
        on_fallback=failures.append,
        timeout=1.0,
    )
    verdicts = [await limiter.hit([(TWO, "alice")]) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert failures == []
    assert len(memory) == 0


async def _counted(client: redis.asyncio.Redis, prefix: str) -> int:
    return sum([int(await client.get(name)) async for name in client.scan_iter(match=prefix + "*")])


async def test_a_burst_of_decisions_on_a_small_pool_all_count_exactly_in_redis(
    redis_client: redis.asyncio.Redis, redis_server: Resolved, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:8]}:"
    failures: list[BaseException] = []
    # The test is about the pool's size, not latency: on a loaded machine (CI) the burst's
    # first decision, which opens the connection, took longer than the gateway's 0.25 s and
    # sent the whole burst in-process. Two seconds leave latency out of it.
    client = connect_redis(redis_server.url, max_connections=2, pool_timeout=2.0)
    limiter = FallbackRateLimiter(
        RedisRateLimiter(client, prefix=prefix),
        MemoryRateLimiter(),
        on_fallback=failures.append,
        timeout=2.0,
    )
    many = Policy("user", 10_000, 60)
    try:
        verdicts = await asyncio.gather(*(limiter.hit([(many, "alice")]) for _ in range(600)))
    finally:
        await client.aclose()
    assert failures == []
    assert sorted(v.decisions[0].count for v in verdicts) == list(range(1, 601))
    assert await _counted(redis_client, prefix) == 600


async def test_a_decision_slower_than_50_ms_but_within_the_timeout_counts_in_redis(
    redis_client: redis.asyncio.Redis,
    slow_redis: Callable[[float], Awaitable[Any]],  # a conftest Slow
    redis_prefix: str,
) -> None:
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:8]}:"
    url = (await slow_redis(0.1)).url
    failures: list[BaseException] = []
    client = connect_redis(url, max_connections=4, pool_timeout=DEFAULT_TIMEOUT)
    limiter = FallbackRateLimiter(
        RedisRateLimiter(client, prefix=prefix),
        MemoryRateLimiter(),
        on_fallback=failures.append,
        timeout=DEFAULT_TIMEOUT,
    )
    try:
        await client.ping()  # connected already, as a serving gateway is
        started = time.perf_counter()
        verdicts = await asyncio.gather(*(limiter.hit([(TWO, "alice")]) for _ in range(3)))
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    assert elapsed >= 0.1
    assert failures == []
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert await _counted(redis_client, prefix) == 3


async def test_after_the_cooldown_one_request_probes_a_hanging_redis_and_the_rest_do_not_wait(
    hanging_url: str,
) -> None:
    failures: list[BaseException] = []
    clock = Clock()
    client, limiter, _ = _limiter_for(
        hanging_url, failures, timeout=0.05, cooldown=1.0, clock=clock
    )

    async def waited() -> float:
        started = time.perf_counter()
        await limiter.hit([(TWO, "alice")])
        return time.perf_counter() - started

    try:
        await limiter.hit([(TWO, "alice")])
        clock.now += 1.0
        waits = sorted(await asyncio.gather(*(waited() for _ in range(5))))
        clock.now += 1.0
        again = sorted(await asyncio.gather(*(waited() for _ in range(5))))
    finally:
        await client.aclose()
    assert waits[-1] >= 0.04 and again[-1] >= 0.04  # the probe
    assert waits[-2] < 0.03 and again[-2] < 0.03  # the others counted in memory meanwhile
    assert len(failures) == 11


async def test_connections_redis_closed_while_kept_are_not_used_again(
    redis_client: redis.asyncio.Redis, redis_server: Resolved, redis_prefix: str
) -> None:
    # A Redis restart (or its idle timeout) closes every connection the limiter keeps
    # between batches: the next decision must still count in Redis, not fail and fall back.
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:8]}:"
    name = f"bazaar-test-{uuid.uuid4().hex[:8]}"
    failures: list[BaseException] = []
    client = connect_redis(
        f"{redis_server.url}?client_name={name}", max_connections=4, pool_timeout=1.0
    )
    limiter = FallbackRateLimiter(
        RedisRateLimiter(client, prefix=prefix),
        MemoryRateLimiter(),
        on_fallback=failures.append,
        timeout=DEFAULT_TIMEOUT,
    )
    many = Policy("user", 10_000, 60)
    try:
        await limiter.hit([(many, "alice")])  # a connection is kept after this one
        killed = [
            await redis_client.client_kill_filter(_id=entry["id"])
            for entry in await redis_client.client_list()
            if entry.get("name") == name
        ]
        await asyncio.sleep(0.1)  # the kept connection has seen Redis close it
        verdict = await limiter.hit([(many, "alice")])
    finally:
        await client.aclose()
    assert killed == [1]
    assert failures == []
    assert verdict.decisions[0].count == 2
    assert await _counted(redis_client, prefix) == 2


async def test_connect_redis_speaks_resp2_without_maintenance_notifications(
    redis_client: redis.asyncio.Redis, redis_server: Resolved, redis_prefix: str
) -> None:
    # The limiter reads the script's answer itself and knows RESP2 only: on RESP3 (redis-py
    # 8's default) Redis may push a frame onto a kept connection at any time.
    name = f"bazaar-test-{uuid.uuid4().hex[:8]}"
    client = connect_redis(
        f"{redis_server.url}?client_name={name}", max_connections=4, pool_timeout=1.0
    )
    limiter = RedisRateLimiter(client, prefix=f"{redis_prefix}{uuid.uuid4().hex[:8]}:")
    try:
        await limiter.hit([(TWO, "alice")])  # the limiter's own connection
        await client.ping()  # and one through redis-py's command layers
        entries = [e for e in await redis_client.client_list() if e.get("name") == name]
    finally:
        await client.aclose()
    assert entries and all(entry["resp"] == "2" for entry in entries), entries


def test_connect_redis_refuses_a_url_asking_for_another_protocol(redis_server: Resolved) -> None:
    with pytest.raises(ValueError, match="RESP2"):
        connect_redis(f"{redis_server.url}?protocol=3", max_connections=1, pool_timeout=1.0)


async def test_bytes_nobody_asked_for_on_a_kept_connection_do_not_fail_the_next_decision(
    answering_redis: Callable[[bytes], Awaitable[str]],
) -> None:
    # Each answer is followed by a RESP3 push frame: the connection kept after the first
    # decision holds it unread, so the next decision must take a fresh connection instead
    # of reading the push as its answer (and falling back).
    push = b">2\r\n$7\r\nMOVING \r\n$1\r\nx\r\n"
    url = await answering_redis(b"$3\r\n1 9\r\n" + push)
    failures: list[BaseException] = []
    client = connect_redis(url, max_connections=2, pool_timeout=1.0)
    limiter = FallbackRateLimiter(
        RedisRateLimiter(client, prefix="bazaar-test:never:"),
        MemoryRateLimiter(),
        on_fallback=failures.append,
        timeout=DEFAULT_TIMEOUT,
    )
    try:
        first = await limiter.hit([(TWO, "alice")])
        await asyncio.sleep(0.05)  # the push has reached the kept connection's reader
        second = await limiter.hit([(TWO, "alice")])
    finally:
        await client.aclose()
    assert failures == []
    assert [first.decisions[0].count, second.decisions[0].count] == [1, 1]  # Redis's answers
