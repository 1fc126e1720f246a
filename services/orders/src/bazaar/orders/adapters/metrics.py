"""The orders domain metrics: orders entering each status, and the pending backlog."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from bazaar.orders.domain.model import OrderStatus
from bazaar.orders.service.ports import PendingBacklog


class OrderMetrics:
    """The orders metrics of one app, in its registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.entered = Counter(
            "bazaar_orders",
            "Orders entering a status, counted once the change committed (pending: every "
            "order placed, as its row is first stored).",
            ["status"],
            registry=registry,
        )
        # Every status from the start: a rate over a series that appears late misses its first.
        for status in OrderStatus:
            self.entered.labels(status.value)
        self.pending = Gauge(
            "bazaar_orders_pending",
            "Pending orders now (refreshed by the reconciler).",
            registry=registry,
        )
        self.pending_oldest = Gauge(
            "bazaar_orders_pending_oldest_seconds",
            "Age of the oldest pending order (0 when none is pending).",
            registry=registry,
        )

    def count(self, statuses: Iterable[OrderStatus]) -> None:
        """Count orders that entered these statuses (call once their transaction committed)."""
        for status in statuses:
            self.entered.labels(status.value).inc()

    def show(self, backlog: PendingBacklog) -> None:
        """Set the pending gauges."""
        self.pending.set(backlog.count)
        self.pending_oldest.set(backlog.oldest_seconds)
