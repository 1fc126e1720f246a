"""Prometheus metrics of the outbox relay and the consumers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds from the outbox commit to the consumer's commit.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class MessagingMetrics:
    """The event metrics of one service, in the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.published = Counter(
            "bazaar_events_published",
            "Events the broker confirmed, by type.",
            ["type"],
            registry=registry,
        )
        self.publish_failures = Counter(
            "bazaar_events_publish_failures",
            "Publications that failed and stay pending, by reason (unroutable is an alarm).",
            ["reason"],
            registry=registry,
        )
        self.outbox_lag = Gauge(
            "bazaar_outbox_lag_seconds",
            "Age of the oldest unpublished outbox row (0 when none is pending).",
            registry=registry,
        )
        self.queue_messages = Gauge(
            "bazaar_queue_messages",
            "Ready messages in a queue operators watch: this service's parking queues, "
            "bazaar.events.unrouted and bazaar.events.unsubscribed (absent while the broker "
            "cannot be asked).",
            ["queue"],
            registry=registry,
        )
        self.consumed = Counter(
            "bazaar_events_consumed",
            "Messages a consumer finished, by consumer and outcome (applied, duplicate).",
            ["consumer", "outcome"],
            registry=registry,
        )
        self.retried = Counter(
            "bazaar_events_retried",
            "Messages sent to a retry queue after a failure, by consumer.",
            ["consumer"],
            registry=registry,
        )
        self.parked = Counter(
            "bazaar_events_parked",
            "Messages parked (dead-lettered) after their attempts or as unreadable, by consumer.",
            ["consumer"],
            registry=registry,
        )
        self.end_to_end = Histogram(
            "bazaar_events_end_to_end_seconds",
            "Time from the event's creation to the consumer's commit, by consumer.",
            ["consumer"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 when it was never set), for tests and tools."""
        return float(self.registry.get_sample_value(name, labels) or 0.0)
