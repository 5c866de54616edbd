"""The prometheus_client collector: builds metric families from our tables at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from calico_lens import __version__
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.metrics.table import LiveTable
from calico_lens.metrics.tables import Tables


class LensCollector(Collector):
    def __init__(self, tables: Tables, store: MetadataStore,
                 watcher: Callable[[], Any] | None = None):
        self.tables = tables
        self.store = store
        self.watcher = watcher or (lambda: None)  # the KubeWatcher, once there is one

    def collect(self) -> Iterator[Metric]:
        # The large label tables are rendered by ``render`` below, not as metric families.
        t = self.tables
        inputs = CounterMetricFamily(names.INPUT_LINES, "Input lines (or records) by source and result: "
                                     "parsed, ignored (not a flow, or a resent record), malformed.",
                                     labels=names.INPUT_LABELS)
        counts = dict(t.inputs)
        for source in sorted({s for s, _ in counts}):
            for result in names.RESULTS:
                inputs.add_metric((source, result), counts.get((source, result), 0))
        yield inputs

        errors = CounterMetricFamily(names.SOURCE_ERRORS, "Source problems (overruns, cut lines, "
                                     "read errors, refused records), by source and reason.",
                                     labels=("source", "reason"))
        for (source, reason), n in sorted(t.source_errors.items()):
            errors.add_metric((source, reason), n)
        yield errors

        series = GaugeMetricFamily(names.SERIES, "Series held per metric.", labels=("metric",))
        overflow = CounterMetricFamily(names.SERIES_OVERFLOW, "Events folded into the __overflow__ "
                                       "series because the series cap was reached.", labels=("metric",))
        expired = CounterMetricFamily(names.SERIES_EXPIRED, "Series removed because they were idle past "
                                      "the TTL or their pod was deleted.", labels=("metric",))
        for table in t.tables:
            metric = table.name if isinstance(table, LiveTable) else table.name + "_total"
            series.add_metric((metric,), len(table))
            overflow.add_metric((metric,), table.overflowed)
            expired.add_metric((metric,), table.expired)
        yield series
        yield overflow
        yield expired

        yield from kube_families(self.store, self.watcher())
        for families in t.families:
            yield from families()

        info = GaugeMetricFamily(names.BUILD_INFO, "calico-lens build information.", labels=("version",))
        info.add_metric((__version__,), 1)
        yield info


def rtt_families(pn) -> Iterator[Metric]:
    """RTT from the per-pod collector: the histogram and this node's extremes."""
    yield pn.rtt.family(names.TCP_RTT, "Smoothed RTT of established TCP sockets, sampled each round.",
                        ("namespace", "workload"))
    for name, value, what in ((names.TCP_RTT_MIN, pn.rtt_min, "Lowest"),
                              (names.TCP_RTT_MAX, pn.rtt_max, "Highest")):
        g = GaugeMetricFamily(name, f"{what} TCP RTT seen on this node in the last round.")
        if value is not None:
            g.add_metric((), value)
        yield g


def kube_families(store: MetadataStore, watcher: Any = None) -> list[Metric]:
    """The metadata cache's self-metrics (shared by the agent and the inventory)."""
    restarts = dict(watcher.restarts) if watcher is not None else {}
    last_sync = dict(watcher.last_sync) if watcher is not None else {}
    objects = GaugeMetricFamily(names.KUBE_OBJECTS, "Kubernetes objects in the metadata cache.",
                                labels=("resource",))
    synced = GaugeMetricFamily(names.KUBE_SYNCED, "1 once the resource was listed successfully.",
                               labels=("resource",))
    restarted = CounterMetricFamily(names.KUBE_WATCH_RESTARTS, "Watches restarted (410 Gone, errors, timeouts, "
                                    "dropped connections), by resource.", labels=("resource",))
    fresh = GaugeMetricFamily(names.KUBE_LAST_SYNC, "Unix time the cache of a resource was last known current "
                              "(a list, a watch event or bookmark, a watch that ended on time).", labels=("resource",))
    counts = store.counts()
    for r in store.resources:
        objects.add_metric((r.key,), counts.get(r.key, 0))
        synced.add_metric((r.key,), 1 if r.key in store.synced else 0)
        restarted.add_metric((r.key,), restarts.get(r.key, 0))
        if r.key in last_sync:
            fresh.add_metric((r.key,), last_sync[r.key])
    return [objects, synced, restarted, fresh]


EOF = b"# EOF\n"


def exposition(registry: CollectorRegistry, openmetrics: bool = False) -> bytes:
    """A registry in Prometheus text format, or OpenMetrics (which ends with ``# EOF``)."""
    if openmetrics:
        from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

        return generate_openmetrics(registry)
    return generate_latest(registry)


def render(registry: CollectorRegistry, tables: Tables, openmetrics: bool = False) -> bytes:
    """The whole exposition: the self-metrics through prometheus_client, then the label tables,
    which render themselves (tens of thousands of series would take prometheus_client seconds)."""
    head = exposition(registry, openmetrics)
    parts = [head.removesuffix(EOF)]
    for table in tables.tables:
        parts.append(table.exposition(openmetrics).encode())
    if openmetrics:
        parts.append(EOF)
    return b"".join(parts)
