"""Decide with Redis, and with in-process counters whenever Redis fails or is slow.

Why degrade rather than fail open or closed: failing open would make every limit vanish
exactly when something is already wrong, and that is when login guessing and floods are
cheapest; failing closed would turn a Redis outage (an optional, shared counter store)
into a full outage of the API. Falling back to each replica's own counters keeps every
limit in force; only the budget becomes per replica (N replicas admit at most N times the
quota) until Redis answers again. Each fallback decision is reported through
`on_fallback`, which the gateway counts in a metric and logs at a bounded rate.

After a failure the limiter stays on the in-process counters for `cooldown` seconds; then
one request probes Redis while the others keep counting in process until that probe
succeeds, so a hanging Redis delays one request per cooldown, not every request that
arrives within a `timeout` of its end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from redis.exceptions import RedisError

from bazaar.gateway.ratelimit.memory import MemoryRateLimiter
from bazaar.gateway.ratelimit.policy import Policy, Verdict
from bazaar.gateway.ratelimit.redis import RedisRateLimiter

_REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class FallbackRateLimiter:
    """Ask the Redis limiter within `timeout` seconds, else the in-process one."""

    def __init__(
        self,
        primary: RedisRateLimiter,
        fallback: MemoryRateLimiter,
        *,
        on_fallback: Callable[[BaseException], None],
        timeout: float = 0.25,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._on_fallback = on_fallback
        self._timeout = timeout
        self._cooldown = cooldown
        self._clock = clock
        self._retry_at = 0.0
        self._last_failure: BaseException | None = None
        self._probing = False

    async def hit(self, checks: Sequence[tuple[Policy, str]]) -> Verdict:
        """Count one request against every (policy, key) and return the verdict."""
        failure = self._last_failure
        if failure is not None and (self._probing or self._clock() < self._retry_at):
            self._on_fallback(failure)
            return await self._fallback.hit(checks)
        self._probing = failure is not None  # this request probes; the others skip Redis
        try:
            deadline = asyncio.get_running_loop().time() + self._timeout
            async with asyncio.timeout_at(deadline):
                verdict = await self._primary.hit(checks, deadline=deadline)
        except _REDIS_FAILURES as exc:
            self._last_failure = exc
            self._retry_at = self._clock() + self._cooldown
            self._on_fallback(exc)
            return await self._fallback.hit(checks)
        finally:
            if failure is not None:
                self._probing = False
        self._last_failure = None
        return verdict
