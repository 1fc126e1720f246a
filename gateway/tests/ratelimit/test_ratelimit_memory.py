"""The in-process limiter: exact on one node, epoch-aligned windows, bounded memory."""

from __future__ import annotations

import asyncio

from bazaar.gateway.ratelimit import MemoryRateLimiter, Policy

FIVE = Policy("user", 5, 60)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_exactly_the_quota_of_concurrent_requests_is_allowed() -> None:
    limiter = MemoryRateLimiter(Clock(999_999_979.5))
    verdicts = await asyncio.gather(*(limiter.hit([(FIVE, "alice")]) for _ in range(20)))
    allowed = [v for v in verdicts if v.allowed]
    assert len(allowed) == 5
    assert [v.decisions[0].remaining for v in allowed] == [4, 3, 2, 1, 0]
    for denied in verdicts[5:]:
        assert not denied.allowed
        assert denied.decisions[0].remaining == 0
        assert denied.retry_after == denied.decisions[0].reset == 41


async def test_the_count_starts_again_when_the_window_rolls_over() -> None:
    clock = Clock(119.0)
    limiter = MemoryRateLimiter(clock)
    for _ in range(5):
        assert (await limiter.hit([(FIVE, "alice")])).allowed
    denied = await limiter.hit([(FIVE, "alice")])
    assert (denied.allowed, denied.retry_after) == (False, 1)
    clock.now = 120.0
    fresh = await limiter.hit([(FIVE, "alice")])
    assert fresh.allowed
    assert (fresh.decisions[0].remaining, fresh.decisions[0].reset) == (4, 60)


async def test_keys_and_policies_are_counted_apart() -> None:
    limiter = MemoryRateLimiter(Clock(10.0))
    one = Policy("token", 1, 60)
    assert (await limiter.hit([(one, "alice")])).allowed
    assert (await limiter.hit([(one, "bob")])).allowed
    assert (await limiter.hit([(FIVE, "alice")])).allowed
    assert not (await limiter.hit([(one, "alice")])).allowed


async def test_two_policies_are_both_counted_when_one_denies() -> None:
    limiter = MemoryRateLimiter(Clock(10.0))
    one = Policy("token", 1, 60)
    await limiter.hit([(one, "alice")])
    verdict = await limiter.hit([(FIVE, "10.0.0.1"), (one, "alice")])
    assert not verdict.allowed
    assert [d.allowed for d in verdict.decisions] == [True, False]
    assert [d.count for d in verdict.decisions] == [1, 2]
    again = await limiter.hit([(FIVE, "10.0.0.1"), (one, "alice")])
    assert [d.count for d in again.decisions] == [2, 3]


async def test_expired_windows_are_dropped() -> None:
    clock = Clock(0.0)
    limiter = MemoryRateLimiter(clock)
    short = Policy("burst", 10, 1)
    for i in range(1000):
        await limiter.hit([(FIVE, f"client-{i}"), (short, f"client-{i}")])
    assert len(limiter) == 2000
    clock.now = 1.0
    await limiter.hit([(short, "late")])
    assert len(limiter) == 1001
    clock.now = 60.0
    await limiter.hit([(FIVE, "late")])
    assert len(limiter) == 1


async def test_a_counter_reopened_in_a_later_window_survives_the_old_sweep() -> None:
    clock = Clock(0.5)
    limiter = MemoryRateLimiter(clock)
    short = Policy("burst", 2, 1)
    await limiter.hit([(short, "alice")])
    clock.now = 1.5
    await limiter.hit([(short, "alice")])
    clock.now = 1.9
    verdict = await limiter.hit([(short, "alice")])
    assert verdict.decisions[0].count == 2
