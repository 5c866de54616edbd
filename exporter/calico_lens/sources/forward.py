"""Fluentd Forward Protocol v1 receiver, as Fluent Bit's ``forward`` output speaks it.

Modes: Message ``[tag, time, record, opt?]``, Forward ``[tag, [entry, ...], opt?]``,
PackedForward ``[tag, bin(entries), opt?]`` and CompressedPackedForward (gzip). An entry is
``[time, record]`` or Fluent Bit 5's ``[[time, metadata], record]``; time is an integer or an
EventTime (msgpack ext type 0). With a ``chunk`` option the reply ``{"ack": chunk}`` is sent only
after the records went through the pipeline, so ``require_ack_response`` gives at-least-once
delivery; a chunk that fails is not acked.

Optional shared-key handshake (HELO → PING → PONG, with username/password) and TLS. Limits on
frame size, decompressed size, connections and idle time; every cut-off is counted. Bad msgpack
closes that connection only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from calico_lens.server import cut
from calico_lens.sources.base import ErrorSink, Source

log = logging.getLogger(__name__)

MESSAGE_KEYS = ("log", "msg", "message", "MESSAGE")
_MESSAGE_KEYS_RAW = tuple(k.encode() for k in MESSAGE_KEYS) + MESSAGE_KEYS
# deliver(source, text_of_lines, extra_ignored) → returns once the lines are counted
Deliver = Callable[[str, str, int], None]


class FrameError(ValueError):
    """A frame that is not Forward protocol, or one past a limit; the connection is closed and the
    frame counted under ``reason`` (a limit has its own, so that it shows when it bites)."""

    def __init__(self, message: str, reason: str = "malformed_frame"):
        super().__init__(message)
        self.reason = reason


@dataclass
class ForwardSettings:
    address: str  # "HOST:PORT" or "unix:PATH"
    shared_key: str = ""
    users: dict[str, str] = field(default_factory=dict)  # username → password (needs shared_key)
    tls_cert: str = ""
    tls_key: str = ""
    max_frame_bytes: int = 16 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024
    max_entries: int = 1_000_000  # records in one chunk (or body); more is refused, not decoded
    max_connections: int = 64
    max_buffered_bytes: int = 64 * 1024 * 1024  # frames held across connections, 2 bytes per byte read
    idle_timeout: float = 60.0
    frame_timeout: float = 30.0  # a frame once begun must arrive within this long (slow clients)
    hostname: str = field(default_factory=socket.gethostname)


def _text(v: Any) -> str | None:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else None


def records_to_text(entries: list[Any]) -> tuple[str, int, int]:
    """(lines, records with a message, records without one) of a list of entries.

    Both entry shapes hold the record at index 1. The common case, every record carrying its line
    under the same key, is one list comprehension; anything else takes the careful path."""
    if entries:
        try:
            first = entries[0][1]
            key = next(k for k in _MESSAGE_KEYS_RAW if k in first)
            lines = [e[1][key] for e in entries]
            joined = (b"\n" if isinstance(key, bytes) else "\n").join(lines)
            if joined.count(b"\n" if isinstance(key, bytes) else "\n") == len(lines) - 1:
                # No record held a newline of its own: one record, one line.
                text = joined.decode("utf-8", "replace") if isinstance(joined, bytes) else joined
                return text + "\n", len(lines), 0
        except (KeyError, TypeError, IndexError, StopIteration):
            pass
    return _records_to_text_careful(entries)


def _refusal(entry: Any) -> str:
    """Why an entry is not [time, record map], or "" when it is."""
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        return "entry is not [time, record]"
    return "" if isinstance(entry[1], dict) else "record is not a map"


def _records_to_text_careful(entries: list[Any]) -> tuple[str, int, int]:
    lines: list[str] = []
    ignored = 0
    for entry in entries:
        why = _refusal(entry)
        if why:
            raise FrameError(why)
        record = entry[1]
        msg = None
        for key in _MESSAGE_KEYS_RAW:
            msg = _text(record.get(key))
            if msg is not None:
                break
        if msg is None:
            ignored += 1  # a record we cannot read a line from: counted, not dropped silently
            continue
        # One record is one line; an embedded newline must not make it count twice.
        lines.append(msg.rstrip("\n").replace("\n", " "))
    text = "\n".join(lines) + "\n" if lines else ""
    return text, len(lines), ignored


ENTRY_BATCH = 5_000  # entries turned into lines at a time: a chunk is never held whole as Python objects
PIECE = 1 << 20  # bytes decompressed (or fed to the unpacker) at a time
HOLD_BYTES = 8 << 20  # lines of one chunk kept while it is checked; a bigger chunk is decoded twice instead


class Chunk:
    """The lines of one chunk (or body), proven whole before any is handed out: (lines, records
    without a line) batch by batch. A chunk whose lines fit in HOLD_BYTES keeps them from the one
    decode that checked it; a bigger one was only checked, and is decoded again as it is handed out,
    so memory per chunk stays near HOLD_BYTES whatever the chunk holds."""

    def __init__(self, parts: list[str] | None, ignored: int = 0,
                 again: Callable[[], Iterator[tuple[str, int]]] | None = None):
        self._parts, self._ignored, self._again = parts, ignored, again

    def batches(self) -> Iterator[tuple[str, int]]:
        if self._parts is None:
            assert self._again is not None
            yield from self._again()
            return
        parts, ignored = self._parts, self._ignored
        while parts:
            yield parts.pop(0), ignored  # popped: counted text is freed at once
            ignored = 0


def _entries(data: bytes, gz: bool, max_decompressed: int) -> Iterator[Any]:
    """The entries of a PackedForward stream, decoded a piece at a time; FrameError for bad msgpack,
    bad gzip or an entry cut short."""
    # The entries' times are never read, so EventTime (ext type 0) is turned into the cheapest
    # object a C-level two-argument constructor makes: a Python ext_hook per record cost ~1 µs.
    # raw=True keeps strings as bytes: the lines are decoded once per batch, not once per record.
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, ext_hook=slice, max_buffer_size=4 * PIECE)
    try:
        for piece in (_gunzip_pieces(data, max_decompressed) if gz else _slices(data)):
            unpacker.feed(piece)
            yield from unpacker
    except FrameError:  # the gzip reader's own (a ValueError too): its message and reason stand
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as e:  # TypeError: an unhashable map key
        raise FrameError(f"packed entries are not msgpack: {e}") from None
    # Was the last entry cut? tell() cannot say: the unpacker takes in a partial container. A nil byte
    # fed now reads back as a lone None only at an entry boundary; mid-entry it completes (or stays
    # inside) the partial entry. Refuse the chunk then, never ack a part of it.
    unpacker.feed(b"\xc0")
    try:
        tail = list(unpacker)
    except (ValueError, TypeError, msgpack.UnpackException):
        tail = []
    if tail != [None]:
        raise FrameError("packed entries end in an entry cut short")


def _batches(entries: Iterator[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for e in entries:
        batch.append(e)
        if len(batch) >= ENTRY_BATCH:
            yield batch
            batch = []
    yield batch


def checked_chunk(entries: Callable[[], Iterator[Any]], max_entries: int, hold: int = HOLD_BYTES) -> Chunk:
    """The lines of the entries ``entries()`` yields, decoded incrementally: memory grows with at most
    ``hold`` bytes of lines, not with the number of entries, and an entry or gzip member cut short, a
    bad entry or too many entries refuse the whole chunk (FrameError: never a partial count)."""
    parts: list[str] | None = []
    ignored = count = held = 0
    for batch in _batches(entries()):
        count += len(batch)
        if count > max_entries:
            raise FrameError(f"chunk holds more than {max_entries} entries", "too_many_entries")
        if parts is None:  # only checking: what records_to_text would refuse
            why = next(filter(None, map(_refusal, batch)), "")
            if why:
                raise FrameError(why)
            continue
        text, _, skipped = records_to_text(batch)
        ignored += skipped
        held += len(text)
        if held > hold:
            parts = None  # too big to hold: check the rest, then decode again as it is handed out
        else:
            parts.append(text)
    if parts is not None:
        return Chunk(parts, ignored)

    def again() -> Iterator[tuple[str, int]]:
        for batch in _batches(entries()):
            text, _, skipped = records_to_text(batch)
            yield text, skipped

    return Chunk(None, again=again)


def packed_text(data: bytes, gz: bool, max_decompressed: int, max_entries: int, hold: int = HOLD_BYTES) -> Chunk:
    """The lines of a PackedForward stream (or a msgpack body)."""
    return checked_chunk(lambda: _entries(data, gz, max_decompressed), max_entries, hold)


def _slices(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for i in range(0, len(view), PIECE):
        yield view[i:i + PIECE]


def _gunzip_pieces(data: bytes, limit: int) -> Iterator[bytes]:
    """One or more concatenated gzip members, decompressed a piece at a time, refusing to grow
    past ``limit`` and refusing a member cut short (it decompresses "fine" as far as it goes)."""
    total = 0
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        buf = data
        while True:
            try:
                out = d.decompress(buf, PIECE)
            except zlib.error as e:  # not gzip, or a corrupt member: the sender's fault, not a crash
                raise FrameError(f"gzip data is corrupt: {e}") from None
            total += len(out)
            if total > limit:
                raise FrameError(f"decompressed chunk exceeds {limit} bytes", "too_large_decompressed")
            if out:
                yield out
            buf = d.unconsumed_tail
            if d.eof or (not buf and len(out) < PIECE):
                break
        if not d.eof:
            raise FrameError("gzip data is cut short (no end-of-stream marker)")
        data = d.unused_data


def gunzip(data: bytes, limit: int) -> bytes:
    """All of a gzip body at once (JSON bodies), with the same limits."""
    return b"".join(_gunzip_pieces(data, limit))


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:  # EventTime: seconds and nanoseconds, big-endian
        return int.from_bytes(data[:4], "big") + int.from_bytes(data[4:], "big") / 1e9
    return msgpack.ExtType(code, data)


def frame_text(frame: Any, max_decompressed: int, max_entries: int) -> tuple[Chunk, dict]:
    """(the lines, options) of one Forward frame."""
    if not isinstance(frame, (list, tuple)) or len(frame) < 2 or not isinstance(frame[0], str):
        raise FrameError("frame is not [tag, ...]")
    body = frame[1]
    if isinstance(body, (int, float)) or (isinstance(body, msgpack.ExtType) and body.code == 0):
        # Message mode: [tag, time, record, option?]
        if len(frame) < 3:
            raise FrameError("message frame without a record")
        opts = frame[3] if len(frame) > 3 and isinstance(frame[3], dict) else {}
        text, _, ignored = records_to_text([[0, frame[2]]])
        return Chunk([text], ignored), opts
    opts = frame[2] if len(frame) > 2 and isinstance(frame[2], dict) else {}
    if isinstance(body, list):  # Forward mode: already decoded by the frame reader (bounded by its size)
        if len(body) > max_entries:
            raise FrameError(f"chunk holds more than {max_entries} entries", "too_many_entries")
        text, _, ignored = records_to_text(body)
        return Chunk([text], ignored), opts
    if isinstance(body, (bytes, bytearray)):  # PackedForward, maybe gzip-compressed
        # Entries are [time, record] or Fluent Bit 5's [[time, metadata], record]: the record is at
        # index 1 in both, which is all records_to_text reads.
        return packed_text(bytes(body), opts.get("compressed") == "gzip", max_decompressed, max_entries), opts
    raise FrameError("frame body is neither a time, entries nor packed entries")


def _sha512_hex(*parts: str | bytes) -> str:
    h = hashlib.sha512()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


class Receiver(Source):
    """What the Fluent Bit receivers share: settings, a deliver that returns once a batch is counted,
    counted refusals, and the TLS context when a certificate is configured."""

    # Chunks decoded at once across every connection of every receiver: a decoded chunk holds its
    # lines until they are counted, so this (not the connection count) bounds that memory.
    DECODING = threading.BoundedSemaphore(2)

    def __init__(self, settings: ForwardSettings, deliver: Deliver, error: ErrorSink,
                 reject: Callable[[str], None]):
        super().__init__(lambda s, t: deliver(s, t, 0), error)
        self.settings = settings
        self.deliver = deliver
        self.reject = reject  # reject(reason): counted cut-offs
        self.bound = threading.Event()
        self._waiting: dict[Any, float] = {}  # connection → since when it waits for bytes
        self._waiting_lock = threading.Lock()
        self.tls: ssl.SSLContext | None = None
        if settings.tls_cert:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(settings.tls_cert, settings.tls_key or None)
        # Frame bytes held across connections (read buffers and frames not yet decoded): without a
        # bound, every slot holding a frame of the largest size at once is max_connections × 2 × that.
        self.budget = settings.max_buffered_bytes
        self._buffered = 0
        self._budget_lock = threading.Lock()
        # Frames are read piece by piece, so connections that each hold part of the budget could all
        # be refused with none finished. One connection at a time may go on past it: a full budget
        # still finishes a frame, and the bound is the budget plus one frame's hold.
        self._past: Any = None

    # --- slots: on a node every client shares 127.0.0.1, so per-address limits cannot keep one peer
    # from holding them all; when they are full, the connection waiting longest gives its slot up.
    def waiting(self, conn: Any) -> None:
        """``conn`` waits for bytes (between frames or requests): its slot may be given away."""
        with self._waiting_lock:
            self._waiting.setdefault(conn, time.monotonic())

    def working(self, conn: Any) -> None:
        """``conn`` is receiving or being served (or is gone): its slot is its own."""
        with self._waiting_lock:
            self._waiting.pop(conn, None)

    def evict_idlest(self) -> bool:
        """Cut the connection that has waited longest (counted as evicted_idle); False when none waits."""
        with self._waiting_lock:
            if not self._waiting:
                return False
            conn = min(self._waiting, key=self._waiting.__getitem__)
            del self._waiting[conn]
        self.reject("evicted_idle")
        cut(conn)
        return True

    def take(self, n: int, conn: Any = None) -> bool:
        """Reserve ``n`` bytes of the frame budget shared by every connection; False when it is spent,
        unless ``conn`` (a connection reading a frame piece by piece) may go on past it."""
        with self._budget_lock:
            if self._buffered + n > self.budget:
                if conn is None or self._past not in (None, conn):
                    return False
                self._past = conn
            self._buffered += n
            return True

    def give(self, n: int, conn: Any = None) -> None:
        """Return ``n`` bytes; ``conn`` has finished (or dropped) its frame."""
        with self._budget_lock:
            self._buffered -= n
            if conn is not None and conn is self._past:
                self._past = None

    def deliver_all(self, chunk: Chunk) -> None:
        """Every batch of one chunk, each counted before this returns (the ack or 200 comes after)."""
        for text, ignored in chunk.batches():
            self.deliver(self.name, text, ignored)


class ForwardSource(Receiver):
    """Listens on TCP or a unix socket; one thread per connection, bounded in number."""

    name = "forward"

    def __init__(self, settings: ForwardSettings, deliver: Deliver, error: ErrorSink,
                 reject: Callable[[str], None]):
        super().__init__(settings, deliver, error, reject)
        self.sock: socket.socket | None = None
        self._active = 0
        self._lock = threading.Lock()
        self._held: dict[Any, int] = {}  # connection → frame-budget bytes it has taken

    @property
    def address(self) -> str:
        if self.sock is None:
            return ""
        if self.sock.family == socket.AF_UNIX:
            return "unix:" + self.settings.address[5:]
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def _listen(self) -> socket.socket:
        addr = self.settings.address
        if addr.startswith("unix:"):
            path = addr[5:]
            if os.path.exists(path):
                os.unlink(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            os.chmod(path, 0o660)
        else:
            host, _, port = addr.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
        s.listen(128)
        s.settimeout(0.2)
        return s

    def run(self) -> None:
        self.sock = self._listen()
        self.bound.set()
        try:
            while not self.stopped.is_set():
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                with self._lock:
                    if self._active >= self.settings.max_connections and not self.evict_idlest():
                        self.reject("too_many_connections")
                        conn.close()
                        continue
                    self._active += 1
                threading.Thread(target=self._serve, args=(conn,), daemon=True, name="forward-conn").start()
        finally:
            self.sock.close()
            if self.settings.address.startswith("unix:"):
                try:
                    os.unlink(self.settings.address[5:])
                except OSError:
                    pass

    # --- one connection ----------------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(self.settings.idle_timeout)
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(min(1.0, self.settings.idle_timeout))
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, ext_hook=_ext_hook,
                                        max_buffer_size=self.settings.max_frame_bytes)
            self._held[conn] = 0
            if self.settings.shared_key and not self._handshake(conn, unpacker):
                return
            self._frames(conn, unpacker)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            pass  # hung up before or during the handshake (a TCP probe): nothing was refused
        except ssl.SSLError:
            self.reject("tls_error")
        except OSError:
            pass  # the peer went away; nothing half-counted is acked
        finally:
            try:
                conn.close()
            finally:
                with self._lock:
                    self._active -= 1
                self.working(conn)
                self.give(self._held.pop(conn, 0), conn)

    def _read_obj(self, conn: socket.socket, unpacker: msgpack.Unpacker) -> Any:
        """The next msgpack object; raises on idle, slow or oversized input."""
        last = time.monotonic()
        started: float | None = None
        while True:
            try:
                return next(unpacker)
            except StopIteration:
                pass
            except msgpack.BufferFull:
                raise FrameError("frame_too_large", "frame_too_large") from None
            except (msgpack.FormatError, msgpack.StackError, msgpack.ExtraData, ValueError, TypeError) as e:
                # TypeError: a map whose key is a list or a map, which no dict can hold
                raise FrameError(f"malformed_msgpack: {e}", "malformed_msgpack") from None
            if started is None:  # between frames: this connection's slot may be given to a newcomer
                self.waiting(conn)
            try:
                data = conn.recv(1 << 18)
            except TimeoutError:
                now = time.monotonic()
                if started is not None and now - started > self.settings.frame_timeout:
                    raise FrameError("slow_client", "slow_client") from None
                if now - last > self.settings.idle_timeout:
                    raise FrameError("idle_timeout", "idle_timeout") from None
                if self.stopped.is_set():
                    raise FrameError("shutting_down", "shutting_down") from None
                continue
            self.working(conn)
            if not data:
                raise EOFError
            last = time.monotonic()
            if started is None:
                started = last
            elif last - started > self.settings.frame_timeout:
                raise FrameError("slow_client", "slow_client")
            # Read buffer, then the frame: two bytes held per byte read.
            if not self.take(2 * len(data), conn):
                # closed and counted: the client resends later
                raise FrameError("over_memory_budget", "over_memory_budget")
            self._held[conn] += 2 * len(data)
            try:
                unpacker.feed(data)
            except msgpack.BufferFull:
                raise FrameError("frame_too_large", "frame_too_large") from None

    def _handshake(self, conn: socket.socket, unpacker: msgpack.Unpacker) -> bool:
        s = self.settings
        nonce, salt = secrets.token_bytes(16), secrets.token_bytes(16)
        conn.sendall(msgpack.packb(["HELO", {"nonce": nonce, "auth": salt if s.users else b"", "keepalive": True}]))
        # PING is read raw: Fluent Bit sends its 16 random salt bytes as a msgpack *str*, which is not
        # UTF-8 (the frame unpacker, which decodes text, would refuse every Fluent Bit handshake).
        raw = msgpack.Unpacker(raw=True, max_buffer_size=1 << 16)
        try:
            ping = self._read_obj(conn, raw)
            rest = raw.read_bytes(1 << 16)  # anything a client sent right after PING is frames
            if rest:
                unpacker.feed(rest)
        except EOFError:
            return False  # hung up before PING (a TCP probe, say): nothing was refused
        except FrameError:
            self.reject("auth_failed")
            return False
        ok, reason = False, "malformed PING"
        if isinstance(ping, list) and len(ping) >= 4 and ping[0] == b"PING":
            host, key_salt = (v if isinstance(v, bytes) else b"" for v in ping[1:3])
            digest = _text(ping[3]) or ""
            ok = secrets.compare_digest(digest, _sha512_hex(key_salt, host, nonce, s.shared_key))
            reason = "" if ok else "shared key mismatch"
            if ok and s.users:
                user = _text(ping[4]) if len(ping) > 4 else ""
                pw_digest = _text(ping[5]) if len(ping) > 5 else ""
                want = s.users.get(user or "")
                ok = want is not None and secrets.compare_digest(pw_digest or "", _sha512_hex(salt, user or "", want))
                reason = "" if ok else "username/password mismatch"
            reply_digest = _sha512_hex(key_salt, s.hostname, nonce, s.shared_key) if ok else ""
        else:
            reply_digest = ""
        conn.sendall(msgpack.packb(["PONG", ok, reason, s.hostname, reply_digest]))
        if not ok:
            self.reject("auth_failed")
        return ok

    def _frames(self, conn: socket.socket, unpacker: msgpack.Unpacker) -> None:
        while not self.stopped.is_set():
            try:
                frame = self._read_obj(conn, unpacker)
            except EOFError:
                return
            except FrameError as e:
                self.reject(e.reason)
                log.info("forward: closing a connection: %s", e)
                return
            with self.DECODING:
                try:
                    st = self.settings
                    lines, opts = frame_text(frame, st.max_decompressed_bytes, st.max_entries)
                except FrameError as e:
                    self.reject(e.reason)
                    log.info("forward: closing a connection: %s", e)
                    return
                # Counted before the ack: the pipeline has seen every record once this returns.
                self.deliver_all(lines)
            del frame, lines  # counted and gone: its bytes go back to the budget
            self.give(self._held[conn], conn)
            self._held[conn] = 0
            chunk = opts.get("chunk")
            if chunk is not None:
                try:
                    conn.sendall(msgpack.packb({"ack": chunk}))
                except TimeoutError:  # the client does not read its acks: the records are counted, say so
                    self.reject("ack_not_read")
                    log.info("forward: closing a connection that does not read its acks")
                    return

