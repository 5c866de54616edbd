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


class LabelTable:
    def __init__(self, name: str, labels: tuple[str, ...], max_series: int, ttl_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, help_text: str = ""):
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.name = name
        self.help = help_text or name
        self.labels = labels
        self.max_series = max_series
        self.ttl = ttl_seconds
        self._clock = clock
        self.overflow_key: Labels = (OVERFLOW,) * len(labels)
        # label set → [count, last written]: one lookup per write (hashing a label tuple is the cost)
        self._rows: dict[Labels, list[float]] = {}
        self._rendered: dict[Labels, str] = {}  # label set → '{a="x",...}', kept with the series
        self.overflowed = 0.0  # events folded into the overflow series
        self.expired = 0  # series removed (idle past the TTL, or their pod went away)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def add_counts(self, items: Iterable[tuple[Labels, float]]) -> None:
        now = self._clock()
        rows = self._rows
        with self._lock:
            for key, n in items:
                row = rows.get(key)
                if row is None:
                    # The overflow series takes one slot of the cap, so the table never exceeds it.
                    if len(rows) >= self.max_series - 1 and key != self.overflow_key:
                        self.overflowed += n
                        key = self.overflow_key
                        row = rows.get(key)
                    if row is None:
                        row = rows[key] = [0.0, now]
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

    def exposition(self) -> str:
        """The counter family in Prometheus text format. Label sets are rendered once per series
        and remembered, so a scrape of tens of thousands of series costs one join."""
        rows = self.snapshot()
        rendered = self._rendered
        name = self.name + "_total"
        out = [f"# HELP {name} {self.help}\n# TYPE {name} counter\n"]
        for key, value in rows:
            lab = rendered.get(key)
            if lab is None:
                lab = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in zip(self.labels, key, strict=True)) + "}"
                rendered[key] = lab
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


class LiveTable:
    """A gauge of live connections per label set, from Felix's flush intervals: each label set shows
    the sum over the flows of its newest interval. A label set that was not reported in the newest
    or the previous interval has no live connections any more and is dropped."""

    def __init__(self, name: str, labels: tuple[str, ...], max_series: int, help_text: str = ""):
        self.name = name
        self.help = help_text or name
        self.labels = labels
        self.max_series = max_series
        self.overflow_key: Labels = (OVERFLOW,) * len(labels)
        self._rows: dict[Labels, list[int]] = {}  # labels → [interval start, live]
        self._starts: list[int] = []  # the two newest distinct interval starts
        self.overflowed = 0.0
        self.expired = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

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
                    if len(rows) >= self.max_series - 1 and key != self.overflow_key:
                        self.overflowed += live
                        key = self.overflow_key
                        row = rows.get(key)
                    if row is None:
                        row = rows[key] = [start, 0]
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

    def exposition(self) -> str:
        out = [f"# HELP {self.name} {self.help}\n# TYPE {self.name} gauge\n"]
        for key, value in self.snapshot():
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(self.labels, key, strict=True))
            out.append(f"{self.name}{{{lab}}} {_number(value)}\n")
        return "".join(out)
