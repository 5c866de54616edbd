"""Read the kernel log ring buffer from ``/dev/kmsg``.

Each read() returns one record ``pri,seq,usec,flags;message`` followed by optional continuation
lines that start with a space (``SUBSYSTEM=...``). We read records until the buffer is drained,
hand them over as one batch, then wait. When the ring overwrote records we had not read yet,
read() fails with EPIPE: the gap is counted (from the sequence numbers) and reading goes on.
"""

from __future__ import annotations

import errno
import os
import select

from calico_lens.sources.base import ErrorSink, Sink, Source

MAX_BATCH = 20000


def split_record(record: bytes) -> tuple[int, str]:
    """(sequence number, first line in kmsg form) of one record; seq -1 if unreadable."""
    text = record.decode("utf-8", errors="replace")
    first = text.split("\n", 1)[0]
    try:
        seq = int(first.split(",", 2)[1])
    except (IndexError, ValueError):
        seq = -1
    return seq, first


class KmsgSource(Source):
    name = "kmsg"

    def __init__(self, sink: Sink, error: ErrorSink, path: str = "/dev/kmsg", from_start: bool = False):
        super().__init__(sink, error)
        self.path = path
        self.from_start = from_start

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            self.error(self.name, "open_failed", 1)
            raise RuntimeError(f"cannot open {self.path}: {e.strerror} (the agent needs CAP_SYSLOG "
                               "and read access to /dev/kmsg)") from e
        if not self.from_start:
            os.lseek(fd, 0, os.SEEK_END)
        last_seq = -1
        try:
            while not self.stopped.is_set():
                lines: list[str] = []
                while len(lines) < MAX_BATCH:
                    try:
                        rec = os.read(fd, 8192)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno == errno.EPIPE:
                            self.error(self.name, "overrun", 1)
                            continue
                        raise
                    if not rec:
                        break
                    seq, line = split_record(rec)
                    if last_seq >= 0 and seq > last_seq + 1:
                        self.error(self.name, "records_lost", seq - last_seq - 1)
                    if seq >= 0:
                        last_seq = seq
                    lines.append(line)
                if lines:
                    self.sink(self.name, "\n".join(lines) + "\n")
                    continue
                select.select([fd], [], [], 0.2)
        finally:
            os.close(fd)
