"""The response cache's metrics, registered on the gateway's registry (names: deploy/README.md)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from bazaar.gateway.tally import CounterTally, TallyCollector

#: What the cache did for a request: answered from storage, fetched it (a miss), shared
#: another request's fetch, was not asked (`no-cache`, an uncached path), or failed (Redis:
#: answered without the cache).
RESULTS = ("hit", "miss", "collapsed", "bypass", "error")


class CacheMetrics:
    """Requests by result (a plain tally: one per cacheable request), invalidations, bytes
    stored, the in-process store's size and whether events are received."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        subscribed: Callable[[], bool],
        held: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.requests = CounterTally(
            "gateway_cache_requests",
            "Cacheable product reads, by what the response cache did (hit, miss, collapsed, "
            "bypass, error).",
            ["result"],
        )
        for result in RESULTS:
            self.requests.counts[(result,)] = 0
        gauges: list[tuple[str, str, Callable[[], float]]] = [
            (
                "gateway_cache_events_subscribed",
                "1 while catalog events invalidate the cache, else 0 (hits are then at most "
                "1 s old).",
                lambda: 1.0 if subscribed() else 0.0,
            )
        ]
        if held is not None:
            read = held
            gauges += [
                ("gateway_cache_entries", "Entries in the in-process cache.", lambda: read()[0]),
                ("gateway_cache_bytes", "Bytes held by the in-process cache.", lambda: read()[1]),
            ]
        registry.register(TallyCollector([self.requests], gauges))
        self.invalidations = Counter(
            "gateway_cache_invalidations",
            "Invalidations, by source (write: through the gateway; event: catalog.*).",
            ["source"],
            registry=registry,
        )
        for source in ("write", "event"):
            self.invalidations.labels(source)
        self.stored_bytes = Counter(
            "gateway_cache_stored_bytes",
            "Bytes of answers stored in the cache.",
            registry=registry,
        )
        self.failures = Counter(
            "gateway_cache_store_failures",
            "Calls to the cache's Redis that failed or timed out.",
            registry=registry,
        )
