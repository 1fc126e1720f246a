"""The building blocks every Bazaar dashboard is made of: data source, queries, panels."""

from __future__ import annotations

from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

#: Every query asks the data source the dashboard's `datasource` variable names.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Rates over Grafana's own choice: at least four scrape intervals, so never empty.
RATE = "$__rate_interval"
#: The encoding of bazaar_circuit_breaker_state (the same for every breaker).
BREAKER_STATES = {0: ("closed", "green"), 1: ("half-open", "yellow"), 2: ("open", "red")}


def query(expr: str, legend: str = "", *, ref: str = "A") -> prometheus.Dataquery:
    """A range query; `legend` is a Grafana legend template (`{{job}} {{http_route}}`)."""
    built = prometheus.Dataquery().expr(expr).ref_id(ref).range().datasource(DATASOURCE)
    return built.legend_format(legend) if legend else built


_Panel = TypeVar("_Panel", timeseries.Panel, stat.Panel, statetimeline.Panel)


def _with_queries(panel: _Panel, queries: list[tuple[str, str]]) -> _Panel:
    for index, (expr, legend) in enumerate(queries):
        panel.with_target(query(expr, legend, ref=chr(ord("A") + index)))
    return panel


def graph(
    title: str, unit: str, *queries: tuple[str, str], description: str = "", width: int = 12
) -> timeseries.Panel:
    """A time series panel of one or more (expression, legend) queries."""
    panel = (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    )
    if description:
        panel.description(description)
    return _with_queries(panel, list(queries))


def single(
    title: str, unit: str, expr: str, legend: str = "", *, description: str = "", width: int = 6
) -> stat.Panel:
    """A stat panel: one number (the last value) per series."""
    panel = stat.Panel().title(title).unit(unit).datasource(DATASOURCE).height(5).span(width)
    if description:
        panel.description(description)
    return _with_queries(panel, [(expr, legend)])


def breakers(title: str, expr: str, legend: str, *, width: int = 24) -> statetimeline.Panel:
    """A state timeline of circuit breakers: closed, half-open, open over time."""
    mapping = ValueMap(
        options={
            str(value): ValueMappingResult(text=text, color=color, index=value)
            for value, (text, color) in BREAKER_STATES.items()
        }
    )
    panel = (
        statetimeline.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .height(6)
        .span(width)
        .mappings([mapping])
        .description("bazaar_circuit_breaker_state: 0 closed, 1 half-open, 2 open.")
    )
    return _with_queries(panel, [(expr, legend)])


def dashboard(uid: str, title: str, description: str) -> builders.Dashboard:
    """A dashboard with Bazaar's defaults: the data source variable, last hour, 30 s refresh."""
    return (
        builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["bazaar"])
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(
            builders.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )


def job_variable() -> builders.QueryVariable:
    """`$job`: the Bazaar processes (Prometheus jobs), several at once, all by default."""
    return (
        builders.QueryVariable("job")
        .label("Process")
        .datasource(DATASOURCE)
        .query("label_values(http_server_request_duration_seconds_count, job)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def row(title: str) -> builders.Row:
    """A row heading the panels added after it."""
    return builders.Row(title)
