"""Counter tables keyed by label tuples, with a hard series cap, an overflow series and a TTL.

Writers add per *distinct* label set per batch (``add_counts``); the collector reads a snapshot
at scrape time. Past the cap, new label sets fold into one overflow series whose labels are all
``__overflow__``, so the sum over the table always equals what was added.

A writer that updates the same label sets again and again may hold on to their rows (``bind``) and
update them in place, without hashing label tuples per event. Every row ends in an alive flag that
a removal clears; the holder then binds again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from calico_lens.metrics.names import OVERFLOW

Labels = tuple[str, ...]
ALIVE = 2  # index of a row's alive flag: False once the row left its table (bind again)


class _CappedRows:
    """Rows keyed by label set under a hard series cap: what the counter and the gauge tables share."""

    def __init__(self, name: str, labels: tuple[str, ...], max_series: int, help_text: str = "",
                 lock: threading.Lock | None = None):
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.name = name
        self.help = help_text or name
        self.labels = labels
        self.max_series = max_series
        self.overflow_key: Labels = (OVERFLOW,) * len(labels)
        self._rows: dict[Labels, list] = {}
        self.expired = 0  # series removed (idle, retired, or their pod went away)
        self._lock = lock or threading.Lock()  # a writer with several tables may share its own lock

    def __len__(self) -> int:
        return len(self._rows)

    def _new_row(self, key: Labels, n: float, fresh: list) -> list:
        """The row for a label set not held yet (under the lock): its own, or past the cap the overflow
        series, which takes one slot of the cap so that the table never exceeds it."""
        rows = self._rows
        if len(rows) >= self.max_series - 1 and key != self.overflow_key:
            self._folded(n)
            key = self.overflow_key
            row = rows.get(key)
            if row is not None:
                return row
        rows[key] = fresh
        return fresh

    def _folded(self, n: float) -> None:
        """``n`` events of a label set past the cap went to the overflow series."""

    def bind(self, key: Labels, fresh: list, n: float = 0) -> list:
        """The row of ``key`` (``fresh`` if new, or the overflow row past the cap) for in-place
        updates, about to receive ``n``. The caller holds this table's lock."""
        row = self._rows.get(key)
        return row if row is not None else self._new_row(key, n, fresh)

    def _remove(self, keys: list[Labels]) -> None:
        """Drop rows (under the lock): their holders see them dead; rows bound to the overflow series
        bind again too, since the freed slots may now take their own label sets."""
        rows = self._rows
        for k in keys:
            rows.pop(k)[ALIVE] = False
        self.expired += len(keys)
        ov = rows.get(self.overflow_key)
        if keys and ov is not None:
            rows[self.overflow_key] = [*ov[:ALIVE], True]
            ov[ALIVE] = False

    def _label_text(self, key: Labels) -> str:
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in zip(self.labels, key, strict=True)) + "}"


class LabelTable(_CappedRows):
    def __init__(self, name: str, labels: tuple[str, ...], max_series: int, ttl_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, help_text: str = "", lock: threading.Lock | None = None):
        super().__init__(name, labels, max_series, help_text, lock)
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
                    row = self._new_row(key, n, [0.0, now, True])
                row[0] += n
                row[1] = now

    @property
    def overflowed(self) -> float:
        """Events folded into the overflow series (its count: no other label set writes there)."""
        row = self._rows.get(self.overflow_key)
        return row[0] if row is not None else 0.0

    def add(self, key: Labels, n: float = 1.0) -> None:
        self.add_counts(((key, n),))

    def expire(self) -> int:
        """Drop series idle for longer than the TTL. Returns how many went."""
        if self.ttl <= 0:
            return 0
        cutoff = self._clock() - self.ttl
        with self._lock:
            old = [k for k, row in self._rows.items() if row[1] < cutoff and k != self.overflow_key]
            self._remove(old)
            for k in old:
                self._rendered.pop(k, None)
        return len(old)

    def remove_where(self, pred: Callable[[Labels], bool]) -> int:
        with self._lock:
            gone = [k for k in self._rows if k != self.overflow_key and pred(k)]
            self._remove(gone)
            for k in gone:
                self._rendered.pop(k, None)
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

    def __init__(self, name: str, labels: tuple[str, ...], max_series: int, help_text: str = "",
                 lock: threading.Lock | None = None):
        super().__init__(name, labels, max_series, help_text, lock)  # rows: labels → [interval start, live, alive]
        self._starts: list[int] = []  # the two newest distinct interval starts
        self.overflowed = 0.0  # live connections folded into the overflow series, summed over updates

    def _folded(self, n: float) -> None:
        self.overflowed += n

    def update(self, items: Iterable[tuple[Labels, int, int]]) -> None:
        with self._lock:
            for key, start, live in items:
                if start not in self._starts:
                    self.interval(start)
                row = self._rows.get(key)
                if row is None:
                    row = self._new_row(key, live, [start, 0, True])
                self.set_live(row, start, live)

    @staticmethod
    def set_live(row: list, start: int, live: int) -> None:
        """One flow's live connections in the interval starting at ``start``: a newer interval
        replaces the row's value, the same interval adds to it."""
        if start > row[0]:
            row[0], row[1] = start, live
        elif start == row[0]:
            row[1] += live

    def interval(self, start: int) -> None:
        """Note an interval start (under the lock); when a newer one begins, retire the rows that
        only the one before the previous reported."""
        starts = self._starts
        if start in starts or (len(starts) == 2 and start < starts[0]):
            return
        oldest = starts[0] if starts else None
        starts.append(start)
        starts.sort()
        del starts[:-2]
        if starts[0] != oldest:
            self._remove([k for k, r in self._rows.items() if r[0] < starts[0]])

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
