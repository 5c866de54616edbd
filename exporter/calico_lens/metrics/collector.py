"""The prometheus_client collector: builds metric families from our tables at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from calico_lens import __version__
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.pipeline import FlowPipeline


class LensCollector(Collector):
    def __init__(self, pipeline: FlowPipeline, store: MetadataStore,
                 watch_restarts: Callable[[], dict[str, int]] | None = None, podnet: object = None):
        self.pipeline = pipeline
        self.store = store
        self.podnet = podnet
        self.watch_restarts = watch_restarts or (lambda: {})

    def collect(self) -> Iterator[Metric]:
        # The large label tables are rendered by ``render`` below, not as metric families.
        p = self.pipeline
        inputs = CounterMetricFamily(names.INPUT_LINES, "Input lines (or records) by source and result: "
                                     "parsed, ignored (not a flow), malformed.", labels=names.INPUT_LABELS)
        counts = dict(p.inputs)
        for source in sorted({s for s, _ in counts}):
            for result in names.RESULTS:
                inputs.add_metric((source, result), counts.get((source, result), 0))
        yield inputs

        errors = CounterMetricFamily(names.SOURCE_ERRORS, "Source problems (overruns, cut lines, "
                                     "read errors), by source and reason.", labels=("source", "reason"))
        for (source, reason), n in sorted(p.source_errors.items()):
            errors.add_metric((source, reason), n)
        yield errors

        series = GaugeMetricFamily(names.SERIES, "Series held per metric.", labels=("metric",))
        overflow = CounterMetricFamily(names.SERIES_OVERFLOW, "Events folded into the __overflow__ "
                                       "series because the series cap was reached.", labels=("metric",))
        expired = CounterMetricFamily(names.SERIES_EXPIRED, "Series removed because they were idle past "
                                      "the TTL or their pod was deleted.", labels=("metric",))
        for table in p.tables:
            metric = table.name + "_total"
            series.add_metric((metric,), len(table))
            overflow.add_metric((metric,), table.overflowed)
            expired.add_metric((metric,), table.expired)
        yield series
        yield overflow
        yield expired

        yield from kube_families(self.store, self.watch_restarts())

        yield from self._dns()
        if self.podnet is not None:
            yield from self._rtt()

        ev = CounterMetricFamily(names.ENRICH_CACHE_EVICTIONS, "Enrichment cache entries dropped to stay "
                                 "within enrich_cache_size.")
        ev.add_metric((), p.enricher.evictions)
        yield ev

        info = GaugeMetricFamily(names.BUILD_INFO, "calico-lens build information.", labels=("version",))
        info.add_metric((__version__,), 1)
        yield info

    def _rtt(self) -> Iterator[Metric]:
        pn = self.podnet
        yield pn.rtt.family(names.TCP_RTT, "Smoothed RTT of established TCP sockets, sampled each round.",
                            ("namespace", "workload"))
        for name, value, what in ((names.TCP_RTT_MIN, pn.rtt_min, "Lowest"),
                                  (names.TCP_RTT_MAX, pn.rtt_max, "Highest")):
            g = GaugeMetricFamily(name, f"{what} TCP RTT seen on this node in the last round.")
            if value is not None:
                g.add_metric((), value)
            yield g

    def _dns(self) -> Iterator[Metric]:
        dns = self.pipeline.dns
        yield dns.hist.family(names.DNS_DURATION, "CoreDNS query duration by client namespace and zone.",
                              ("client_namespace", "zone"))
        domains = CounterMetricFamily(names.DNS_DOMAINS, "CoreDNS queries for the heaviest external domains "
                                      "(bounded top-K); the rest are counted under domain __other__.",
                                      labels=("domain", "rcode"))
        for (domain, rcode), n in sorted(dns.domains.snapshot().items()):
            domains.add_metric((domain, rcode), n)
        yield domains


def kube_families(store: MetadataStore, restarts: dict[str, int]) -> list[Metric]:
    """The metadata cache's self-metrics (shared by the agent and the inventory)."""
    objects = GaugeMetricFamily(names.KUBE_OBJECTS, "Kubernetes objects in the metadata cache.",
                                labels=("resource",))
    synced = GaugeMetricFamily(names.KUBE_SYNCED, "1 once the resource was listed successfully.",
                               labels=("resource",))
    restarted = CounterMetricFamily(names.KUBE_WATCH_RESTARTS, "Watches restarted (410 Gone, errors, "
                                    "dropped connections), by resource.", labels=("resource",))
    counts = store.counts()
    for r in store.resources:
        objects.add_metric((r.key,), counts.get(r.key, 0))
        synced.add_metric((r.key,), 1 if r.key in store.synced else 0)
        restarted.add_metric((r.key,), restarts.get(r.key, 0))
    return [objects, synced, restarted]


def render(registry: CollectorRegistry, pipeline: FlowPipeline) -> bytes:
    """The whole exposition: the self-metrics through prometheus_client, then the label tables,
    which render themselves (tens of thousands of series would take prometheus_client seconds)."""
    parts = [generate_latest(registry)]
    for table in pipeline.tables:
        parts.append(table.exposition().encode())
    return b"".join(parts)
