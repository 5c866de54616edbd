"""Throughput and memory of the flow pipeline, against mtail on the same file in the same run.

Prints figures; asserts nothing (speed lives here, not in tests). Steady-state figures are CPU time
of the pipeline alone (file read, decode, parse, enrich, count), best of three, without process
start-up; the replay figures include start-up.

    .venv/bin/python bench/bench_replay.py [--lines 500000] [--distinct 10000000] [--series 50000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "exporter"))

from calico_lens.demo.cluster import LOG_PREFIX, TrafficGenerator, snapshot  # noqa: E402


def cpu_of_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, result) of a command."""
    c0, t0 = cpu_of_children(), time.perf_counter()
    p = subprocess.run(cmd, capture_output=True)
    return time.perf_counter() - t0, cpu_of_children() - c0, p


def make_corpus(path: Path, lines: int, wrapper: str) -> None:
    """Generated lines as rsyslog writes them (syslog) or as /dev/kmsg hands them out (kmsg)."""
    gen = TrafficGenerator(seed=1, wrapper="bare" if wrapper == "kmsg" else wrapper)
    seq = 0
    with path.open("w") as fh:
        left = lines
        while left:
            n = min(50000, left)
            batch = gen.lines(n)
            if wrapper == "kmsg":
                batch = [f"5,{seq + i},{(seq + i) * 997 + 5_000_000_000},-;{ln}" for i, ln in enumerate(batch)]
            seq += n
            fh.write("\n".join(batch) + "\n")
            left -= n


def steady(label: str, corpus: Path, snap: Path | None, target: str, **cfg) -> None:
    """Lines per CPU second through the pipeline from a file, start-up excluded: best of three."""
    from calico_lens.agent import Agent, load_snapshot
    from calico_lens.config import Config
    from calico_lens.sources.tail import read_to_end

    best = 0.0
    for _ in range(3):
        agent = Agent(Config(log_prefix=LOG_PREFIX, max_series=200_000, **cfg))
        if snap is not None:
            load_snapshot(agent.store, str(snap))
        t0 = time.process_time()
        read_to_end(str(corpus), agent.pipeline.process, agent._error, "file")
        dt = time.process_time() - t0
        lines = sum(agent.pipeline.out.inputs.values())
        best = max(best, lines / dt)
    print(f"steady state, {label}: {best:,.0f} lines/s per core ({lines:,} lines, "
          f"{len(agent.pipeline.flows):,} series) ({target})")


def _cluster_snapshot(work: Path) -> Path:
    """The demo cluster as a snapshot file (what the corpus lines' addresses belong to)."""
    import yaml

    snap = work / "cluster.yaml"
    snap.write_text(yaml.safe_dump(snapshot()))
    return snap


def _write_lines(path: Path, lines: int, make) -> Path:
    """``lines`` lines from ``make(count, start)``, written 50,000 at a time."""
    with path.open("w") as fh:
        for start in range(0, lines, 50000):
            fh.write("\n".join(make(min(50000, lines - start), start)) + "\n")
    return path


def bench_new_flows(lines: int, work: Path) -> None:
    """Every line a new flow: a SYN scan through a Log rule (a new port each line), and a flood from
    a new source address each line."""
    from calico_lens.demo.cluster import port_scan

    snap = _cluster_snapshot(work)
    scan = _write_lines(work / "scan.log", lines, port_scan)
    steady("every line a new flow (port scan)", scan, snap, "target ≥ 300k")
    gen = TrafficGenerator(seed=3, distinct=True, wrapper="bare")
    flood = _write_lines(work / "flood.log", lines, lambda n, _start: gen.lines(n))
    steady("every line a new source address (external: the scanner folds it)", flood, snap, "target ≥ 300k")
    steady("every line a new source address and label set (external_by_ip)", flood, snap,
           "no target: an opt-in setting that makes every line a new series, up to the cap", external_by_ip=True)


