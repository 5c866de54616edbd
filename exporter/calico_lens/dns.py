"""DNS enrichment and aggregation: CoreDNS queries → client workload, zone, top domains, latency.

Zones: ``cluster`` (names under the cluster domain), ``external``, and ``search_miss``: an NXDOMAIN
for a name the resolver's search path built (``api.github.com.default.svc.cluster.local.``).
Kubernetes' ``ndots:5`` makes every short external lookup try the search list first; those misses
are noise, not failures, and are told apart here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from calico_lens.kube.endpoints import normalise_ip
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.metrics.histograms import HistogramTable
from calico_lens.metrics.table import LabelTable
from calico_lens.metrics.topk import TopK
from calico_lens.parse.coredns import DnsKey

CLUSTER, EXTERNAL, SEARCH_MISS = "cluster", "external", "search_miss"
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def zone_of(name: str, rcode: str, cluster_domain: str, namespaces: frozenset[str] | None = None) -> str:
    """cluster, external or search_miss for a query name (trailing dot optional)."""
    q = name.lower().rstrip(".")
    cd = cluster_domain.lower().strip(".")
    if q != cd and not q.endswith("." + cd):
        return EXTERNAL
    if rcode != "NXDOMAIN":
        return CLUSTER
    labels = q[: -len(cd) - 1].split(".") if q != cd else []
    # Well-formed cluster names: <svc>.<ns>.svc, <endpoint>.<svc>.<ns>.svc, _port._proto.<svc>.<ns>.svc,
    # <a-b-c-d>.<ns>.pod. A real NXDOMAIN for one of them is a real miss (a service that is not there).
    if len(labels) >= 3 and labels[-1] in ("svc", "pod"):
        ns = labels[-2]
        known = namespaces is None or not namespaces or ns in namespaces
        if labels[-1] == "svc":
            head = labels[:-2]
            if known and (len(head) == 1 or (len(head) == 2 and (head[0].startswith("_") or "-" in head[0]
                                                                   or head[0].isdigit()))
                          or (len(head) == 3 and head[0].startswith("_") and head[1].startswith("_"))):
                return CLUSTER
        elif known and len(labels) == 3:
            return CLUSTER
    return SEARCH_MISS


class DnsAggregator:
    def __init__(self, store: MetadataStore, cluster_domain: str, max_series: int, ttl: float, top_domains: int):
        self.store = store
        self.cluster_domain = cluster_domain
        self.requests = LabelTable(names.DNS_REQUESTS, names.DNS_REQUEST_LABELS, max_series, ttl)
        self.domains = TopK(top_domains)  # keys (domain, rcode)
        self.hist = HistogramTable(BUCKETS, max_series)  # by (client_namespace, zone)
        self._clients: dict[str, tuple[str, str]] = {}
        self._gen = -1
        self._lock = threading.Lock()

    def _client(self, ip: str) -> tuple[str, str]:
        hit = self._clients.get(ip)
        if hit is None:
            norm = normalise_ip(ip)
            if norm is None:
                hit = ("", "unknown")
            else:
                e = self.store.index().lookup(norm)
                hit = (e.namespace, e.workload)
            if len(self._clients) > 100_000:
                self._clients.clear()
            self._clients[ip] = hit
        return hit

    def add(self, queries: list[DnsKey]) -> None:
        if self._gen != self.store.generation:
            self._clients.clear()
            self._gen = self.store.generation
        namespaces = frozenset(ns for ns, _ in (
            ((o.get("metadata") or {}).get("name", ""), 0) for o in self.store.objects("namespaces")))
        rows: dict[tuple[str, ...], int] = {}
        domains: dict[tuple[str, str], int] = {}
        with self._lock:
            for ip, qtype, name, _proto, rcode, dur in queries:
                ns, wl = self._client(ip)
                zone = zone_of(name, rcode, self.cluster_domain, namespaces)
                key = (ns, wl, qtype, rcode, zone)
                rows[key] = rows.get(key, 0) + 1
                if zone == EXTERNAL:
                    d = (name.lower().rstrip(".") or ".", rcode)
                    domains[d] = domains.get(d, 0) + 1
                try:
                    seconds = float(dur)
                except ValueError:
                    seconds = 0.0
                self.hist.observe((ns, zone), seconds)
            self.domains.add_counts(domains.items())
        self.requests.add_counts(rows.items())

    def families(self) -> Iterator[Metric]:
        """The DNS families built at scrape time (the requests table renders itself)."""
        yield self.hist.family(names.DNS_DURATION, "CoreDNS query duration by client namespace and zone.",
                               ("client_namespace", "zone"))
        domains = CounterMetricFamily(names.DNS_DOMAINS, "CoreDNS queries for the heaviest external domains "
                                      "(bounded top-K); the rest are counted under domain __other__.",
                                      labels=("domain", "rcode"))
        for (domain, rcode), n in sorted(self.domains.snapshot().items()):
            domains.add_metric((domain, rcode), n)
        yield domains
