"""Forward receiver throughput: PackedForward chunks of realistic size into a real agent process.

Prints records/s per core of the agent (its own CPU time from /proc), acks included.

    .venv/bin/python bench/bench_forward.py [--records 500000] [--chunk 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "exporter"))
sys.path.insert(0, str(ROOT))

from calico_lens.demo.cluster import LOG_PREFIX, TrafficGenerator, snapshot  # noqa: E402
from procstat import cpu_seconds, peak_rss_mb  # noqa: E402

from tests.forward_client import ForwardClient, event_time  # noqa: E402
from tests.prom import free_port, wait_http  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--chunk", type=int, default=2000, help="records per PackedForward chunk")
    ap.add_argument("--memory", action="store_true", help="only the peak-memory figure under big chunks")
    args = ap.parse_args()
    if args.memory:
        return memory()
    gen = TrafficGenerator(seed=3, wrapper="bare")
    chunks = []
    left = args.records
    while left:
        n = min(args.chunk, left)
        left -= n
        stream = b"".join(msgpack.packb([event_time(time.time()), {"priority": 5, "msg": line}])
                          for line in gen.lines(n))
        chunks.append(stream)
    with tempfile.TemporaryDirectory() as d:
        snap = Path(d) / "cluster.yaml"
        snap.write_text(yaml.safe_dump(snapshot()))
        fport, mport = free_port(), free_port()
        proc = subprocess.Popen([sys.executable, "-m", "calico_lens", "agent", "--source", f"forward:127.0.0.1:{fport}",
                                 "--metrics-address", f"127.0.0.1:{mport}", "--snapshot", str(snap),
                                 "--log-prefix", LOG_PREFIX], cwd=ROOT, env={**os.environ,
                                                                             "PYTHONPATH": str(ROOT / "exporter")})
        try:
            wait_http(f"http://127.0.0.1:{mport}/readyz")
            time.sleep(0.5)
            c = ForwardClient(f"127.0.0.1:{fport}", timeout=60)
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            for i, stream in enumerate(chunks):
                c.send_raw(msgpack.packb(["calico.kernel", stream, {"chunk": str(i), "size": args.chunk}],
                                         use_bin_type=True))
                assert c.ack() == {"ack": str(i)}
            wall, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
            c.close()
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"forward: {args.records:,} records in {len(chunks)} PackedForward chunks of {args.chunk}, acked one by one")
    print(f"  {wall:.2f} s wall, agent CPU {cpu:.2f} s → {args.records / wall:,.0f} records/s, "
          f"{args.records / cpu:,.0f} records/s per core (target ≥ 300k)")




def memory() -> None:
    """Peak RSS of the agent under the hardening issue's chunks: a hostile 61 kB gzip chunk of 20M
    tiny entries, and a legitimate gzip chunk of 63 MiB of kernel lines, then all connections busy."""
    import gzip
    import threading

    gen = TrafficGenerator(seed=5, wrapper="bare")
    lines = gen.lines(20_000)
    legit = b"".join(msgpack.packb([0, {"log": ln}]) for ln in lines)
    legit = legit * (63 * 1024 * 1024 // len(legit))
    frames = {"hostile (20M empty entries, 61 kB gzip)": gzip.compress(b"\x92\x00\x80" * (20 << 20), 9),
              f"legitimate ({len(legit) >> 20} MiB of kernel lines, gzip)": gzip.compress(legit, 6)}
    fport, mport = free_port(), free_port()
    snap = Path(tempfile.mkdtemp()) / "cluster.yaml"
    snap.write_text(yaml.safe_dump(snapshot()))
    proc = subprocess.Popen([sys.executable, "-m", "calico_lens", "agent", "--source", f"forward:127.0.0.1:{fport}",
                             "--metrics-address", f"127.0.0.1:{mport}", "--log-prefix", LOG_PREFIX,
                             "--log-level", "warning", "--snapshot", str(snap)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "exporter")})
    try:
        wait_http(f"http://127.0.0.1:{mport}/healthz")
        print(f"forward memory: agent at start {peak_rss_mb(proc.pid):.0f} MB peak RSS")
        for what, z in frames.items():
            c = ForwardClient(f"127.0.0.1:{fport}", timeout=120)
            c.send_raw(msgpack.packb(["kernel", z, {"chunk": "m", "compressed": "gzip"}], use_bin_type=True))
            try:
                answer = c.ack()
            except (EOFError, ConnectionError):
                answer = "refused"
            c.close()
            print(f"  {what}: {answer}; peak RSS now {peak_rss_mb(proc.pid):.0f} MB")

        def send(z: bytes) -> None:
            c = ForwardClient(f"127.0.0.1:{fport}", timeout=300)
            c.send_raw(msgpack.packb(["kernel", z, {"chunk": "m", "compressed": "gzip"}], use_bin_type=True))
            try:
                c.ack()
            except (EOFError, ConnectionError):
                pass
            c.close()

        busy = [threading.Thread(target=send, args=(z,)) for z in list(frames.values()) * 4]
        for t in busy:
            t.start()
        for t in busy:
            t.join()
        print(f"  eight chunks at once: peak RSS now {peak_rss_mb(proc.pid):.0f} MB (chart limit 256 MiB)")

        acked = []

        def send_plain(data: bytes) -> None:
            try:
                c = ForwardClient(f"127.0.0.1:{fport}", timeout=300)
                c.send_raw(msgpack.packb(["kernel", data, {"chunk": "p"}], use_bin_type=True))
                acked.append(c.ack())
                c.close()
            except (EOFError, OSError):
                pass  # over the frame budget: closed and counted; Fluent Bit would resend

        plain = legit[: (16 << 20) - 4096]  # the largest frame the receiver takes, uncompressed
        plain = plain[: plain.rfind(b"\x92")]  # ends on an entry boundary
        busy = [threading.Thread(target=send_plain, args=(plain,)) for _ in range(8)]
        for t in busy:
            t.start()
        for t in busy:
            t.join()
        print(f"  eight uncompressed 16 MiB chunks at once: {len(acked)} acked, the rest over the frame budget; "
              f"peak RSS now {peak_rss_mb(proc.pid):.0f} MB (chart limit 256 MiB)")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
