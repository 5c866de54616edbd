"""Bounded heavy-hitter counting (Space-Saving) whose exposition keeps Prometheus semantics.

Keys are label tuples whose first element is the heavy-hitter dimension (a domain) and the rest
are small, bounded labels (an rcode). ``capacity`` counters track the heaviest keys. A new key
that finds the table full takes the place of the lightest one and inherits its count as *error*.
What is exposed per key is ``count - error``: the events actually seen for it since it entered,
a lower bound of its true count that never decreases while the key is tracked. When a key is
evicted, what it had shown moves to the ``(__other__, *rest)`` row, so the sum over all rows always
equals the events added and every row only grows.

Guarantee (Space-Saving): every key whose true count exceeds N / capacity is tracked, and for a
tracked key ``true - N / capacity <= exposed <= true``.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable

OTHER = "__other__"
Key = tuple[str, ...]


class TopK:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._count: dict[Key, int] = {}
        self._error: dict[Key, int] = {}
        self._heap: list[tuple[int, Key]] = []  # (count, key); stale entries are skipped lazily
        self.other: dict[Key, int] = {}  # (OTHER, *rest) → what evicted keys had shown
        self.total = 0
        self.evicted = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._count)

    def add_counts(self, items: Iterable[tuple[Key, int]]) -> None:
        count, error = self._count, self._error
        with self._lock:
            heap = self._heap
            for key, n in items:
                self.total += n
                if key in count:
                    count[key] += n
                    heapq.heappush(heap, (count[key], key))
                elif len(count) < self.capacity:
                    count[key] = n
                    error[key] = 0
                    heapq.heappush(heap, (n, key))
                else:
                    while True:  # the lightest live entry
                        c, victim = heapq.heappop(heap)
                        if count.get(victim) == c:
                            break
                    shown = c - error.pop(victim)
                    del count[victim]
                    okey = (OTHER, *victim[1:])
                    self.other[okey] = self.other.get(okey, 0) + shown
                    self.evicted += 1
                    count[key] = c + n
                    error[key] = c
                    heapq.heappush(heap, (c + n, key))
            if len(heap) > 4 * self.capacity + 64:  # drop stale heap entries now and then
                self._heap = [(c, k) for k, c in count.items()]
                heapq.heapify(self._heap)

    def snapshot(self) -> dict[Key, int]:
        """Row → exposed count; the rows sum to ``total``."""
        with self._lock:
            out = {k: c - self._error[k] for k, c in self._count.items()}
            for k, v in self.other.items():
                out[k] = out.get(k, 0) + v
        return out
