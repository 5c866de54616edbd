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
from concurrent import futures
from dataclasses import dataclass

import grpc
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from calico_lens.metrics import names
from calico_lens.pipeline import RecordBatch
from calico_lens.sources.base import ErrorSink, Source
from calico_lens.sources.registry import FELIX_SOCKET

log = logging.getLogger(__name__)
SERVICE, METHOD = "goldmane.FlowCollector", "Connect"
ENABLE_HINT = ("turn on Felix's local flow reporter (Calico >= 3.30.1): kubectl patch felixconfiguration default "
               "--type merge -p '{\"spec\":{\"flowLogsLocalReporter\":\"Enabled\"}}'")

Deliver = Callable[[str, RecordBatch], None]


@dataclass
class FelixSettings:
    path: str = FELIX_SOCKET
    max_message_bytes: int = 1024 * 1024
    max_streams: int = 4
    idle_timeout: float = 900.0
    absent_after: float = 60.0


class _Stream:
    __slots__ = ("context", "last")

    def __init__(self, context: grpc.ServicerContext):
        self.context = context
        self.last = time.monotonic()


class FelixSource(Source):
    name = "felix"

    def __init__(self, settings: FelixSettings, deliver: Deliver, error: ErrorSink):
        super().__init__(lambda *_: None, error)
        self.settings = settings
        self.deliver = deliver
        self.connects = 0
        self.last_flow = 0.0  # wall time of the newest record, for the staleness gauge
        self._streams: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._since = time.monotonic()  # when a stream was last open (or the source started)
        self._problem = ""  # why the socket could not be served

    # -- the gRPC method ------------------------------------------------------------------------
    def _connect(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        s = _Stream(context)
        with self._lock:
            busy = len(self._streams) >= self.settings.max_streams
            if not busy:
                self._streams[id(s)] = s
                self.connects += 1
        if busy:  # counted here; grpc itself refuses only past max_streams + 1 at once
            self.error(self.name, "too_many_streams", 1)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"calico-lens: more than felix_max_streams={self.settings.max_streams} flow streams")
        log.info("felix: a flow stream connected")
        try:
            for raw in requests:
                s.last = time.monotonic()
                # Counted (parsed, a resend, or refused by reason: oversize, malformed, unknown_shape)
                # before the receipt; a refused record is receipted too, or Felix would resend it forever.
                self.deliver(self.name, RecordBatch((raw,)))
                self.last_flow = time.time()
                yield b""  # FlowReceipt{} is empty on the wire
        except Exception as e:  # a failed read, or a record that could not be counted: no receipt
            if context.is_active():
                self.error(self.name, "stream_error", 1)
                log.warning("felix: closing a flow stream: %s", e)
                # An error status, so that Felix reconnects and resends what got no receipt.
                context.abort(grpc.StatusCode.UNAVAILABLE, f"calico-lens: record not counted: {e}")
        finally:
            with self._lock:
                self._streams.pop(id(s), None)
                self._since = time.monotonic()

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

    def run(self) -> None:
        st = self.settings
        self._problem = ""  # a retry starts clean
        try:
            self._prepare()
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=st.max_streams + 2, thread_name_prefix="felix"),
                maximum_concurrent_rpcs=st.max_streams + 1,  # one more, so that a refusal is counted
                options=[("grpc.max_receive_message_length", 2 * st.max_message_bytes + 4096),
                         ("grpc.max_send_message_length", 1024),
                         ("grpc.so_reuseport", 0)])
            handler = grpc.method_handlers_generic_handler(
                SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(self._connect)})
            server.add_generic_rpc_handlers((handler,))
            # Owner only (Felix runs as root on the node): the socket is born 0600 under this umask,
            # so there is no moment when another local user could connect.
            old = os.umask(0o177)
            try:
                if not server.add_insecure_port("unix:" + st.path):
                    raise OSError(f"felix: cannot listen on {st.path}")
                server.start()
            finally:
                os.umask(old)
            os.chmod(st.path, 0o600)
        except (OSError, RuntimeError) as e:  # grpcio reports a failed bind as RuntimeError
            self._problem = str(e) if str(e).startswith("felix:") else f"felix: cannot listen on {st.path}: {e}"
            self.error(self.name, "listen_failed", 1)
            raise
        log.info("felix: listening on %s for goldmane.FlowCollector/Connect", st.path)
        try:
            while not self.stopped.wait(1.0):
                self._close_idle()
        finally:
            server.stop(grace=1).wait(5)
            try:
                os.unlink(st.path)
            except OSError:
                pass

    def _close_idle(self) -> None:
        cutoff = time.monotonic() - self.settings.idle_timeout
        with self._lock:
            idle = [s for s in self._streams.values() if s.last < cutoff]
        for s in idle:
            self.error(self.name, "idle_timeout", 1)
            s.context.cancel()

    # -- readiness and self-metrics -------------------------------------------------------------
    def not_ready(self) -> str:
        if self._problem:
            return self._problem
        with self._lock:
            open_now = len(self._streams)
            since = self._since
        absent = time.monotonic() - since
        if not open_now and absent > self.settings.absent_after:
            what = "has connected" if not self.connects else "has been connected"
            return (f"felix: no Felix {what} to {self.settings.path} for {absent:.0f} s; {ENABLE_HINT}, "
                    "and mount the node's /var/run/calico/flows into the agent")
        return ""

    def families(self) -> Iterator[Metric]:
        with self._lock:
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
