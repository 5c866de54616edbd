"""Follow a log file like ``tail -F``: survives rotation (new inode) and truncation."""

from __future__ import annotations

import os

from calico_lens.sources.base import ErrorSink, Sink, Source
from calico_lens.sources.lines import LineBatcher

READ_SIZE = 1 << 20


class FileTail(Source):
    def __init__(self, path: str, sink: Sink, error: ErrorSink, from_start: bool = False,
                 poll: float = 0.1, name: str = "file"):
        super().__init__(sink, error)
        self.path = path
        self.name = name
        self.from_start = from_start
        self.poll = poll

    def _cut(self, n: int) -> None:
        self.error(self.name, "line_too_long", n)

    def run(self) -> None:
        fd = -1
        batcher = LineBatcher(self._cut)
        first = True
        missing_reported = False
        while not self.stopped.is_set():
            if fd < 0:
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except OSError:
                    if not missing_reported:
                        self.error(self.name, "file_missing", 1)
                        missing_reported = True
                    self.stopped.wait(self.poll * 5)
                    continue
                missing_reported = False
                if first and not self.from_start:
                    os.lseek(fd, 0, os.SEEK_END)
                first = False
            data = os.read(fd, READ_SIZE)
            if data:
                text = batcher.feed(data)
                if text:
                    self.sink(self.name, text)
                continue
            # At the end: has the file been truncated, or replaced by a new one?
            try:
                st = os.stat(self.path)
            except OSError:
                st = None
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            if st is not None and st.st_ino == os.fstat(fd).st_ino and st.st_size < pos:
                os.lseek(fd, 0, os.SEEK_SET)  # truncated in place (copytruncate)
                self.error(self.name, "truncated", 1)
                continue
            if st is None or st.st_ino != os.fstat(fd).st_ino:
                rest = batcher.flush()  # the old file is complete: its last line counts too
                if rest:
                    self.sink(self.name, rest)
                os.close(fd)
                fd = -1
                first = False  # a rotated-in file is read from its beginning
                self.error(self.name, "rotated", 1)
                continue
            self.stopped.wait(self.poll)
        if fd >= 0:
            rest = batcher.flush()
            if rest:
                self.sink(self.name, rest)
            os.close(fd)


def read_to_end(path: str, sink: Sink, error: ErrorSink, name: str) -> None:
    """Read a whole file (``-`` for stdin) in batches: what ``replay`` does."""
    batcher = LineBatcher(lambda n: error(name, "line_too_long", n))
    fd = 0 if path == "-" else os.open(path, os.O_RDONLY)
    try:
        while True:
            data = os.read(fd, READ_SIZE)
            if not data:
                break
            text = batcher.feed(data)
            if text:
                sink(name, text)
        rest = batcher.flush()
        if rest:
            sink(name, rest)
    finally:
        if fd != 0:
            os.close(fd)
