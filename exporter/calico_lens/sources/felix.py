"""Source ``felix``: Felix's own flow records over its node-local gRPC socket (Calico >= 3.30.1).

With FelixConfiguration ``flowLogsLocalReporter: Enabled`` Felix checks every 10 s for the unix
socket ``/var/run/calico/flows/flows.sock`` and, once it is there, calls
``goldmane.FlowCollector/Connect``: one ``FlowUpdate`` at a time, waiting for one ``FlowReceipt``.
After every (re)connection it resends the flows of its last five minutes; the record stage drops
those resends. A receipt goes out only once the record is counted (parsed, a resend, or refused
with its reason); if counting fails the stream ends without a receipt and Felix sends it again.

Messages reach us as raw bytes (no generated stubs on the hot path): decoding and refusing
them is the record stage's job, so garbage is counted, never a crash.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from grpc._cython import cygrpc  # grpcio's core binding, under grpc.server and grpc.aio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from calico_lens.metrics import names
from calico_lens.pipeline import RecordBatch
from calico_lens.sources.base import ErrorSink, Source
from calico_lens.sources.registry import FELIX_SOCKET

log = logging.getLogger(__name__)
METHOD_PATH = b"/goldmane.FlowCollector/Connect"
ENABLE_HINT = ("turn on Felix's local flow reporter (Calico >= 3.30.1): kubectl patch felixconfiguration default "
               "--type merge -p '{\"spec\":{\"flowLogsLocalReporter\":\"Enabled\"}}'")

Deliver = Callable[[str, RecordBatch], None]


def seen_file(socket_path: str) -> str:
    """Where the agent keeps what it counted for the next agent: beside the socket, on the node
    (the directory Felix and the agent share outlives the pod, and goes with a reboot as Felix's
    own memory of recent flows does)."""
    return os.path.join(os.path.dirname(socket_path) or ".", "calico-lens-seen-flows")


@dataclass
class FelixSettings:
    path: str = FELIX_SOCKET
    max_message_bytes: int = 1024 * 1024
    max_streams: int = 4
    idle_timeout: float = 900.0
    absent_after: float = 60.0


class _Stream:
    """One Connect call. It is the tag of its message batches; ``closed`` tags the batch that
    completes when the call is over (ended by either side, or cancelled)."""

    __slots__ = ("call", "closed", "cut", "last")

    def __init__(self, call: cygrpc.Call):
        self.call = call
        self.last = time.monotonic()
        self.closed = (self,)
        self.cut = False  # cancelled by us (idle); counted once


_NEW, _SHUTDOWN = object(), object()  # tags of an incoming call and of the server's shutdown


class FelixSource(Source):
    """A gRPC server on grpcio's own completion queue, served from this source's one thread.

    grpcio's ``grpc.server`` hands every message from its polling thread to a handler thread and
    every reply back, four thread switches per FlowUpdate; here the thread that polls also counts
    the record and starts the next batch (receipt out, next message in), which cuts the agent's CPU
    per record by about a fifth (bench/bench_felix.py). These are the calls ``grpc.server`` itself is
    built on."""

    name = "felix"

    def __init__(self, settings: FelixSettings, deliver: Deliver, error: ErrorSink):
        super().__init__(lambda *_: None, error)
        self.settings = settings
        self.deliver = deliver
        self.connects = 0
        self.last_flow = 0.0  # wall time of the newest record, for the staleness gauge
        self._streams: dict[int, _Stream] = {}  # changed only by the serving thread
        self._since = time.monotonic()  # when a stream was last open (or the source started)
        self._problem = ""  # why the socket could not be served
        self._stopping = False  # calls end because we stop: not counted as broken
        self._served = threading.Event()  # set while no serving loop runs
        self._served.set()

    # -- one Connect call -----------------------------------------------------------------------
    def _accept(self, call: cygrpc.Call, method: bytes) -> None:
        if method != METHOD_PATH:
            _finish(call, cygrpc.StatusCode.unimplemented, f"calico-lens serves only {METHOD_PATH.decode()}", True)
            return
        if len(self._streams) >= self.settings.max_streams:
            self.error(self.name, "too_many_streams", 1)
            _finish(call, cygrpc.StatusCode.resource_exhausted,
                    f"calico-lens: more than felix_max_streams={self.settings.max_streams} flow streams", True)
            return
        s = _Stream(call)
        self._streams[id(s)] = s
        self.connects += 1
        log.info("felix: a flow stream connected")
        call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(0),), s.closed)
        call.start_server_batch((cygrpc.SendInitialMetadataOperation(None, 0), cygrpc.ReceiveMessageOperation(0)), s)

    def _message(self, s: _Stream, ev: cygrpc.BatchOperationEvent) -> None:
        if not ev.success:  # the call broke or was cancelled: its close batch tidies up
            if not (s.cut or self._stopping):
                # Felix went without closing its side (a restart), or gRPC refused a message over its
                # own limit (the sender then sees RESOURCE_EXHAUSTED): counted, never silent.
                self.error(self.name, "stream_broken", 1)
                log.info("felix: a flow stream broke off (Felix restarted, or it sent a message over "
                         "2 × felix_max_message_bytes, which gRPC refuses before it is read)")
            return
        raw = ev.batch_operations[-1].message()
        if raw is None:  # Felix closed its side: end the call cleanly
            _finish(s.call, cygrpc.StatusCode.ok, "")
            return
        s.last = time.monotonic()
        try:
            # Counted (parsed, a resend, or refused by reason: oversize, malformed, unknown_shape)
            # before the receipt; a refused record is receipted too, or Felix would resend it forever.
            self.deliver(self.name, RecordBatch((raw,)))
        except Exception as e:  # a record that could not be counted: no receipt
            self.error(self.name, "stream_error", 1)
            log.warning("felix: closing a flow stream: %s", e)
            # An error status, so that Felix reconnects and resends what got no receipt.
            _finish(s.call, cygrpc.StatusCode.unavailable, f"calico-lens: record not counted: {e}")
            return
        self.last_flow = time.time()
        # FlowReceipt{} is empty on the wire; the next message is read in the same batch.
        s.call.start_server_batch((cygrpc.SendMessageOperation(b"", 0), cygrpc.ReceiveMessageOperation(0)), s)

    def _closed(self, s: _Stream) -> None:
        if self._streams.pop(id(s), None) is not None:
            self._since = time.monotonic()

    def _close_idle(self) -> None:
        cutoff = time.monotonic() - self.settings.idle_timeout
        for s in list(self._streams.values()):
            if s.last < cutoff and not s.cut:
                s.cut = True
                self.error(self.name, "idle_timeout", 1)
                s.call.cancel()

    # -- serving --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        path = self.settings.path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"felix: {path} exists and is not a socket; remove it or choose another path")
        os.unlink(path)  # a stale socket from an earlier run

    def _listen(self, cq: cygrpc.CompletionQueue) -> cygrpc.Server:
        st = self.settings
        self._prepare()
        server = cygrpc.Server((("grpc.max_receive_message_length", 2 * st.max_message_bytes + 4096),
                                ("grpc.max_send_message_length", 1024),
                                ("grpc.so_reuseport", 0)), False)
        server.register_completion_queue(cq)
        # Owner only (Felix runs as root on the node): the socket is born 0600 under this umask,
        # so there is no moment when another local user could connect.
        old = os.umask(0o177)
        try:
            if not server.add_http2_port(("unix:" + st.path).encode()):
                raise OSError(f"felix: cannot listen on {st.path}")
            server.start()
        finally:
            os.umask(old)
        os.chmod(st.path, 0o600)
        return server

    def _dispatch(self, ev: cygrpc.BaseEvent, server: cygrpc.Server, cq: cygrpc.CompletionQueue) -> None:
        tag = ev.tag
        if tag is _NEW:
            if not self._stopping:  # the next incoming call, unless the server is shutting down
                server.request_call(cq, cq, _NEW)
            if ev.success:
                self._accept(ev.call, ev.call_details.method)
        elif type(tag) is _Stream:
            try:
                self._message(tag, ev)
            except cygrpc.ExecuteBatchError as e:  # grpcio refused a batch: end this call, not the source
                self.error(self.name, "stream_error", 1)
                log.warning("felix: closing a flow stream: %s", e)
                tag.call.cancel()
        elif type(tag) is tuple:
            self._closed(tag[0])

    def run(self) -> None:
        self._problem = ""  # a retry starts clean
        cq = cygrpc.CompletionQueue()
        try:
            server = self._listen(cq)
        except (OSError, RuntimeError, ValueError) as e:
            why = str(e)
            self._problem = why if why.startswith("felix:") else f"felix: cannot listen on {self.settings.path}: {why}"
            self.error(self.name, "listen_failed", 1)
            raise
        log.info("felix: listening on %s for goldmane.FlowCollector/Connect", self.settings.path)
        timeout = cygrpc.CompletionType.queue_timeout
        server.request_call(cq, cq, _NEW)
        self._stopping = False
        self._served.clear()
        try:
            next_check = time.monotonic() + 1.0
            while not self.stopped.is_set():
                ev = cq.poll(time.time() + 0.5)
                if ev.completion_type != timeout:
                    self._dispatch(ev, server, cq)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 1.0
                    self._close_idle()
        finally:
            self._stop_serving(server, cq)
            try:
                os.unlink(self.settings.path)
            except OSError:
                pass
            self._served.set()

    def stop(self) -> None:
        """Stop, and wait (bounded) until the calls are ended and the socket file removed."""
        super().stop()
        self._served.wait(10)

    def _stop_serving(self, server: cygrpc.Server, cq: cygrpc.CompletionQueue) -> None:
        """No new calls; a second for receipts in flight to go out, then every call is cancelled
        (what got no receipt Felix sends again) and the queue drained."""
        self._stopping = True
        server.shutdown(cq, _SHUTDOWN)
        grace, end, down = time.monotonic() + 1.0, time.monotonic() + 6.0, False
        cancelled = False
        while time.monotonic() < end and not (down and not self._streams):
            if not cancelled and time.monotonic() >= grace:
                server.cancel_all_calls()
                cancelled = True
            ev = cq.poll(time.time() + 0.2)
            if ev.completion_type == cygrpc.CompletionType.queue_timeout:
                continue
            if ev.tag is _SHUTDOWN:
                down = True
            else:
                self._dispatch(ev, server, cq)
        self._streams.clear()
        self._since = time.monotonic()
        server.destroy()

    # -- readiness and self-metrics -------------------------------------------------------------
    def not_ready(self) -> str:
        if self._problem:
            return self._problem
        open_now, since = len(self._streams), self._since
        absent = time.monotonic() - since
        if not open_now and absent > self.settings.absent_after:
            what = "has connected" if not self.connects else "has been connected"
            return (f"felix: no Felix {what} to {self.settings.path} for {absent:.0f} s; {ENABLE_HINT}, "
                    "and mount the node's /var/run/calico/flows into the agent")
        return ""

    def families(self) -> Iterator[Metric]:
        streams = len(self._streams)
        g = GaugeMetricFamily(names.FELIX_STREAMS, "Felix flow streams connected to the felix source now.")
        g.add_metric((), streams)
        yield g
        c = CounterMetricFamily(names.FELIX_CONNECTS, "Flow streams Felix opened (reconnects included).")
        c.add_metric((), self.connects)
        yield c
        t = GaugeMetricFamily(names.FELIX_LAST_FLOW, "Unix time the newest Felix flow record arrived (0: none yet).")
        t.add_metric((), self.last_flow)
        yield t


def _finish(call: cygrpc.Call, code: cygrpc.StatusCode, details: str, refused: bool = False) -> None:
    """End a call with a status; a call ``refused`` at once has sent no headers and awaits no close
    yet. The batch completes with no tag: nothing waits on it."""
    status = cygrpc.SendStatusFromServerOperation(None, code, details.encode(), 0)
    ops = ((cygrpc.SendInitialMetadataOperation(None, 0), cygrpc.ReceiveCloseOnServerOperation(0), status)
           if refused else (status,))
    call.start_server_batch(ops, None)
