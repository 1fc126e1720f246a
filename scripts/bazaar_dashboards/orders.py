"""Orders: orders entering each status, the reconciler's backlog, the catalog breaker."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from bazaar_dashboards.panels import RATE, breakers, dashboard, graph, row, single

PLACE = 'job="orders", http_request_method="POST", http_route="/v1/orders"'  # placing an order
#: Orders placed: every order enters pending as its row is first stored, whatever the answer.
PLACED = 'bazaar_orders_total{status="pending"}'


def build() -> Dashboard:
    """The Bazaar orders dashboard."""
    return (
        dashboard(
            "bazaar-orders",
            "Bazaar / Orders",
            "Orders placed, confirmed, rejected and cancelled; pending orders and the oldest "
            "one (the reconciler's backlog); orders' breaker towards catalog.",
        )
        .with_row(row("Now"))
        .with_panel(single("Pending orders", "none", "max(bazaar_orders_pending)"))
        .with_panel(
            single(
                "Oldest pending order",
                "s",
                "max(bazaar_orders_pending_oldest_seconds)",
                description="Age of the oldest order still pending: the reconciler's backlog.",
            )
        )
        .with_panel(
            single(
                "Orders placed (1 h)",
                "none",
                f"sum(increase({PLACED}[1h]))",
                description="Every order placed enters pending as it is first stored, "
                "whatever the answer (confirmed, pending or rejected): placed = entered pending.",
            )
        )
        .with_panel(
            single(
                "Confirmed of placed (1 h)",
                "percentunit",
                f'sum(increase(bazaar_orders_total{{status="confirmed"}}[1h])) '
                f"/ sum(increase({PLACED}[1h]))",
                description="Orders confirmed / orders placed: the rest were rejected (out "
                "of stock, invalid lines, catalog away too long), cancelled while pending, or "
                "are still pending.",
            )
        )
        .with_row(row("Flow"))
        .with_panel(
            graph(
                "Orders entering each status per second",
                "ops",
                (f"sum by (status) (rate(bazaar_orders_total[{RATE}]))", "{{status}}"),
                description="pending = placed (every order enters pending as it is first "
                "stored, whatever the answer); confirmed, rejected, cancelled counted where "
                "the transition commits.",
                width=24,
            )
        )
        .with_panel(
            graph(
                "Pending orders",
                "none",
                ("max(bazaar_orders_pending)", "pending"),
            )
        )
        .with_panel(
            graph(
                "Oldest pending order",
                "s",
                ("max(bazaar_orders_pending_oldest_seconds)", "oldest pending"),
            )
        )
        .with_panel(
            graph(
                "Placing an order: latency",
                "s",
                (
                    "histogram_quantile(0.5, sum by (le) "
                    f"(rate(http_server_request_duration_seconds_bucket{{{PLACE}}}[{RATE}])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(http_server_request_duration_seconds_bucket{{{PLACE}}}[{RATE}])))",
                    "p99",
                ),
            )
        )
        .with_panel(
            graph(
                "Placing an order: answers per second",
                "reqps",
                (
                    "sum by (http_response_status_code) "
                    f"(rate(http_server_request_duration_seconds_count{{{PLACE}}}[{RATE}]))",
                    "{{http_response_status_code}}",
                ),
            )
        )
        .with_row(row("Catalog, as orders sees it"))
        .with_panel(
            breakers(
                "Orders' breaker towards catalog",
                'max by (dependency) (bazaar_circuit_breaker_state{job="orders"})',
                "{{dependency}}",
            )
        )
    )
