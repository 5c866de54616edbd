"""Read lines from a stream that is never seeked: standard input, or the kernel's trace pipe.

stdin serves ``journalctl -k -f | calico-lens agent --source stdin``. The trace pipe is where the
eBPF dataplane's Log rules write (``cali…-E: policy ALLOWED proto 6 src … dest …``); reading it
consumes what is read, so one agent per node reads it, as one reads /dev/kmsg.
"""

from __future__ import annotations

import os
import re
import select

from calico_lens.sources.base import ErrorSink, Sink, Source
from calico_lens.sources.lines import LineBatcher

# Where tracefs is: its own mount (kernels ≥ 4.1) or under debugfs (older set-ups).
TRACE_PIPES = ("/sys/kernel/tracing/trace_pipe", "/sys/kernel/debug/tracing/trace_pipe")
# What the trace pipe prints when its ring buffer overwrote events nobody had read.
_LOST_RX = re.compile(r"^CPU:\d+ \[LOST (\d+) EVENTS\]$", re.M)


class StreamSource(Source):
    """Read a stream until it ends (or, for a stream that never ends, until the agent stops);
    hand over batches of complete lines."""

    ends = True  # an empty read means the writer is gone

    def open(self) -> int:  # pragma: no cover - each stream implements it
        raise NotImplementedError

    def close(self, fd: int) -> None:
        os.close(fd)

    def deliver(self, text: str) -> None:
        self.sink(self.name, text)

    def run(self) -> None:
        fd = self.open()
        batcher = LineBatcher(lambda n: self.error(self.name, "line_too_long", n))
        try:
            while not self.stopped.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    if self.ends:
                        break
                    self.stopped.wait(0.2)
                    continue
                text = batcher.feed(data)
                if text:
                    self.deliver(text)
            rest = batcher.flush()
            if rest:
                self.deliver(rest)
        finally:
            self.close(fd)


class StdinSource(StreamSource):
    name = "stdin"

    def open(self) -> int:
        return 0

    def close(self, fd: int) -> None:
        pass  # stdin belongs to the process


class TracePipeSource(StreamSource):
    """The eBPF dataplane's Log lines. Lines of other tracers are counted as ignored; the pipe's
    own "[LOST n EVENTS]" notes are counted as ``records_lost`` (and the note line as ignored)."""

    name = "trace"
    ends = False  # the trace pipe outlives every writer

    def __init__(self, sink: Sink, error: ErrorSink, path: str = ""):
        super().__init__(sink, error)
        self.path = path

    def open(self) -> int:
        paths = [self.path] if self.path else list(TRACE_PIPES)
        failures = []
        for p in paths:
            try:
                return os.open(p, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as e:
                failures.append(f"{p}: {e.strerror}")
        self.error(self.name, "open_failed", 1)
        raise RuntimeError("cannot open the trace pipe (" + "; ".join(failures) + "); mount tracefs "
                           "(mount -t tracefs nodev /sys/kernel/tracing) and run the agent as root")

    def deliver(self, text: str) -> None:
        if "[LOST " in text:
            lost = sum(int(n) for n in _LOST_RX.findall(text))
            if lost:
                self.error(self.name, "records_lost", lost)
        self.sink(self.name, text)
