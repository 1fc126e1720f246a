"""The gateway's Prometheus metrics (names: deploy/README.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter

from bazaar.gateway.tally import CounterTally, HistogramTally, TallyCollector
from bazaar.shared.metrics import (
    HTTP_LABELS,
    LATENCY_BUCKETS,
    BreakerCollector,
    BreakerReading,
    process_registry,
)


class GatewayMetrics:
    """Requests by route and status, upstream latency, limits, breakers, deprecated use.

    What every request counts is kept in plain tallies (see `bazaar.gateway.tally`) and
    `active`, a plain int the pipeline keeps; the rare events (upstream errors, fallbacks,
    deprecated use) are ordinary Counters; breakers are read when scraped.
    """

    def __init__(self) -> None:
        self.registry = process_registry("gateway")
        r = self.registry
        self.duration = HistogramTally(
            "http_server_request_duration_seconds",
            "Time to answer a request, by method, route and status "
            "(its _count is the number of requests).",
            HTTP_LABELS,
            LATENCY_BUCKETS,
        )
        #: Requests the pipeline is serving now (incremented and decremented by it).
        self.active = 0
        self.upstream = HistogramTally(
            "gateway_upstream_duration_seconds",
            "Upstream time to headers, by upstream.",
            ["upstream"],
            LATENCY_BUCKETS,
        )
        self.rate_limit = CounterTally(
            "gateway_rate_limit_decisions",
            "Rate-limit decisions, by policy and outcome.",
            ["policy", "decision"],
        )
        self._breakers: Callable[[], Iterable[BreakerReading]] = tuple
        r.register(
            TallyCollector(
                [self.duration, self.upstream, self.rate_limit],
                [
                    (
                        "http_server_active_requests",
                        "Requests being served now.",
                        lambda: self.active,
                    )
                ],
            )
        )
        r.register(BreakerCollector(lambda: self._breakers()))
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Upstream failures, by upstream and kind.",
            ["upstream", "kind"],
            registry=r,
        )
        self.rate_limit_fallback = Counter(
            "gateway_rate_limit_fallbacks",
            "Decisions taken in-process because Redis failed or was slow.",
            registry=r,
        )
        self.deprecated = Counter(
            "gateway_deprecated_route_use",
            "Uses of deprecated routes, by route and OAuth client (anonymous without a token).",
            ["http_route", "client_id"],
            registry=r,
        )

        self.edge_refused = Counter(
            "gateway_edge_refused",
            "Requests refused at the HTTP edge (unparsable, head too large), by status.",
            ["status"],
            registry=r,
        )

    def watch_breakers(self, read: Callable[[], Iterable[BreakerReading]]) -> None:
        """Read the breakers (dependency, state, times opened) when scraped, not per request."""
        self._breakers = read

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one answer: its duration (the histogram's count is the request count)."""
        self.duration.observe((method, route, status), seconds)
