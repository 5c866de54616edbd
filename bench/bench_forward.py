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
from procstat import cpu_seconds  # noqa: E402

from tests.forward_client import ForwardClient, event_time  # noqa: E402
from tests.prom import free_port, wait_http  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--chunk", type=int, default=2000, help="records per PackedForward chunk")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
