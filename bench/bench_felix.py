"""The felix source: FlowUpdates per second per core through the real socket with receipts, the
decode → aggregate stage alone, and resident memory with 1M distinct flow keys.

    .venv/bin/python bench/bench_felix.py [--updates 60000] [--clients 2] [--keys 1000000]

End to end, stand-in Felix clients (the real grpcio client, one FlowUpdate then one FlowReceipt, as
Felix does) run in their own processes; the figure is the agent's own CPU time from /proc.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "exporter"))
sys.path.insert(0, str(ROOT))

from calico_lens.config import Config  # noqa: E402
from calico_lens.demo.felix import StandInFelix, flow, hit, updates  # noqa: E402
from calico_lens.kube.metadata import MetadataStore  # noqa: E402
from calico_lens.pipeline import FlowPipeline, RecordBatch  # noqa: E402
from procstat import cpu_seconds, peak_rss_mb, reset_peak_rss  # noqa: E402

from tests.prom import free_port, wait_http  # noqa: E402


def sample_flows(n: int, keys: int, start: int = 1_800_000_000, offset: int = 0) -> list[bytes]:
    """n realistic updates over ``keys`` distinct flow keys, each key once per 15 s interval
    (``offset`` names the source workloads from another range, for as many distinct keys as wanted)."""
    allow = [hit("gnp", "platform-pass", "pass", tier="platform", index=0),
             hit("np", "allow-web", "allow", "shop", index=1, rule=2)]
    staged = [allow[0], hit("snp", "lockdown", "deny", "shop", index=1)]
    out = []
    for i in range(n):
        k = i % keys
        out.append(flow(("pod", f"ns{k % 50}", f"client{offset + k}-7d9c5b8f4-*"),
                        ("pod", "shop", f"web{k % 300}-5f6d7c8b9-*"), 8080 + k % 7, "allow",
                        "src" if k % 2 else "dst", start + 15 * (i // keys), enforced=allow,
                        pending=staged if k % 5 == 0 else allow,
                        src_labels=["app=client", "pod-template-hash=7d9c5b8f4"],
                        dst_labels=["app=web", "pod-template-hash=5f6d7c8b9"], packets=(12, 10),
                        bytes_=(12000, 1500), connections=(3, 2, 1)))
    return list(updates(out))


def _client(sock: str, raws: list[bytes]) -> None:
    felix = StandInFelix(sock)
    for raw in raws:
        felix.send_raw(raw, cache=False)
    felix.close()


def _drive(cmd: list[str], sock: str, raws: list[bytes], clients: int, ready=None, **popen) -> tuple[float, float]:
    """Start a server process, then stand-in Felix processes sending ``raws`` to its socket:
    (wall seconds, the server's CPU seconds) while they sent."""
    proc = subprocess.Popen(cmd, **popen)
    try:
        if ready is not None:
            ready()
        while not os.path.exists(sock):
            time.sleep(0.05)
        ctx = mp.get_context("spawn")
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        workers = [ctx.Process(target=_client, args=(sock, raws[i::clients])) for i in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(10)


def end_to_end(n: int, clients: int) -> None:
    raws = sample_flows(n, keys=2000)
    with tempfile.TemporaryDirectory() as d:
        sock, mport = f"{d}/flows.sock", free_port()
        wall, cpu = _drive([sys.executable, "-m", "calico_lens", "agent", "--source", f"felix:unix:{sock}",
                            "--metrics-address", f"127.0.0.1:{mport}", "--log-level", "warning"], sock, raws, clients,
                           ready=lambda: wait_http(f"http://127.0.0.1:{mport}/healthz"), cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "exporter"),
                                "CALICO_LENS_FELIX_MAX_STREAMS": str(clients)})
    print(f"felix end to end: {n:,} FlowUpdates from {clients} stand-in Felix process(es), a receipt each")
    print(f"  {wall:.2f} s wall, agent CPU {cpu:.2f} s → {n / wall:,.0f} updates/s, "
          f"{n / cpu:,.0f} updates/s per core of the agent (target ≥ 50k)")
    if clients == 1:  # as on a node: one Felix, one stream, each update waiting for its receipt
        print(f"  one stream: a round trip every {wall / n * 1e6:,.0f} µs (the stand-in client is Python grpcio; "
              "Felix's Go client spends less on its side)")


