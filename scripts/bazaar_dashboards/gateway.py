"""Gateway: traffic by route, rate limits, upstream breakers, latency and errors, the edge."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from bazaar_dashboards.panels import RATE, breakers, dashboard, graph, row

GATEWAY = 'http_server_request_duration_seconds_count{job="gateway"}'


def build() -> Dashboard:
    """The Bazaar gateway dashboard."""
    return (
        dashboard(
            "bazaar-gateway",
            "Bazaar / Gateway",
            "The gateway: requests by route, rate-limit decisions and fallbacks, upstream "
            "breakers, latency and errors, requests refused at the edge.",
        )
        .with_row(row("Traffic"))
        .with_panel(
            graph(
                "Requests per second by route",
                "reqps",
                (
                    f"sum by (http_request_method, http_route) (rate({GATEWAY}[{RATE}]))",
                    "{{http_request_method}} {{http_route}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Answers per second by status",
                "reqps",
                (
                    f"sum by (http_response_status_code) (rate({GATEWAY}[{RATE}]))",
                    "{{http_response_status_code}}",
                ),
            )
        )
        .with_row(row("Rate limits"))
        .with_panel(
            graph(
                "Rate-limit decisions per second",
                "ops",
                (
                    f"sum by (policy, decision) (rate(gateway_rate_limit_decisions_total[{RATE}]))",
                    "{{policy}} {{decision}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Decisions taken in-process (Redis failed)",
                "ops",
                (f"sum(rate(gateway_rate_limit_fallbacks_total[{RATE}]))", "fallbacks"),
                description="Above zero: Redis is unreachable or slow and each gateway "
                "counts alone.",
            )
        )
        .with_row(row("Upstreams"))
        .with_panel(
            breakers(
                "Upstream breakers",
                'max by (dependency) (bazaar_circuit_breaker_state{job="gateway"})',
                "{{dependency}}",
            )
        )
        .with_panel(
            graph(
                "Upstream latency p99 (time to headers)",
                "s",
                (
                    "histogram_quantile(0.99, sum by (upstream, le) "
                    f"(rate(gateway_upstream_duration_seconds_bucket[{RATE}])))",
                    "{{upstream}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Upstream errors per second",
                "ops",
                (
                    f"sum by (upstream, kind) (rate(gateway_upstream_errors_total[{RATE}]))",
                    "{{upstream}} {{kind}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Breaker openings",
                "none",
                (
                    "sum by (dependency) "
                    f'(increase(bazaar_circuit_breaker_opened_total{{job="gateway"}}[{RATE}]))',
                    "{{dependency}}",
                ),
            )
        )
        .with_row(row("Edge"))
        .with_panel(
            graph(
                "Refused at the edge per second",
                "reqps",
                (
                    f"sum by (status) (rate(gateway_edge_refused_total[{RATE}]))",
                    "{{status}}",
                ),
                description="Unparsable requests, heads too large: answered before routing.",
            )
        )
        .with_panel(
            graph(
                "Deprecated routes used, by OAuth client",
                "reqps",
                (
                    "sum by (http_route, client_id) "
                    f"(rate(gateway_deprecated_route_use_total[{RATE}]))",
                    "{{http_route}} {{client_id}}",
                ),
            )
        )
    )
