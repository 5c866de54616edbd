"""The flow pipeline: text batches → parse → enrich → aggregate, with every line accounted for.

One writer thread calls ``process``; the collector reads the tables at scrape time.
"""

from __future__ import annotations

import logging
import threading

from calico_lens.config import Config
from calico_lens.dns import DnsAggregator
from calico_lens.enrich import IGNORED, Enricher
from calico_lens.kube import endpoints as ep
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.metrics.table import LabelTable
from calico_lens.parse.coredns import has_dns, parse_dns
from calico_lens.parse.kernel_log import ParseResult, count_lines, parse_text

log = logging.getLogger(__name__)

_SRC_NS, _SRC_WL, _SRC_KIND, _DST_NS, _DST_WL, _DST_KIND = range(6)


class FlowPipeline:
    def __init__(self, cfg: Config, store: MetadataStore):
        self.cfg = cfg
        self.store = store
        self.enricher = Enricher(cfg, store)
        self.flows = LabelTable(names.FLOWS, names.FLOW_LABELS, cfg.max_series, cfg.series_ttl,
                                help_text=names.FLOWS_HELP)
        self.dns = DnsAggregator(store, cfg.cluster_domain, cfg.max_series, cfg.series_ttl, cfg.dns_top_domains)
        self.tables = [self.flows, self.dns.requests]
        self.inputs: dict[tuple[str, str], int] = {}
        self.source_errors: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        store.pod_deleted.append(self._pod_deleted)

    def count_input(self, source: str, result: str, n: int) -> None:
        if n:
            with self._lock:
                self.inputs[(source, result)] = self.inputs.get((source, result), 0) + n

    def source_error(self, source: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self.source_errors[(source, reason)] = self.source_errors.get((source, reason), 0) + n

    def process(self, source: str, text: str) -> ParseResult:
        """Account for one batch of complete lines from ``source``: kernel flow lines and CoreDNS
        query lines (``input_format`` auto), or only one of them."""
        fmt = self.cfg.input_format
        if fmt == "coredns":
            res = ParseResult(lines=count_lines(text))
            res.ignored = res.lines
        else:
            res = parse_text(text)
        if fmt != "kernel" and has_dns(text):
            d = parse_dns(text)  # disjoint from flow lines: a query line never holds " OUT="
            res.ignored -= d.matched_lines
            res.malformed += d.malformed
            if d.malformed_sample and not res.malformed_sample:
                res.malformed_sample = d.malformed_sample
            if d.queries:
                self.dns.add(d.queries)
        if res.counts:
            keys = list(res.counts)
            labels = self.enricher.resolve(keys)
            rows: dict[tuple[str, ...], int] = {}
            for k in keys:
                lab = labels[k]
                n = res.counts[k]
                if isinstance(lab, tuple):
                    rows[lab] = rows.get(lab, 0) + n
                elif lab == IGNORED:
                    res.ignored += n
                else:
                    res.malformed += n
                    if not res.malformed_sample:
                        res.malformed_sample = " ".join(k[:4])
            self.flows.add_counts(rows.items())
        self.count_input(source, "parsed", res.parsed)
        self.count_input(source, "ignored", res.ignored)
        self.count_input(source, "malformed", res.malformed)
        if res.malformed_sample:
            log.debug("malformed flow line from %s: %s", source, res.malformed_sample)
        return res

    def expire(self) -> None:
        for t in self.tables:
            t.expire()

    def _pod_deleted(self, namespace: str, pod: str) -> None:
        """Pod-level series go when their pod goes (only pod granularity names pods in labels)."""
        sides = []
        if self.cfg.source_granularity == "pod":
            sides.append((_SRC_NS, _SRC_WL, _SRC_KIND))
        if self.cfg.destination_granularity == "pod":
            sides.append((_DST_NS, _DST_WL, _DST_KIND))
        if not sides:
            return
        self.flows.remove_where(
            lambda k: any(k[a] == namespace and k[b] == pod and k[c] == ep.POD for a, b, c in sides)
        )