_EMPTY_SERVER = """
import sys
from concurrent import futures
import grpc
def connect(requests, context):
    for _ in requests:
        yield b""  # a receipt for each message, nothing else
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "goldmane.FlowCollector", {"Connect": grpc.stream_stream_rpc_method_handler(connect)}),))
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""

_SOURCE_ALONE = """
import signal, sys, threading
from calico_lens.sources.felix import FelixSettings, FelixSource
src = FelixSource(FelixSettings(path=sys.argv[1]), lambda *_: None, lambda *_: None)  # counts nothing
signal.signal(signal.SIGTERM, lambda *_: src.stop())
t = threading.Thread(target=src.run)
t.start()
while t.is_alive():
    t.join(0.5)
"""


def grpcio_alone(n: int, clients: int) -> None:
    """The same clients against servers that do nothing but answer: grpcio's public server (a
    thread pool), and the agent's own serving loop on grpcio's completion queue with the record stage
    left out. The second is the floor the agent stands on."""
    raws = sample_flows(n, keys=2000)
    for what, script in (("grpc.server, a handler that only answers", _EMPTY_SERVER),
                         ("the felix source's serving loop, counting nothing", _SOURCE_ALONE)):
        with tempfile.TemporaryDirectory() as d:
            sock = f"{d}/empty.sock"
            _, cpu = _drive([sys.executable, "-c", script, sock], sock, raws, clients,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "exporter")})
        print(f"{what}: {n / cpu:,.0f} messages/s per core of the server")


def stage_only(n: int, batch: int = 1, keys: int = 2000) -> None:
    """Steady state, as on a node: Felix sends each of ``keys`` flow keys once per flush interval.
    The first interval (every key new: labels computed, rows bound) is timed apart."""
    raws = sample_flows(keys + n, keys=keys)
    pipe = FlowPipeline(Config(), MetadataStore())

    def run(part: list[bytes]) -> float:
        t0 = time.process_time()
        for i in range(0, len(part), batch):
            pipe.accept("felix", RecordBatch(part[i:i + batch]))
        return time.process_time() - t0

    first, steady = run(raws[:keys]), run(raws[keys:])
    note = "target ≥ 300k" if batch > 1 else "one call per record, as the socket delivers them"
    print(f"felix decode → aggregate, batches of {batch}: {n / steady:,.0f} updates/s per core in steady state "
          f"({note}); first interval, every key new: {keys / first:,.0f} updates/s")


def _memory(keys: int, q) -> None:
    reset_peak_rss()
    pipe = FlowPipeline(Config(), MetadataStore())
    step = 5_000
    for base in range(0, keys, step):
        pipe.accept("felix", RecordBatch(sample_flows(step, keys=step, start=1_800_000_000 + base, offset=base)))
    q.put((peak_rss_mb(), pipe.out.inputs))


def memory(keys: int) -> None:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_memory, args=(keys, q))
    p.start()
    rss, inputs = q.get()
    p.join()
    print(f"felix memory: {keys:,} distinct flow keys → peak RSS {rss:,.0f} MB (target < 200 MB); "
          f"counted {inputs}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=60_000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--only", choices=("stage", "socket", "memory"), help="run one figure")
    a = ap.parse_args()
    if a.only in (None, "stage"):
        stage_only(a.updates)
        stage_only(a.updates, batch=256)
    if a.only in (None, "socket"):
        end_to_end(a.updates // 2, 1)
        end_to_end(a.updates, a.clients)
        grpcio_alone(a.updates, a.clients)
    if a.only in (None, "memory"):
        memory(a.keys)
