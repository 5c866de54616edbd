"""The flow stage: one counted entry (``accept``) for text batches (parse → enrich → aggregate)
and for structured flow records (Felix's: label → aggregate), every line or record accounted for.

Text batches come from one writer thread; record batches may come from receiver threads (the
record stage locks). The tables belong to the agent; the exposition reads them, not this stage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from calico_lens.config import Config
from calico_lens.dns import DnsAggregator
from calico_lens.enrich import Enricher
from calico_lens.kube import endpoints as ep
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.metrics.table import LabelTable
from calico_lens.metrics.tables import Tables
from calico_lens.parse.coredns import has_dns, parse_dns
from calico_lens.parse.kernel_log import ParseResult, SynTracker, count_lines, parse_text
from calico_lens.records import FlowRecordStage

log = logging.getLogger(__name__)

_SRC_NS, _SRC_WL, _SRC_KIND, _DST_NS, _DST_WL, _DST_KIND = range(6)


class RecordBatch(list):
    """Raw structured flow records (serialized goldmane.FlowUpdate messages) from one source."""


class FlowPipeline:
    def __init__(self, cfg: Config, store: MetadataStore, tables: Tables | None = None):
        self.cfg = cfg
        self.store = store
        self.out = tables if tables is not None else Tables()
        self.enricher = Enricher(cfg, store)
        self.flows = LabelTable(names.FLOWS, names.FLOW_LABELS, cfg.max_series, cfg.series_ttl,
                                help_text=names.FLOWS_HELP)
        self.dns = DnsAggregator(store, cfg.cluster_domain, cfg.max_series, cfg.series_ttl, cfg.dns_top_domains)
        self.retries = LabelTable(names.FLOW_RETRIES, names.FLOW_LABELS, cfg.max_series, cfg.series_ttl,
                                  help_text=names.FLOW_RETRIES_HELP)
        # recent connection attempts, to tell a resent SYN (a retry) from a new flow
        self._syns = SynTracker(cfg.syn_retry_window, cfg.syn_retry_max) if cfg.syn_retry_window > 0 else None
        self.out.add(self.flows, self.retries, self.dns.requests)
        self.out.add_families(self.dns.families)
        self.out.add_families(self._families)
        self.records: FlowRecordStage | None = None
        self._lock = threading.Lock()
        store.pod_deleted.append(self._pod_deleted)

    def enable_records(self) -> FlowRecordStage:
        """The record stage and its tables, for an agent with a structured source (felix)."""
        with self._lock:  # receiver threads may call this first
            if self.records is None:
                stage = FlowRecordStage(self.cfg)
                self.out.add(*stage.tables, stage.live)
                self.records = stage
            return self.records

    def count_input(self, source: str, result: str, n: int) -> None:
        self.out.count_input(source, result, n)

    def source_error(self, source: str, reason: str, n: int = 1) -> None:
        self.out.source_error(source, reason, n)

    def accept(self, source: str, batch: str | RecordBatch) -> None:
        """The one counted entry: every line or record of ``batch`` ends up parsed, ignored or
        malformed (records: a resend of a flow already counted is ignored)."""
        if isinstance(batch, RecordBatch):
            parsed, dup, bad = self.enable_records().add(batch, lambda reason, n: self.source_error(source, reason, n))
            self.out.count_inputs(source, parsed, dup, bad)
        else:
            self.process(source, batch)

    def _families(self) -> Iterator[Metric]:
        ev = CounterMetricFamily(names.ENRICH_CACHE_EVICTIONS, "Enrichment cache entries dropped to stay "
                                 "within enrich_cache_size.")
        ev.add_metric((), self.enricher.evictions + (self.records.label_evictions if self.records else 0))
        yield ev
        if self.records is not None:
            g = GaugeMetricFamily(names.FELIX_DEDUPE_ENTRIES, "Felix flows remembered to drop their resends.")
            g.add_metric((), self.records.dedupe_entries())
            yield g
            c = CounterMetricFamily(names.FELIX_DEDUPE_EVICTIONS, "Felix flows forgotten early to stay within "
                                    "felix_dedupe_max (a resend of one would count twice).")
            c.add_metric((), self.records.dedupe_evicted)
            yield c
            f = GaugeMetricFamily(names.FELIX_FLUSH_RECORDS, "New Felix flow records of its newest flush interval "
                                  f"so far; Felix buffers {names.FELIX_CLIENT_BUFFER} and drops the rest of a larger "
                                  "flush.")
            f.add_metric((), self.records.flush_records())
            yield f

    def process(self, source: str, text: str) -> ParseResult:
        """Account for one batch of complete lines from ``source``: kernel flow lines and CoreDNS
        query lines (``input_format`` auto), or only one of them."""
        fmt = self.cfg.input_format
        if fmt == "coredns":
            res = ParseResult(lines=count_lines(text), dns=has_dns(text))
            res.ignored = res.lines
        else:
            # Addresses are folded under the metadata of this moment (as if the batch came a little earlier).
            res = parse_text(text, self._syns, int(time.monotonic()), self.enricher.address_classes())
        if fmt != "kernel" and res.dns:
            d = parse_dns(text)  # disjoint from flow lines: a query line never holds " OUT="
            res.ignored -= d.matched_lines
            res.malformed += d.malformed
            if d.malformed_sample and not res.malformed_sample:
                res.malformed_sample = d.malformed_sample
            if d.queries:
                self.dns.add(d.queries)
        for table, counts in ((self.flows, res.counts), (self.retries, res.retried)):
            if counts:
                rows, ignored, malformed, bad = self.enricher.label_counts(counts)
                res.ignored += ignored
                res.malformed += malformed
                if bad and not res.malformed_sample:
                    res.malformed_sample = " ".join(bad[:4])
                table.add_counts(rows)
        self.out.count_inputs(source, res.parsed, res.ignored, res.malformed)
        if res.malformed_sample:
            log.debug("malformed flow line from %s: %s", source, res.malformed_sample)
        return res

    def _pod_deleted(self, namespace: str, pod: str) -> None:
        """Pod-level series go when their pod goes (only pod granularity names pods in labels)."""
        sides = []
        if self.cfg.source_granularity == "pod":
            sides.append((_SRC_NS, _SRC_WL, _SRC_KIND))
        if self.cfg.destination_granularity == "pod":
            sides.append((_DST_NS, _DST_WL, _DST_KIND))
        if not sides:
            return
        for table in (self.flows, self.retries):
            table.remove_where(
                lambda k: any(k[a] == namespace and k[b] == pod and k[c] == ep.POD for a, b, c in sides))
