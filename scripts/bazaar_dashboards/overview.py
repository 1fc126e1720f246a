"""Overview: every process's requests, errors and latency by route, the SLO budget, pools."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from bazaar_dashboards.panels import RATE, dashboard, graph, job_variable, row, single

HTTP = "http_server_request_duration_seconds"
#: The recording rules of deploy/monitoring/prometheus/rules/slo.yml (gateway, per route family:
#: auth, users, products, orders, well-known). Objectives: 99.9 % not 5xx, 99 % within 0.5 s.
FAMILY = "route_family:gateway_"
AVAILABILITY_BUDGET = 0.001


def _quantile(q: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (job, http_request_method, http_route, le) "
        f'(rate({HTTP}_bucket{{job=~"$job"}}[{RATE}])))'
    )


def build() -> Dashboard:
    """The Bazaar overview dashboard."""
    by_job = f'{HTTP}_count{{job=~"$job"}}'
    return (
        dashboard(
            "bazaar-overview",
            "Bazaar / Overview",
            "Requests, errors and latency of every process by route; the gateway's SLO "
            "error budgets; processes and database pools.",
        )
        .with_variable(job_variable())
        .with_row(row("Service level: the gateway by route family (slo.yml)"))
        .with_panel(
            single(
                "Availability error budget left (30 d)",
                "percentunit",
                f"{FAMILY}slo_availability:error_budget_remaining",
                "{{route_family}}",
                description="Objective 99.9 % of answers not 5xx over 30 days: the share of "
                "the allowed failures still unspent (below 0: overspent).",
                width=12,
            )
        )
        .with_panel(
            single(
                "Latency error budget left (30 d)",
                "percentunit",
                f"{FAMILY}slo_latency:error_budget_remaining",
                "{{route_family}}",
                description="Objective 99 % of answers within 0.5 s over 30 days: the share "
                "of the allowed slow answers still unspent.",
                width=12,
            )
        )
        .with_panel(
            graph(
                "Availability budget burn rate (1 h)",
                "none",
                (
                    f"{FAMILY}http_request_errors:ratio_rate1h / {AVAILABILITY_BUDGET:g}",
                    "{{route_family}}",
                ),
                description="1 = spending the budget exactly over 30 days; the fast-burn "
                "alert pages at 14.4 (with the 5 min window agreeing).",
                width=8,
            )
        )
        .with_panel(
            graph(
                "Latency p50 by route family",
                "s",
                (f"{FAMILY}http_request_duration_seconds:p50_rate5m", "{{route_family}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Latency p99 by route family",
                "s",
                (f"{FAMILY}http_request_duration_seconds:p99_rate5m", "{{route_family}}"),
                width=8,
            )
        )
        .with_row(row("Now"))
        .with_panel(single("Targets up", "none", 'sum(up{job=~"$job"})'))
        .with_panel(
            single(
                "Requests in flight",
                "none",
                'sum(http_server_active_requests{job=~"$job"})',
            )
        )
        .with_panel(
            single(
                "Requests per second",
                "reqps",
                f'sum(rate({HTTP}_count{{job=~"$job"}}[{RATE}]))',
            )
        )
        .with_panel(
            single(
                "5xx per second",
                "reqps",
                f'sum(rate({HTTP}_count{{job=~"$job", http_response_status_code=~"5.."}}'
                f"[{RATE}])) or vector(0)",
            )
        )
        .with_row(row("Requests"))
        .with_panel(
            graph(
                "Requests per second",
                "reqps",
                (f"sum by (job) (rate({by_job}[{RATE}]))", "{{job}}"),
            )
        )
        .with_panel(
            graph(
                "Error ratio (5xx)",
                "percentunit",
                (
                    f'sum by (job) (rate({HTTP}_count{{job=~"$job", '
                    f'http_response_status_code=~"5.."}}[{RATE}])) '
                    f"/ sum by (job) (rate({by_job}[{RATE}]))",
                    "{{job}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Responses per second by status",
                "reqps",
                (
                    f"sum by (job, http_response_status_code) (rate({by_job}[{RATE}]))",
                    "{{job}} {{http_response_status_code}}",
                ),
                width=24,
            )
        )
        .with_panel(graph("Latency p50 by route", "s", (_quantile("0.5"), _ROUTE_LEGEND)))
        .with_panel(graph("Latency p99 by route", "s", (_quantile("0.99"), _ROUTE_LEGEND)))
        .with_row(row("Processes"))
        .with_panel(
            graph(
                "Uptime",
                "s",
                ('time() - process_start_time_seconds{job=~"$job"}', "{{job}} {{instance}}"),
                description="Drops to zero when a process restarts.",
                width=8,
            )
        )
        .with_panel(
            graph(
                "CPU",
                "percentunit",
                (f'rate(process_cpu_seconds_total{{job=~"$job"}}[{RATE}])', "{{job}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Resident memory",
                "bytes",
                ('process_resident_memory_bytes{job=~"$job"}', "{{job}} {{instance}}"),
                width=8,
            )
        )
        .with_row(row("Database pools"))
        .with_panel(
            graph(
                "Connections in use of the maximum",
                "none",
                (
                    'sum by (job) (bazaar_db_pool_connections{job=~"$job", state="in_use"})',
                    "{{job}} in use",
                ),
                ('sum by (job) (bazaar_db_pool_max_connections{job=~"$job"})', "{{job}} max"),
            )
        )
        .with_panel(
            graph(
                "Waiting for a connection, and acquires given up",
                "none",
                ('sum by (job) (bazaar_db_pool_waiting{job=~"$job"})', "{{job}} waiting"),
                (
                    "sum by (job) "
                    f'(rate(bazaar_db_pool_acquire_timeouts_total{{job=~"$job"}}[{RATE}]))',
                    "{{job}} timeouts/s (answered 503)",
                ),
            )
        )
    )


_ROUTE_LEGEND = "{{job}} {{http_request_method}} {{http_route}}"
