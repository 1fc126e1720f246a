"""The fallback limiter: in-process counters decide when Redis is down or hangs."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest_asyncio
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from bazaar.gateway.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    Policy,
    RedisRateLimiter,
)

TWO = Policy("user", 2, 60)


class Hang:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
            await writer.wait_closed()
        await self.server.wait_closed()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture(loop_scope="session")
async def hanging_url() -> AsyncIterator[str]:
    """The URL of a 'Redis' that accepts connections and never answers."""
    hang = Hang()
    yield await hang.start()
    await hang.stop()


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


async def test_a_closed_port_falls_back_to_in_process_counters() -> None:
    failures: list[BaseException] = []
    client, limiter, memory = _limiter_for(
        f"redis://127.0.0.1:{_closed_port()}/0", failures, cooldown=0.0
    )
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


async def test_after_a_failure_redis_is_skipped_until_the_cooldown_ends(hanging_url: str) -> None:
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
