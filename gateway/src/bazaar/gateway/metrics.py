"""The gateway's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bazaar.shared.metrics import LATENCY_BUCKETS


class GatewayMetrics:
    """Requests by route and status, upstream latency, limits, breakers, deprecated use."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            "gateway_upstream_duration_seconds",
            "Upstream time to headers, by upstream.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Upstream failures, by upstream and kind.",
            ["upstream", "kind"],
            registry=r,
        )
        self.rate_limit = Counter(
            "gateway_rate_limit_decisions",
            "Rate-limit decisions, by policy and outcome.",
            ["policy", "decision"],
            registry=r,
        )
        self.rate_limit_fallback = Counter(
            "gateway_rate_limit_fallbacks",
            "Decisions taken in-process because Redis failed or was slow.",
            registry=r,
        )
        self.breaker = Gauge(
            "gateway_breaker_state",
            "Breaker state per upstream (0 closed, 1 open, 2 half-open).",
            ["upstream"],
            registry=r,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.deprecated = Counter(
            "gateway_deprecated_route_use",
            "Uses of deprecated routes, by route and client.",
            ["route", "client"],
            registry=r,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answer and its duration (label children looked up once, then reused)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
