"""HTTP ingest for Fluent Bit's ``http`` output: POST bodies of records, answered 200 once counted.

Formats, told apart by the body itself (Content-Type only breaks a tie): ``msgpack`` (the output's
default: the chunk as Fluent Bit stores it, ``[time, record]`` or ``[[time, metadata], record]``
entries back to back), ``json`` (one array of records), ``json_lines`` and ``json_stream`` (records
one after another, with or without newlines). ``compress gzip`` is undone within the decompressed
limit. A record's line is read from the same keys as over Forward; a record without one counts as
ignored. The reply comes only after the pipeline counted the batch, so Fluent Bit's retry on a
non-2xx answer gives at-least-once delivery, as the Forward ack does.

Optional basic auth (``http_User``/``http_Passwd``) and TLS. Limits on body size, decompressed size,
connections and idle time; every refusal is counted in ``calico_lens_source_errors_total``.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from calico_lens.server import cut, send_body
from calico_lens.sources.base import ErrorSink
from calico_lens.sources.forward import (
    Chunk,
    Deliver,
    ForwardSettings,
    FrameError,
    Receiver,
    checked_chunk,
    gunzip,
    packed_text,
)

log = logging.getLogger(__name__)


_WS = re.compile(r"[ \t\r\n]*")


def _json_records(text: str) -> Iterator[Any]:
    """Records of a json array, json_lines or json_stream body, one at a time: an array's elements
    are decoded one by one, so a body of millions of tiny records never exists as one Python list."""
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if pos == end:
            return
        if text[pos] != "[":
            value, pos = decoder.raw_decode(text, pos)
            yield value
            continue
        pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
        if text.startswith("]", pos):
            pos += 1
            continue
        while True:
            value, pos = decoder.raw_decode(text, pos)
            yield value
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise ValueError(f"expected ',' or ']' at character {pos}")


def _json_entries(text: str) -> Iterator[tuple[int, Any]]:
    try:
        for record in _json_records(text):
            yield 0, record
    except ValueError as e:
        raise FrameError(f"body is not JSON: {e}") from None
    except RecursionError:  # [[[[... nested deeper than the decoder goes
        raise FrameError("body is JSON nested too deep") from None


def _head(body: bytes, gz: bool) -> bytes:
    """The first bytes of a body, decompressed if need be, to tell JSON from msgpack."""
    if not gz:
        return body[:64]
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, 64)
    except zlib.error:
        return b""  # not gzip: packed_text says so


def body_text(body: bytes, gz: bool, content_type: str, max_decompressed: int, max_entries: int) -> Chunk:
    """The lines of a request body; FrameError when it is neither JSON nor msgpack, or cut short.
    Both are decoded incrementally, like PackedForward chunks."""
    if "msgpack" not in content_type and _head(body, gz).lstrip()[:1] in (b"[", b"{"):
        data = gunzip(body, max_decompressed) if gz else body
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FrameError(f"body is not JSON: {e}") from None
        del data
        return checked_chunk(lambda: _json_entries(text), max_entries)
    return packed_text(body, gz, max_decompressed, max_entries)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, source: HttpIngestSource):
        self.address_family = family
        self.source = source
        self.slots = threading.BoundedSemaphore(source.settings.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Slots full: the connection that has waited longest for bytes (an idle keep-alive, a body
        # that does not come) gives its slot to the newcomer, which waits for its thread to let go.
        if not self.slots.acquire(blocking=False) and not (self.source.evict_idlest()
                                                           and self.slots.acquire(timeout=2.0)):
            self.source.reject("too_many_connections")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection that broke (TLS refused, peer gone): counted where it is known, not printed

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()
            self.source.working(request)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # Fluent Bit keeps the connection alive between flushes

    def setup(self) -> None:
        src = self.server.source
        self.request.settimeout(src.settings.idle_timeout)
        if src.tls is not None:  # the handshake runs here, in this connection's thread
            try:
                self.request = src.tls.wrap_socket(self.request, server_side=True)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
                raise  # hung up before the handshake (a TCP probe): nothing was refused
            except (ssl.SSLError, OSError):
                src.reject("tls_error")
                raise
        self.timeout = src.settings.idle_timeout
        super().setup()

    def log_message(self, *args: object) -> None:  # refusals are counted, not logged per request
        pass

    def handle_one_request(self) -> None:
        self.server.source.waiting(self.request)  # waiting for the next request line: its slot may be taken
        super().handle_one_request()

    def parse_request(self) -> bool:
        self.server.source.working(self.request)
        return super().parse_request()

    def _read_body(self, size: int) -> bytes:
        """The body, read as it arrives; while no bytes come the connection counts as waiting."""
        parts: list[bytes] = []
        got = 0
        while got < size:
            self.server.source.waiting(self.request)
            try:
                chunk = self.rfile.read1(min(size - got, 1 << 16))
            finally:
                self.server.source.working(self.request)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _refuse(self, code: int, reason: str, close: bool = True) -> None:
        """A counted refusal; ``close`` ends the connection after it (the body was not read)."""
        self.server.source.reject(reason)
        if close:
            self.close_connection = True
        send_body(self, code, reason.encode() + b"\n")

    def _cut(self, late: threading.Event) -> None:
        """The body deadline passed: counted now, before the client can see the connection end."""
        late.set()
        self.server.source.reject("slow_client")
        cut(self.request)

    def do_GET(self) -> None:  # a health probe on the ingest port
        send_body(self, 200, b"ok\n")

    def do_POST(self) -> None:
        src = self.server.source
        s = src.settings
        if s.users and not src.authorised(self.headers.get("Authorization", "")):
            self._refuse(401, "auth_failed")
            return
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._refuse(411, "no_content_length")  # Fluent Bit always sends one; chunked is refused
            return
        if size > s.max_frame_bytes or size < 0:
            self._refuse(413, "frame_too_large")
            return
        # Bodies being read share the receiver's frame budget with each other, as Forward frames do:
        # past it the request is refused (503: Fluent Bit sends that chunk again later), counted.
        if not src.take(2 * size):
            self._refuse(503, "over_memory_budget")
            return
        try:
            self._body(src, size)
        finally:
            src.give(2 * size)

    def _body(self, src: HttpIngestSource, size: int) -> None:
        """Read, decode and count one body; answer 200 only once every record is counted."""
        s = src.settings
        # The whole body within frame_timeout: the socket's timeout alone restarts with every byte, so
        # a body trickled at 1 byte/s would hold its slot for ever.
        late = threading.Event()
        deadline = threading.Timer(s.frame_timeout, self._cut, (late,))
        deadline.daemon = True
        deadline.start()
        try:
            body = self._read_body(size)
        except TimeoutError:
            self.close_connection = True
            src.reject("slow_client")
            return
        except OSError:
            body = b""
        finally:
            deadline.cancel()
        if late.is_set() or len(body) < size:  # cut at the deadline (counted there), or the client went away
            self.close_connection = True
            return  # nothing counted, nothing answered: the client sends the body again
        with src.DECODING:
            try:
                chunk = body_text(body, "gzip" in self.headers.get("Content-Encoding", ""),
                                  self.headers.get("Content-Type", ""), s.max_decompressed_bytes, s.max_entries)
            except FrameError as e:  # a limit: 413 and its own reason (as a body announced too large)
                limit = e.reason != "malformed_frame"
                self._refuse(413 if limit else 400, e.reason if limit else "malformed_body", close=False)
                log.info("http: refused a body: %s", e)
                return
            try:
                src.deliver_all(chunk)  # returns once every batch is counted
            except OSError:
                send_body(self, 503, b"not counted; send it again\n")  # Fluent Bit retries the chunk
                return
        send_body(self, 200, b"ok\n")


class HttpIngestSource(Receiver):
    """Listens on HOST:PORT; one thread per connection, bounded in number."""

    name = "http"

    def __init__(self, settings: ForwardSettings, deliver: Deliver, error: ErrorSink,
                 reject: Callable[[str], None]):
        super().__init__(settings, deliver, error, reject)
        self.server: _Server | None = None

    def authorised(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        want = self.settings.users.get(user)
        return want is not None and hmac.compare_digest(want.encode(), password.encode())

    @property
    def address(self) -> str:
        if self.server is None:
            return ""
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def run(self) -> None:
        host, _, port = self.settings.address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.server = _Server((host, int(port)), family, self)
        self.bound.set()
        watcher = threading.Thread(target=self._stop_when_told, daemon=True, name="http-ingest-stop")
        watcher.start()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.server.server_close()

    def _stop_when_told(self) -> None:
        self.stopped.wait()
        if self.server is not None:
            self.server.shutdown()
