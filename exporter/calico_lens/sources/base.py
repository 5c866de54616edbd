"""What every source shares: a name, a sink for batches of lines, and a stop flag."""

from __future__ import annotations

import threading
from collections.abc import Callable

# sink(source_name, text_of_complete_lines)
Sink = Callable[[str, str], None]
# error(source_name, reason, count)
ErrorSink = Callable[[str, str, int], None]


class Source:
    name = "source"

    def __init__(self, sink: Sink, error: ErrorSink):
        self.sink = sink
        self.error = error
        self.stopped = threading.Event()

    def run(self) -> None:  # pragma: no cover - each source implements it
        raise NotImplementedError

    def stop(self) -> None:
        self.stopped.set()