def bench_snapshot(pods: int, work: Path) -> None:
    """Load a snapshot of ``pods`` pods shaped as kubectl prints them, as JSON and as YAML."""
    import json

    import yaml
    from calico_lens.agent import load_snapshot
    from calico_lens.kube.metadata import MetadataStore

    doc = {"apiVersion": "v1", "kind": "List", "items": [_pod(i) for i in range(pods)]}
    for form, text in (("json", json.dumps(doc)), ("yaml", yaml.safe_dump(doc))):
        path = work / f"snapshot.{form}"
        path.write_text(text)
        store = MetadataStore()
        t0 = time.process_time()
        load_snapshot(store, str(path))
        store.index()
        dt = time.process_time() - t0
        print(f"snapshot of {pods:,} pods ({form}, {len(text) / 1e6:.0f} MB) loaded and indexed in {dt:.2f} s "
              f"(target < 1 s)")


def _pod(i: int) -> dict:
    """A pod as `kubectl get pods -o json` shows one (without managedFields)."""
    ns, dep, h = f"ns{i % 50}", f"app{i % 700}", "7d4b9c6f5"
    ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    when = "2026-11-20T10:00:00Z"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{dep}-{h}-{i:05x}", "namespace": ns, "uid": f"0b7c3e9a-1c2d-4e5f-8a9b-{i:012d}",
                     "resourceVersion": str(100000 + i), "creationTimestamp": when,
                     "labels": {"app": dep, "pod-template-hash": h, "team": f"t{i % 9}"},
                     "annotations": {"cni.projectcalico.org/podIP": f"{ip}/32"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{dep}-{h}",
                                          "uid": "u", "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"nodeName": f"node-{i % 200}", "serviceAccountName": "default",
                 "containers": [{"name": "main", "image": f"registry.example.com/{dep}:1.2.3",
                                 "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                               "limits": {"memory": "256Mi"}}}]},
        "status": {"phase": "Running", "hostIP": "192.168.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
                   "qosClass": "Burstable", "startTime": when,
                   "conditions": [{"type": t, "status": "True", "lastTransitionTime": when}
                                  for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                   "containerStatuses": [{"name": "main", "ready": True, "restartCount": 0, "started": True,
                                          "image": f"registry.example.com/{dep}:1.2.3",
                                          "imageID": "sha256:" + "a" * 64, "containerID": "containerd://" + "b" * 64,
                                          "state": {"running": {"startedAt": when}}}]},
    }


def bench_throughput(lines: int, work: Path, wrapper: str) -> None:
    corpus = work / f"kern-{wrapper}.log"
    snap = _cluster_snapshot(work)
    make_corpus(corpus, lines, wrapper)
    size = corpus.stat().st_size / 1e6
    print(f"corpus: {lines} realistic Calico LOG lines ({wrapper} form, cut prefixes), {size:.0f} MB")
    cli = [str(ROOT / ".venv/bin/calico-lens"), "replay", "--snapshot", str(snap), "--log-prefix", LOG_PREFIX,
           str(corpus)]
    ours = run_and_report("calico-lens replay", cli, lines, "(enrichment included, process start included)")
    if ours is None:
        return
    steady(f"repeating flows ({wrapper})", corpus, snap, "target ≥ 1M")
    if shutil.which("mtail") is None:
        print("mtail: not installed (make setup installs it); no ratio")
        return
    progs = work / "progs"
    progs.mkdir(exist_ok=True)
    shutil.copy(ROOT / "bench/calico_flows.mtail", progs)
    theirs = run_and_report("mtail --one_shot", ["mtail", "--progs", str(progs), "--logs", str(corpus), "--one_shot",
                                                   "--one_shot_format", "prometheus", "--logtostderr"], lines)
    if theirs is not None:
        print(f"ratio (per core): calico-lens / mtail = {ours / theirs:.1f}x (target ≥ 9x; ≥ 400k lines/s per core)")


def run_and_report(label: str, cmd: list[str], lines: int, note: str = "") -> float | None:
    """Run a command over the corpus, print its rates; lines per CPU second, or None if it failed."""
    wall, cpu, p = timed(cmd)
    if p.returncode != 0:
        print(f"{label} failed:", p.stderr.decode()[-500:])
        return None
    per_core = lines / cpu
    print(f"{label}: {wall:.2f} s wall, {cpu:.2f} s CPU → {lines / wall:,.0f} lines/s, "
          f"{per_core:,.0f} lines/s per core {note}".rstrip())
    return per_core


def bench_memory(distinct: int, cap: int) -> None:
    """Feed `distinct` flows with distinct source addresses through the pipeline in-process."""
    code = f"""
import sys, time
sys.path.insert(0, {str(ROOT / 'exporter')!r})
sys.path.insert(0, {str(ROOT / 'bench')!r})
from procstat import peak_rss_mb, reset_peak_rss
reset_peak_rss()

from calico_lens.config import Config
from calico_lens.kube.metadata import MetadataStore
from calico_lens.pipeline import FlowPipeline
from calico_lens.demo.cluster import LOG_PREFIX, TrafficGenerator, snapshot
store = MetadataStore(); store.load_list(snapshot())
pipe = FlowPipeline(Config(log_prefix=LOG_PREFIX, max_series={cap}, source_granularity="pod",
                           external_by_ip=True), store)  # every flow a new label set: the cap must hold
gen = TrafficGenerator(seed=2, distinct=True, wrapper="bare")
left = {distinct}; t0 = time.perf_counter(); step = 0
while left:
    n = min(20000, left); left -= n
    pipe.process("file", "\\n".join(gen.lines(n)) + "\\n")
    step += 1
    if step % 100 == 0:
        rss = peak_rss_mb()
        print(f"  {{{distinct} - left:>10,}} flows fed, peak RSS {{rss:.0f}} MB, series {{len(pipe.flows)}}",
              flush=True)
rss = peak_rss_mb()
print(f"memory: {{{distinct}:,}} distinct flows → peak RSS {{rss:.0f}} MB (target < 150 MB), "
      f"series {{len(pipe.flows)}} (cap {cap}), overflow events {{pipe.flows.overflowed:,.0f}}, "
      f"{{time.perf_counter() - t0:.0f}} s")
"""
    subprocess.run([sys.executable, "-c", code], check=False)


def bench_scrape(series: int) -> None:
    from calico_lens.agent import Agent
    from calico_lens.config import Config

    agent = Agent(Config(max_series=series + 1))
    agent.pipeline.flows.add_counts(((f"ns{i % 50}", f"wl{i}", "pod", f"ns{i % 7}", f"dst{i % 300}", "pod",
                                      str(i % 1000), "tcp", "allow", "p", "default", "ingress"), 1.0)
                                    for i in range(series))
    for attempt in ("first", "next"):
        t0 = time.perf_counter()
        body = agent.exposition()
        dt = time.perf_counter() - t0
        print(f"scrape ({attempt}): {series:,} flow series → {len(body) / 1e6:.1f} MB in {dt:.3f} s (target < 0.5 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=500_000)
    ap.add_argument("--distinct", type=int, default=10_000_000, help="distinct flows for the memory run (0: skip)")
    ap.add_argument("--cap", type=int, default=20_000, help="series cap in the memory run")
    ap.add_argument("--series", type=int, default=50_000)
    ap.add_argument("--pods", type=int, default=10_000, help="pods in the snapshot-load run")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="cl-bench-") as d:
        for wrapper in ("kmsg", "syslog"):
            bench_throughput(args.lines, Path(d), wrapper)
        bench_new_flows(args.lines, Path(d))
        bench_snapshot(args.pods, Path(d))
    bench_scrape(args.series)
    if args.distinct:
        bench_memory(args.distinct, args.cap)


if __name__ == "__main__":
    main()
