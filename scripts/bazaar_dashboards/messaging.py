"""Messaging: the outbox relay, consumers, retries and parked messages, queue depths."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from bazaar_dashboards.panels import RATE, dashboard, graph, row


def build() -> Dashboard:
    """The Bazaar messaging dashboard."""
    return (
        dashboard(
            "bazaar-messaging",
            "Bazaar / Messaging",
            "Events published through the outbox, its lag, consumers' outcomes, retries and "
            "parked messages, and the parking and unrouted queues.",
        )
        .with_row(row("Publishing (outbox relay)"))
        .with_panel(
            graph(
                "Events published per second",
                "ops",
                (
                    f"sum by (job, type) (rate(bazaar_events_published_total[{RATE}]))",
                    "{{job}} {{type}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Outbox lag (oldest unpublished event)",
                "s",
                ("max by (job) (bazaar_outbox_lag_seconds)", "{{job}}"),
                description="Grows while the broker is down or the relay stalls.",
            )
        )
        .with_panel(
            graph(
                "Publish failures per second",
                "ops",
                (
                    f"sum by (job, reason) (rate(bazaar_events_publish_failures_total[{RATE}]))",
                    "{{job}} {{reason}}",
                ),
                description="The events stay pending and are retried; unroutable is an alarm.",
                width=24,
            )
        )
        .with_row(row("Consuming (inbox)"))
        .with_panel(
            graph(
                "Messages consumed per second",
                "ops",
                (
                    f"sum by (consumer, outcome) (rate(bazaar_events_consumed_total[{RATE}]))",
                    "{{consumer}} {{outcome}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Retried and parked per second",
                "ops",
                (
                    f"sum by (consumer) (rate(bazaar_events_retried_total[{RATE}]))",
                    "{{consumer}} retried",
                ),
                (
                    f"sum by (consumer) (rate(bazaar_events_parked_total[{RATE}]))",
                    "{{consumer}} parked",
                ),
                description="Parked messages wait in <service>.<subscription>.parking: see "
                "RUNBOOKS.md for `parked … redrive`.",
            )
        )
        .with_panel(
            graph(
                "End-to-end p99 (event created to consumer committed)",
                "s",
                (
                    "histogram_quantile(0.99, sum by (consumer, le) "
                    f"(rate(bazaar_events_end_to_end_seconds_bucket[{RATE}])))",
                    "{{consumer}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Parking and unrouted queues (ready messages)",
                "none",
                ("max by (queue) (bazaar_queue_messages)", "{{queue}}"),
                description="Read from the broker every 15 s; absent while it cannot be asked.",
            )
        )
    )
