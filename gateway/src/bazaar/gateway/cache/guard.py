"""A store that fails fast: after a failure it is skipped for `cooldown` seconds, then one
call probes it while the others keep skipping it, as the rate limiter's fallback does.

So a Redis outage costs one request per cooldown at most `timeout` seconds, and every
other request nothing: they are answered without the cache (never with an error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.exceptions import RedisError

from bazaar.gateway.cache.entry import Entry
from bazaar.gateway.cache.key import Target
from bazaar.gateway.cache.store import Found, Store, StoreUnavailable, Ticket

_T = TypeVar("_T")
#: What a failing Redis raises (ValueError: a script's answer that cannot be read; an entry
#: that cannot be read is a miss, see `RedisStore.lookup`).
_FAILURES = (RedisError, OSError, TimeoutError, ValueError)


class GuardedStore:
    """`store` within `timeout` seconds per call, skipped for a while after a failure;
    every failure raises StoreUnavailable and is reported to `on_failure`."""

    def __init__(
        self,
        store: Store,
        *,
        timeout: float,
        on_failure: Callable[[BaseException], None],
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._timeout = timeout
        self._on_failure = on_failure
        self._cooldown = cooldown
        self._clock = clock
        self._retry_at = 0.0
        self._failing = False
        self._probing = False

    async def lookup(self, target: Target) -> tuple[Ticket, Found | None]:
        """See Store.lookup."""
        return await self._guard(lambda: self._store.lookup(target))

    async def store(self, target: Target, ticket: Ticket, entry: Entry, age: float) -> bool:
        """See Store.store."""
        return await self._guard(lambda: self._store.store(target, ticket, entry, age))

    async def drop(self, groups: Sequence[str] | None) -> None:
        """See Store.drop."""
        await self._guard(lambda: self._store.drop(groups))

    async def close(self) -> None:
        """Close the store guarded."""
        await self._store.close()

    async def _guard(self, call: Callable[[], Awaitable[_T]]) -> _T:
        failing = self._failing
        if failing and (self._probing or self._clock() < self._retry_at):
            raise StoreUnavailable("skipped after a failure")
        self._probing = failing  # this call probes; the others skip the store meanwhile
        try:
            async with asyncio.timeout(self._timeout):
                result = await call()
        except _FAILURES as exc:
            self._failing = True
            self._retry_at = self._clock() + self._cooldown
            self._on_failure(exc)
            raise StoreUnavailable(type(exc).__name__) from exc
        finally:
            if failing:
                self._probing = False
        self._failing = False
        return result
