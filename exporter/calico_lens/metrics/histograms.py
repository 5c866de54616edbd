"""Histograms keyed by label tuples, filled per observation in plain lists, exposed at scrape time."""

from __future__ import annotations

import bisect
import threading

from prometheus_client.core import HistogramMetricFamily

from calico_lens.metrics.names import OVERFLOW


class HistogramTable:
    def __init__(self, buckets: tuple[float, ...], max_series: int):
        self.buckets = buckets
        self.max_series = max_series
        self.rows: dict[tuple[str, ...], list] = {}  # key → [per-bucket counts (not cumulative), sum, count]
        self._lock = threading.Lock()

    def observe(self, key: tuple[str, ...], value: float) -> None:
        with self._lock:
            row = self.rows.get(key)
            if row is None:
                if len(self.rows) >= self.max_series:  # bounded like every table
                    key = (OVERFLOW,) * len(key)
                    row = self.rows.get(key)
                if row is None:
                    row = self.rows[key] = [[0] * (len(self.buckets) + 1), 0.0, 0]
            row[0][bisect.bisect_left(self.buckets, value)] += 1
            row[1] += value
            row[2] += 1

    def total(self) -> int:
        with self._lock:
            return sum(r[2] for r in self.rows.values())

    def family(self, name: str, help_text: str, labels: tuple[str, ...]) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, help_text, labels=labels)
        bounds = (*[repr(b) for b in self.buckets], "+Inf")
        with self._lock:
            rows = sorted((k, list(r[0]), r[1]) for k, r in self.rows.items())
        for key, counts, total in rows:
            cum, out = 0, []
            for le, n in zip(bounds, counts, strict=True):
                cum += n
                out.append((le, cum))
            fam.add_metric(key, out, total)
        return fam
