"""The response cache as the gateway runs it: its store, its metrics, its subscription."""

from __future__ import annotations

import logging

import redis.asyncio
from prometheus_client import CollectorRegistry

from bazaar.gateway.cache.events import CatalogEvents
from bazaar.gateway.cache.guard import GuardedStore
from bazaar.gateway.cache.memory import MemoryStore
from bazaar.gateway.cache.metrics import CacheMetrics
from bazaar.gateway.cache.redisstore import RedisStore
from bazaar.gateway.cache.serve import ResponseCache
from bazaar.gateway.cache.store import Store
from bazaar.gateway.cache.trust import Trust
from bazaar.gateway.config import GatewaySettings
from bazaar.gateway.ratelimit import connect_redis
from bazaar.gateway.throttledlog import ThrottledWarning

log = logging.getLogger("bazaar.gateway")
#: Seconds a generation outlives the longest entry TTL in Redis.
GENERATION_MARGIN_SECONDS = 60


class EdgeCache:
    """Redis when configured (shared by the replicas), in-process otherwise; invalidated by
    `catalog.*` events when a broker is configured."""

    def __init__(self, settings: GatewaySettings, registry: CollectorRegistry) -> None:
        self.trust = Trust()
        self.redis_warning = ThrottledWarning(log)
        self.events_warning = ThrottledWarning(log)
        self._client: redis.asyncio.Redis | None = None
        memory: MemoryStore | None = None
        store: Store
        if settings.redis_url:
            # A pool of its own: the rate limiter keeps its connections for itself.
            self._client = connect_redis(
                settings.redis_url,
                max_connections=settings.redis_max_connections,
                pool_timeout=settings.redis_timeout_seconds,
            )
            store = GuardedStore(
                RedisStore(
                    self._client,
                    prefix=settings.cache_redis_prefix,
                    generation_seconds=settings.cache_max_ttl_seconds + GENERATION_MARGIN_SECONDS,
                    timeout=settings.redis_timeout_seconds,
                ),
                timeout=settings.redis_timeout_seconds,
                on_failure=self._redis_failed,
            )
        else:
            store = memory = MemoryStore(
                max_entries=settings.cache_max_entries, max_bytes=settings.cache_max_bytes
            )
        held = None if memory is None else (lambda: (len(memory), memory.bytes))
        self.metrics = CacheMetrics(registry, subscribed=lambda: self.trust.subscribed, held=held)
        self.cache = ResponseCache(
            store,
            trust=self.trust,
            metrics=self.metrics,
            max_entry_bytes=settings.cache_max_entry_bytes,
            max_lifetime=settings.cache_max_ttl_seconds,
        )
        self.events = (
            CatalogEvents(
                settings.amqp_url.get_secret_value(),
                invalidate=lambda groups: self.cache.invalidate(groups, source="event"),
                trust=self.trust,
                warning=self.events_warning,
            )
            if settings.amqp_url is not None
            else None
        )

    def _redis_failed(self, exc: BaseException) -> None:
        self.metrics.failures.inc()
        self.redis_warning.warn("response cache off: Redis failed (%s)", type(exc).__name__)

    async def start(self) -> None:
        """Subscribe to the events (in the background)."""
        if self.events is not None:
            self.events.start()

    async def stop(self) -> None:
        """End the subscription, close the store, report warnings held back."""
        if self.events is not None:
            await self.events.stop()
        await self.cache.store.close()
        if self._client is not None:
            await self._client.aclose()
        self.redis_warning.flush()
        self.events_warning.flush()
