"""Counter tables keyed by label tuples, with a hard series cap, an overflow series and a TTL.

Writers add per *distinct* label set per batch (``add_counts``); the collector reads a snapshot
at scrape time. Past the cap, new label sets fold into one overflow series whose labels are all
``__overflow__``, so the sum over the table always equals what was added.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from calico_lens.metrics.names import OVERFLOW

Labels = tuple[str, ...]


class _CappedRows:
    """Rows keyed by label set under a hard series cap: what the counter and the gauge tables share."""

    def __init__(self, name: str, labels: tuple[str, ...], max_series: int, help_text: str = ""):
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.name = name
        self.help = help_text or name
        self.labels = labels
        self.max_series = max_series
        self.overflow_key: Labels = (OVERFLOW,) * len(labels)
        self._rows: dict[Labels, list] = {}
        self.overflowed = 0.0  # events folded into the overflow series
        self.expired = 0  # series removed (idle, retired, or their pod went away)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def _new_row(self, key: Labels, n: float, fresh: list) -> list:
        """The row for a label set not held yet (under the lock): its own, or past the cap the overflow
        series, which takes one slot of the cap so that the table never exceeds it."""
        rows = self._rows
        if len(rows) >= self.max_series - 1 and key != self.overflow_key:
            self.overflowed += n
            key = self.overflow_key
            row = rows.get(key)
            if row is not None:
                return row
        rows[key] = fresh
        return fresh

    def _label_text(self, key: Labels) -> str:
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in zip(self.labels, key, strict=True)) + "}"


class LabelTable(_CappedRows):
    def __init__(self, name: str, labels: tuple[str, ...], max_series: int, ttl_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, help_text: str = ""):
        super().__init__(name, labels, max_series, help_text)
        self.ttl = ttl_seconds
        self._clock = clock
        # rows: label set → [count, last written]: one lookup per write (hashing a label tuple is the cost)
        self._rendered: dict[Labels, str] = {}  # label set → '{a="x",...}', kept with the series

    def add_counts(self, items: Iterable[tuple[Labels, float]]) -> None:
        now = self._clock()
        rows = self._rows
        with self._lock:
            for key, n in items:
                row = rows.get(key)
                if row is None:
                    row = self._new_row(key, n, [0.0, now])
                row[0] += n
                row[1] = now

    def add(self, key: Labels, n: float = 1.0) -> None:
        self.add_counts(((key, n),))

    def expire(self) -> int:
        """Drop series idle for longer than the TTL. Returns how many went."""
        if self.ttl <= 0:
            return 0
        cutoff = self._clock() - self.ttl
        with self._lock:
            old = [k for k, row in self._rows.items() if row[1] < cutoff and k != self.overflow_key]
            for k in old:
                del self._rows[k]
                self._rendered.pop(k, None)
            self.expired += len(old)
        return len(old)

    def remove_where(self, pred: Callable[[Labels], bool]) -> int:
        with self._lock:
            gone = [k for k in self._rows if k != self.overflow_key and pred(k)]
            for k in gone:
                del self._rows[k]
                self._rendered.pop(k, None)
            self.expired += len(gone)
        return len(gone)

    def snapshot(self) -> list[tuple[Labels, float]]:
        with self._lock:
            return [(k, row[0]) for k, row in self._rows.items()]

    def exposition(self, openmetrics: bool = False) -> str:
        """The counter family in Prometheus text format (or OpenMetrics, whose HELP and TYPE name the
        family without _total). Label sets are rendered once per series and remembered, so a scrape
        of tens of thousands of series costs one join."""
        rows = self.snapshot()
        rendered = self._rendered
        name = self.name + "_total"
        family = self.name if openmetrics else name
        out = [f"# HELP {family} {self.help}\n# TYPE {family} counter\n"]
        for key, value in rows:
            lab = rendered.get(key)
            if lab is None:
                lab = rendered[key] = self._label_text(key)
            out.append(f"{name}{lab} {_number(value)}\n")
        return "".join(out)

    def total(self) -> float:
        with self._lock:
            return sum(row[0] for row in self._rows.values())


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _number(v: float) -> str:
    return str(int(v)) + ".0" if v.is_integer() else repr(v)


class LiveTable(_CappedRows):
    """A gauge of live connections per label set, from Felix's flush intervals: each label set shows
    the sum over the flows of its newest interval. A label set that was not reported in the newest
    or the previous interval has no live connections any more and is dropped."""

    def __init__(self, name: str, labels: tuple[str, ...], max_series: int, help_text: str = ""):
        super().__init__(name, labels, max_series, help_text)  # rows: labels → [interval start, live]
        self._starts: list[int] = []  # the two newest distinct interval starts

    def update(self, items: Iterable[tuple[Labels, int, int]]) -> None:
        with self._lock:
            rows, starts = self._rows, self._starts
            oldest = starts[0] if starts else None
            for key, start, live in items:
                if start not in starts and (len(starts) < 2 or start > starts[0]):
                    starts.append(start)
                    starts.sort()
                    del starts[:-2]
                row = rows.get(key)
                if row is None:
                    row = self._new_row(key, live, [start, 0])
                if start > row[0]:
                    row[0], row[1] = start, live
                elif start == row[0]:
                    row[1] += live
            if starts and starts[0] != oldest:  # a new interval began: retire what the one before left
                old = [k for k, r in rows.items() if r[0] < starts[0]]
                for k in old:
                    del rows[k]
                self.expired += len(old)

    def expire(self) -> int:
        return 0  # intervals, not wall time, retire rows (update)

    def snapshot(self) -> list[tuple[Labels, float]]:
        with self._lock:
            return [(k, float(r[1])) for k, r in self._rows.items()]

    def exposition(self, openmetrics: bool = False) -> str:  # the same in both formats
        out = [f"# HELP {self.name} {self.help}\n# TYPE {self.name} gauge\n"]
        for key, value in self.snapshot():
            out.append(f"{self.name}{self._label_text(key)} {_number(value)}\n")
        return "".join(out)
