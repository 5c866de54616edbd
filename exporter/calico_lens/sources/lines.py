"""Turn a byte stream into batches of complete lines, with a bound on line length."""

from __future__ import annotations

from collections.abc import Callable

MAX_LINE = 64 * 1024  # a kernel log line is < 1 KiB; anything this long is not one


class LineBatcher:
    """Feed bytes in, take batches of complete lines out; over-long lines are cut and reported.

    ``on_cut(n)`` is called for every line longer than ``max_line``: the caller counts it as
    malformed input so that nothing disappears silently.
    """

    def __init__(self, on_cut: Callable[[int], None], max_line: int = MAX_LINE):
        self._buf = b""
        self._skipping = False
        self.max_line = max_line
        self.on_cut = on_cut

    def feed(self, data: bytes) -> str:
        """Complete lines (newline-terminated text) now available; may be ''."""
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return ""
            data = data[nl + 1 :]
            self._skipping = False
        buf = self._buf + data if self._buf else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._buf = buf
            self._check_long()
            return ""
        self._buf = buf[cut + 1 :]
        self._check_long()
        return str(memoryview(buf)[: cut + 1], "utf-8", "replace")  # decoded in place, not copied first

    def _check_long(self) -> None:
        if len(self._buf) > self.max_line:
            self._buf = b""
            self._skipping = True
            self.on_cut(1)

    def flush(self) -> str:
        """The last line when the stream ends without a newline."""
        rest, self._buf = self._buf, b""
        if self._skipping:
            self._skipping = False
            return ""
        return rest.decode("utf-8", errors="replace") + "\n" if rest else ""
