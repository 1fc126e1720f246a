"""The Redis limiter: one atomic script per decision, exact across replicas sharing Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio

from bazaar.gateway.ratelimit import Policy, RedisRateLimiter, safe_key
from bazaar.shared.testing.infrastructure import Resolved

FIVE = Policy("user", 5, 60)


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """A prefix of its own for each test, under the run's prefix (deleted at the end)."""
    return f"{redis_prefix}{uuid.uuid4().hex[:8]}:"


@pytest_asyncio.fixture(loop_scope="session")
async def other_client(redis_server: Resolved) -> AsyncIterator[redis.asyncio.Redis]:
    """A second client on the same Redis, as another gateway replica would have."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_exactly_the_quota_of_concurrent_requests_is_allowed(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    verdicts = await asyncio.gather(*(limiter.hit([(FIVE, "alice")]) for _ in range(20)))
    allowed = [v for v in verdicts if v.allowed]
    assert sorted((v.decisions[0].remaining for v in allowed), reverse=True) == [4, 3, 2, 1, 0]
    denied = [v for v in verdicts if not v.allowed]
    assert len(denied) == 15
    for verdict in denied:
        decision = verdict.decisions[0]
        assert decision.remaining == 0
        assert 1 <= verdict.retry_after == decision.reset <= 60


async def test_two_replicas_sharing_redis_never_overshoot_together(
    redis_client: redis.asyncio.Redis, other_client: redis.asyncio.Redis, prefix: str
) -> None:
    fifty = Policy("user", 50, 60)
    replicas = [
        RedisRateLimiter(redis_client, prefix=prefix),
        RedisRateLimiter(other_client, prefix=prefix),
    ]
    verdicts = await asyncio.gather(*(replicas[i % 2].hit([(fifty, "alice")]) for i in range(200)))
    assert sum(v.allowed for v in verdicts) == 50
    assert sorted(v.decisions[0].count for v in verdicts) == list(range(1, 201))


async def test_two_policies_are_both_counted_when_one_denies(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    one = Policy("token", 1, 60)
    assert (await limiter.hit([(FIVE, "10.0.0.1"), (one, "alice")])).allowed
    verdict = await limiter.hit([(FIVE, "10.0.0.1"), (one, "alice")])
    assert not verdict.allowed
    assert [(d.allowed, d.count) for d in verdict.decisions] == [(True, 2), (False, 2)]
    assert verdict.retry_after == verdict.decisions[1].reset
    assert verdict.headers()["RateLimit"].startswith('"user";r=3;t=')


async def test_odd_keys_work_and_stay_distinct(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    one = Policy("token", 1, 60)
    keys = [
        "a b",
        "a  b",
        " ",
        "",
        "ünïcödé 名前",
        "x" * 10_240,
        "x" * 10_241,
        "a:b",
        "a\nb",
        "*?[",
    ]
    first = [await limiter.hit([(one, key)]) for key in keys]
    second = [await limiter.hit([(one, key)]) for key in keys]
    assert all(v.allowed for v in first)
    assert not any(v.allowed for v in second)
    names = [name async for name in redis_client.scan_iter(match=prefix + "*")]
    assert len(names) == len(keys)
    assert all(len(name) < len(prefix) + 100 for name in names)


async def test_a_counter_expires_one_second_after_its_window(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    verdict = await limiter.hit([(FIVE, "bob")])
    [name] = [name async for name in redis_client.scan_iter(match=prefix + "*")]
    seconds, _ = await redis_client.time()
    start = seconds - seconds % 60
    assert name.decode() in {f"{prefix}user:bob:{start}", f"{prefix}user:bob:{start - 60}"}
    ttl = await redis_client.ttl(name)
    assert 1 <= ttl <= FIVE.window + 1
    assert ttl <= verdict.decisions[0].reset + 1


async def test_counter_names_hash_odd_keys(redis_client: redis.asyncio.Redis) -> None:
    limiter = RedisRateLimiter(redis_client, prefix="p:")
    assert limiter.counter_name(FIVE, "203.0.113.7") == "p:user:203.0.113.7"
    assert limiter.counter_name(FIVE, "a b") == "p:user:" + safe_key("a b")


async def test_the_script_is_loaded_again_after_redis_forgot_it(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    await limiter.hit([(FIVE, "carol")])
    # SCRIPT FLUSH empties the shared Redis's script cache for every client, which is
    # harmless: the limiter sends its script whole (EVAL) on NOSCRIPT, as redis-py's own
    # scripts do, exactly what this test proves.
    await redis_client.script_flush()
    verdict = await limiter.hit([(FIVE, "carol")])
    assert verdict.decisions[0].count == 2


@pytest.mark.slow
async def test_the_count_starts_again_in_the_next_window(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    second = Policy("burst", 1, 1)
    denied = await limiter.hit([(second, "dave")])
    while denied.allowed:  # the first hits may straddle a window's end
        denied = await limiter.hit([(second, "dave")])
    assert denied.retry_after == 1
    await asyncio.sleep(1.05)
    assert (await limiter.hit([(second, "dave")])).allowed
