"""Prometheus RED metrics (rate, errors, duration) by route template, one registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import Scope

#: Buckets in seconds, from sub-millisecond handlers to slow dependencies.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class HttpMetrics:
    """The HTTP server metrics of one app, in a registry of its own."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ("method", "route", "status")
        self.requests = Counter(
            "http_server_requests",
            "HTTP requests served, by method, route template and status.",
            labels,
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_server_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "http_server_requests_in_flight",
            "HTTP requests being served now.",
            registry=self.registry,
        )
        self.info = Gauge(
            "bazaar_service_info", "Service identity.", ["service"], registry=self.registry
        )
        self.info.labels(service).set(1)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route, str(status)).observe(seconds)


def route_template(scope: Scope) -> str:
    """The matched route's path template (never the raw path, which would explode cardinality)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "unmatched"
