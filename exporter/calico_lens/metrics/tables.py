"""The tables of one process, owned by the agent: stages and collectors write into them, the
exposition reads them (and never a stage's internals)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client.core import Metric

from calico_lens.metrics.table import LabelTable, LiveTable

Families = Callable[[], Iterable[Metric]]


class Tables:
    def __init__(self) -> None:
        self.tables: list[LabelTable | LiveTable] = []  # rendered by themselves (large)
        self.families: list[Families] = []  # smaller families built by prometheus_client at scrape time
        self.inputs: dict[tuple[str, str], int] = {}  # (source, result) → lines or records
        self.source_errors: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def add(self, *tables: LabelTable | LiveTable) -> None:
        self.tables.extend(tables)

    def add_families(self, families: Families) -> None:
        self.families.append(families)

    def count_input(self, source: str, result: str, n: int) -> None:
        if n:
            with self._lock:
                self.inputs[(source, result)] = self.inputs.get((source, result), 0) + n

    def count_inputs(self, source: str, parsed: int, ignored: int, malformed: int) -> None:
        """All three results of one batch under one lock."""
        with self._lock:
            inputs = self.inputs
            for result, n in (("parsed", parsed), ("ignored", ignored), ("malformed", malformed)):
                if n:
                    inputs[(source, result)] = inputs.get((source, result), 0) + n

    def source_error(self, source: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self.source_errors[(source, reason)] = self.source_errors.get((source, reason), 0) + n

    def expire(self) -> None:
        for t in self.tables:
            t.expire()
