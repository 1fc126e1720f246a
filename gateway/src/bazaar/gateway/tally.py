"""Hot-path metrics as plain counters, turned into Prometheus families only when scraped.

A prometheus_client child costs a lock and a few calls per `inc`/`observe`; the gateway
counts several things on every request, so it keeps plain dicts of numbers here and a
collector renders them on `/metrics` (the exposition is the same as Counter/Histogram's).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

Labels = tuple[str | int, ...]


class CounterTally:
    """A counter by label values: `inc` is one dict update."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.counts: dict[Labels, int] = {}

    def inc(self, key: Labels) -> None:
        """Count one event for these label values."""
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1

    def family(self) -> CounterMetricFamily:
        """The counter as Prometheus exposes it (`<name>_total`)."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in list(self.counts.items()):
            family.add_metric([str(v) for v in key], value)
        return family


class HistogramTally:
    """A histogram by label values: `observe` is a bisect and three additions."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.bounds = [float(b) for b in buckets]
        self.series: dict[Labels, list[float]] = {}  # per bucket, then +Inf, then the sum

    def observe(self, key: Labels, seconds: float) -> None:
        """Record one observation for these label values."""
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, seconds)] += 1  # le is inclusive: bisect_left
        row[-1] += seconds

    def family(self) -> HistogramMetricFamily:
        """The histogram as Prometheus exposes it (cumulative buckets, count and sum)."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        names = [*(_bound(b) for b in self.bounds), "+Inf"]
        for key, row in list(self.series.items()):
            cumulative, buckets = 0.0, []
            for bound, hits in zip(names, row[:-1], strict=True):
                cumulative += hits
                buckets.append((bound, cumulative))
            family.add_metric([str(v) for v in key], buckets, row[-1])
        return family


class TallyCollector(Collector):
    """Renders tallies, and unlabelled gauges read at scrape time, for a CollectorRegistry."""

    def __init__(
        self,
        tallies: Sequence[CounterTally | HistogramTally],
        gauges: Sequence[tuple[str, str, Callable[[], float]]] = (),
    ) -> None:
        self._tallies = tallies
        self._gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily | GaugeMetricFamily]:
        """Every family with its current samples."""
        for tally in self._tallies:
            yield tally.family()
        for name, documentation, read in self._gauges:
            yield GaugeMetricFamily(name, documentation, value=read())

    def describe(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily | GaugeMetricFamily]:
        """The families without samples (lets the registry check names once)."""
        for tally in self._tallies:
            kind = CounterMetricFamily if isinstance(tally, CounterTally) else HistogramMetricFamily
            yield kind(tally.name, tally.documentation, labels=tally.labels)
        for name, documentation, _ in self._gauges:
            yield GaugeMetricFamily(name, documentation)


def _bound(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (`0.005`, `1.0`)."""
    return repr(float(bound))
