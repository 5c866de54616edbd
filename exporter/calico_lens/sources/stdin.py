"""Read flow lines from standard input until it closes (e.g. ``journalctl -k -f | calico-lens agent``)."""

from __future__ import annotations

import os
import select

from calico_lens.sources.base import Source
from calico_lens.sources.lines import LineBatcher


class StdinSource(Source):
    name = "stdin"

    def run(self) -> None:
        batcher = LineBatcher(lambda n: self.error(self.name, "line_too_long", n))
        while not self.stopped.is_set():
            ready, _, _ = select.select([0], [], [], 0.2)
            if not ready:
                continue
            data = os.read(0, 1 << 20)
            if not data:
                break
            text = batcher.feed(data)
            if text:
                self.sink(self.name, text)
        rest = batcher.flush()
        if rest:
            self.sink(self.name, rest)
