"""The gateway's shared response cache of public product reads (API.md "Caching at the
edge"): stores, trust, single flight, invalidation by writes and by `catalog.*` events."""

from bazaar.gateway.cache.events import CatalogEvents, products_named
from bazaar.gateway.cache.memory import MemoryStore
from bazaar.gateway.cache.metrics import CacheMetrics
from bazaar.gateway.cache.redisstore import RedisStore
from bazaar.gateway.cache.runtime import EdgeCache
from bazaar.gateway.cache.serve import Forward, ResponseCache
from bazaar.gateway.cache.trust import UNTRUSTED_MAX_AGE, Trust

__all__ = [
    "UNTRUSTED_MAX_AGE",
    "CacheMetrics",
    "CatalogEvents",
    "EdgeCache",
    "Forward",
    "MemoryStore",
    "RedisStore",
    "ResponseCache",
    "Trust",
    "products_named",
]
