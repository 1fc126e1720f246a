"""The gateway's Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from bazaar.gateway.tally import CounterTally, HistogramTally, TallyCollector
from bazaar.shared.metrics import LATENCY_BUCKETS


class GatewayMetrics:
    """Requests by route and status, upstream latency, limits, breakers, deprecated use.

    What every request counts is kept in plain tallies (see `bazaar.gateway.tally`); the
    rare events (upstream errors, fallbacks, deprecated use) are ordinary Counters.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = CounterTally(
            "gateway_requests",
            "Requests answered, by route and status.",
            ["route", "method", "status"],
        )
        self.duration = HistogramTally(
            "gateway_request_duration_seconds",
            "Time to answer, by route.",
            ["route"],
            LATENCY_BUCKETS,
        )
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
        self._breakers: Callable[[], dict[str, float]] = dict
        r.register(
            TallyCollector(
                [self.requests, self.duration, self.upstream, self.rate_limit],
                [
                    (
                        "gateway_breaker_state",
                        "Breaker state per upstream (0 closed, 1 open, 2 half-open).",
                        "upstream",
                        lambda: self._breakers(),
                    )
                ],
            )
        )
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
            "Uses of deprecated routes, by route and client.",
            ["route", "client"],
            registry=r,
        )

    def watch_breakers(self, states: Callable[[], dict[str, float]]) -> None:
        """Read the breakers' states (by upstream) when scraped, not on every request."""
        self._breakers = states

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answer and its duration."""
        self.requests.inc((route, method, status))
        self.duration.observe((route,), seconds)
