"""Prometheus metrics every process exports, one registry per app (names: deploy/README.md).

HTTP server metrics under OpenTelemetry's semantic-convention names, the build info, the
process and Python runtime collectors, and the collectors read at scrape time for the
database pool and circuit breakers (nothing is computed for them per request).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Scope

from bazaar.shared.version import service_version

if TYPE_CHECKING:
    from bazaar.shared.db import PoolStats

#: Buckets in seconds, from sub-millisecond handlers to slow dependencies.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: `http_request_method` takes these as they are; any other token is `_OTHER` (OpenTelemetry's
#: rule), so a client cannot create unbounded series.
KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
OTHER_METHOD = "_OTHER"
HTTP_LABELS = ("http_request_method", "http_route", "http_response_status_code")
#: `bazaar_circuit_breaker_state` values, the same for every breaker of every process.
BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN = 0, 1, 2


def process_registry(service: str) -> CollectorRegistry:
    """A registry holding what every process exports: build info, process and runtime."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Gauge(
        "bazaar_build_info",
        "Always 1: the service, its installed version and the Python it runs on.",
        ["service", "version", "python_version"],
        registry=registry,
    ).labels(service, service_version(service), platform.python_version()).set(1)
    return registry


def metric_method(method: str) -> str:
    """The `http_request_method` label of a request method (a known one, else `_OTHER`)."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


class HttpMetrics:
    """The HTTP server metrics of one app, in a registry of its own."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or process_registry(service)
        self.duration = Histogram(
            "http_server_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status "
            "(its _count is the number of requests).",
            HTTP_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.active = Gauge(
            "http_server_active_requests", "HTTP requests being served now.", registry=self.registry
        )
        # The labelled children by (method, route, status): looked up once each, not per request.
        self._children: dict[tuple[str, str, int], Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        key = (metric_method(method), route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.duration.labels(key[0], route, str(status))
        child.observe(seconds)


def route_template(scope: Scope) -> str:
    """The matched route's path template (never the raw path, which would explode cardinality)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "unmatched"


BreakerReading = tuple[str, int, int]  # dependency, state (BREAKER_*), times it opened


class BreakerCollector(Collector):
    """`bazaar_circuit_breaker_state` and `bazaar_circuit_breaker_opened_total`, by dependency,
    read from the breakers when scraped."""

    def __init__(self, read: Callable[[], Iterable[BreakerReading]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The state and the opening count of every breaker now."""
        state, opened = self._families()
        for dependency, value, times in self._read():
            state.add_metric([dependency], value)
            opened.add_metric([dependency], times)
        yield state
        yield opened

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The families without samples (lets the registry check names once)."""
        yield from self._families()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                "bazaar_circuit_breaker_state",
                "Circuit breaker state by dependency: 0 closed, 1 half-open, 2 open.",
                labels=["dependency"],
            ),
            CounterMetricFamily(
                "bazaar_circuit_breaker_opened",
                "Times the circuit breaker opened, by dependency.",
                labels=["dependency"],
            ),
        )


class DatabasePoolCollector(Collector):
    """The database pool's `bazaar_db_pool_*` metrics, read when scraped (none before it exists)."""

    def __init__(self, read: Callable[[], PoolStats | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The pool's connections, size, waiting callers and acquire timeouts now."""
        stats = self._read()
        if stats is None:
            return
        connections, size, waiting, timeouts = self._families()
        connections.add_metric(["in_use"], stats.in_use)
        connections.add_metric(["idle"], stats.idle)
        size.add_metric([], stats.max_size)
        waiting.add_metric([], stats.waiting)
        timeouts.add_metric([], stats.acquire_timeouts)
        yield from (connections, size, waiting, timeouts)

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The families without samples (lets the registry check names once)."""
        yield from self._families()

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                "bazaar_db_pool_connections",
                "Database connections open in the pool, by state (in_use, idle).",
                labels=["state"],
            ),
            GaugeMetricFamily(
                "bazaar_db_pool_max_connections", "Connections the pool may open at most."
            ),
            GaugeMetricFamily(
                "bazaar_db_pool_waiting",
                "Callers waiting for a connection while every one the pool may have is in use.",
            ),
            CounterMetricFamily(
                "bazaar_db_pool_acquire_timeouts",
                "Waits that gave up while every connection was in use (a request: 503).",
            ),
        )
