"""CPU time of one per-pod collection round (counters + sock_diag RTT) for N pod namespaces.

Builds N pods on the node harness (root needed), each with a pause process and an idle TCP
connection, then times collection rounds. Prints figures; asserts nothing.

    sudo .venv/bin/python bench/bench_podnet.py [--pods 100]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "exporter"))

from calico_lens.collectors.podnet import PodNetCollector  # noqa: E402
from calico_lens.demo.node import Node  # noqa: E402
from calico_lens.kube.metadata import MetadataStore  # noqa: E402

from tests.e2e import scenario  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with Node("iptables", tag="bench") as node:
        for i in range(args.pods):
            node.add_pod(f"p{i}-0", f"ns{i % 10}", f"w{i}", owner_kind="StatefulSet")
        print(f"built {args.pods} pod namespaces in {time.perf_counter() - t0:.0f} s")
        store = MetadataStore()
        store.load_list(scenario.snapshot(node))
        for rtt in (False, True):
            pn = PodNetCollector(store, 100_000, 0, rtt=rtt)
            pn.collect()  # warm: first sight of every namespace
            c0, w0 = cpu(), time.perf_counter()
            for _ in range(args.rounds):
                pn.collect()
            c, w = (cpu() - c0) / args.rounds, (time.perf_counter() - w0) / args.rounds
            print(f"one round, {len(pn.known)} pod namespaces, RTT {'on' if rtt else 'off'}: "
                  f"{c * 1e3:.0f} ms CPU, {w * 1e3:.0f} ms wall")


if __name__ == "__main__":
    main()
