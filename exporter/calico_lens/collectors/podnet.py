"""Per-pod network counters and TCP round-trip times, read straight from the kernel.

With the host PID namespace, every pod network namespace has at least one process (its pause
container). We find one process per namespace (deduplicated by the namespace's inode), map it to
its pod through the pod UID in its cgroup path and the metadata cache, and read that namespace's
``net/snmp``, ``net/netstat`` and ``net/dev``. Counters are turned into deltas per namespace and
added to per-workload totals, so a pod that restarts (new namespace, counters from zero) or goes
away never makes a total go down: Prometheus ``rate()`` stays right.

RTT: in each pod namespace, the smoothed RTT of established TCP sockets through sock_diag
(``INET_DIAG_INFO``, ``tcpi_rtt``), via pyroute2's DiagSocket, from a short-lived thread that
enters each namespace in turn (a namespace switch only affects the thread that makes it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass, field

from calico_lens.kube.endpoints import workload_of
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.metrics.histograms import HistogramTable
from calico_lens.metrics.table import LabelTable

log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
RTT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# (metric, direction or None) ← where the value comes from: (file, section, field)
COUNTERS: dict[tuple[str, str], tuple[str, str, str]] = {
    (names.TCP_SEGMENTS, "in"): ("snmp", "Tcp", "InSegs"),
    (names.TCP_SEGMENTS, "out"): ("snmp", "Tcp", "OutSegs"),
    (names.TCP_RETRANS, ""): ("snmp", "Tcp", "RetransSegs"),
    (names.TCP_RESETS, "out"): ("snmp", "Tcp", "OutRsts"),
    (names.TCP_RESETS, "in"): ("snmp", "Tcp", "EstabResets"),
    (names.TCP_FAILURES, ""): ("snmp", "Tcp", "AttemptFails"),
    (names.TCP_LISTEN_DROPS, ""): ("netstat", "TcpExt", "ListenDrops"),
    (names.NET_BYTES, "in"): ("dev", "rx", "bytes"),
    (names.NET_BYTES, "out"): ("dev", "tx", "bytes"),
    (names.NET_PACKETS, "in"): ("dev", "rx", "packets"),
    (names.NET_PACKETS, "out"): ("dev", "tx", "packets"),
    (names.NET_DROPS, "in"): ("dev", "rx", "drop"),
    (names.NET_DROPS, "out"): ("dev", "tx", "drop"),
}
TABLES = sorted({m for m, _ in COUNTERS})
HAS_DIRECTION = {names.TCP_SEGMENTS, names.TCP_RESETS, names.NET_BYTES, names.NET_PACKETS, names.NET_DROPS}


def setns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def parse_snmp(text: str) -> dict[tuple[str, str], int]:
    """/proc/net/snmp and /proc/net/netstat: pairs of header and value lines per section."""
    out: dict[tuple[str, str], int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[0::2], lines[1::2], strict=False):
        hname, _, hfields = head.partition(":")
        vname, _, vfields = vals.partition(":")
        if hname != vname:
            continue
        for k, v in zip(hfields.split(), vfields.split(), strict=False):
            try:
                out[(hname, k)] = int(v)
            except ValueError:
                continue
    return out


def parse_dev(text: str) -> dict[tuple[str, str], int]:
    """/proc/net/dev summed over every interface but loopback."""
    out: dict[tuple[str, str], int] = {}
    lines = text.splitlines()[2:]
    cols = ("bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast")
    tx_cols = ("bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed")
    for line in lines:
        iface, _, rest = line.partition(":")
        if iface.strip() == "lo":
            continue
        nums = rest.split()
        if len(nums) < 16:
            continue
        for i, c in enumerate(cols):
            out[("rx", c)] = out.get(("rx", c), 0) + int(nums[i])
        for i, c in enumerate(tx_cols):
            out[("tx", c)] = out.get(("tx", c), 0) + int(nums[8 + i])
    return out


@dataclass
class NetNS:
    inode: int
    pid: int
    pod_uid: str
    raw: dict[tuple[str, str], int] = field(default_factory=dict)  # last counters read


class PodNetCollector:
    """One collection round: find pod namespaces, read their counters and RTTs, add deltas."""

    def __init__(self, store: MetadataStore, max_series: int, ttl: float, proc: str = "/proc", rtt: bool = True,
                 error: callable = lambda reason, n=1: None):  # type: ignore[valid-type]
        self.store = store
        self.proc = proc
        self.rtt_enabled = rtt
        self.error = error
        self.tables = {m: LabelTable(m, ("namespace", "workload", "direction") if m in HAS_DIRECTION
                                     else ("namespace", "workload"), max_series, ttl, help_text=names.TCP_HELP[m])
                       for m in TABLES}
        self.known: dict[int, NetNS] = {}
        self.rtt = HistogramTable(RTT_BUCKETS, max_series)  # by (namespace, workload)
        self.rtt_min: float | None = None
        self.rtt_max: float | None = None
        self.rounds = 0
        self._host_inode = self._inode(1)

    def _inode(self, pid: int) -> int:
        try:
            return os.stat(f"{self.proc}/{pid}/ns/net").st_ino
        except OSError:
            return -1

    def _pods_by_uid(self) -> dict[str, dict]:
        return {(p.get("metadata") or {}).get("uid", ""): p for p in self.store.objects("pods")}

    def discover(self) -> dict[int, NetNS]:
        found: dict[int, NetNS] = {}
        try:
            pids = [int(d) for d in os.listdir(self.proc) if d.isdigit()]
        except OSError:
            self.error("proc_unreadable")
            return found
        for pid in pids:
            ino = self._inode(pid)
            if ino < 0 or ino == self._host_inode or ino in found:
                continue
            try:
                with open(f"{self.proc}/{pid}/cgroup") as fh:
                    m = _POD_UID.search(fh.read())
            except OSError:
                continue
            if m:
                found[ino] = NetNS(ino, pid, m.group(1).replace("_", "-"))
        return found

    def _read(self, pid: int) -> dict[tuple[str, str], int] | None:
        try:
            with open(f"{self.proc}/{pid}/net/snmp") as fh:
                snmp = parse_snmp(fh.read())
            with open(f"{self.proc}/{pid}/net/netstat") as fh:
                netstat = parse_snmp(fh.read())
            with open(f"{self.proc}/{pid}/net/dev") as fh:
                dev = parse_dev(fh.read())
        except OSError:
            return None
        raw = {}
        for key, (src, section, fld) in COUNTERS.items():
            table = {"snmp": snmp, "netstat": netstat, "dev": dev}[src]
            raw[key] = table.get((section, fld), 0)  # type: ignore[index]
        return raw  # type: ignore[return-value]

    def collect(self) -> None:
        pods = self._pods_by_uid()
        current = self.discover()
        rows: dict[str, dict[tuple[str, ...], int]] = {m: {} for m in TABLES}
        targets: list[tuple[NetNS, str, str]] = []
        for ino, ns in current.items():
            pod = pods.get(ns.pod_uid)
            if pod is None:
                continue  # not (yet) in the metadata cache: read next round
            meta = pod.get("metadata") or {}
            namespace, workload = meta.get("namespace", ""), workload_of(pod)
            raw = self._read(ns.pid)
            if raw is None:
                continue
            prev = self.known.get(ino)
            if prev is not None and prev.pod_uid == ns.pod_uid:
                ns.raw = prev.raw
            for (metric, direction), value in raw.items():
                last = ns.raw.get((metric, direction))
                # First sight: the counters so far belong to this pod too. A smaller value than
                # last time means the counter restarted: count from zero.
                delta = value if last is None or value < last else value - last
                if delta or last is None:  # first sight: the series exist from here on, zeros included
                    key = (namespace, workload, direction) if metric in HAS_DIRECTION else (namespace, workload)
                    rows[metric][key] = rows[metric].get(key, 0) + delta
            ns.raw = raw
            targets.append((ns, namespace, workload))
        for metric, r in rows.items():
            self.tables[metric].add_counts(r.items())
        self.known = {ino: ns for ino, ns in current.items() if ns.raw}
        if self.rtt_enabled and targets:
            self._collect_rtt(targets)
        self.rounds += 1

    def _collect_rtt(self, targets: list[tuple[NetNS, str, str]]) -> None:
        samples: list[tuple[str, str, float]] = []
        problem: list[str] = []

        def work() -> None:
            try:
                from pyroute2 import DiagSocket
            except ImportError:
                problem.append("pyroute2_missing")
                return
            for ns, namespace, workload in targets:
                try:
                    setns(f"{self.proc}/{ns.pid}/ns/net")
                    with DiagSocket() as ds:
                        ds.bind()
                        for fam in (socket.AF_INET, socket.AF_INET6):
                            for s in ds.get_sock_stats(family=fam, states=1 << 1, extensions=1 << 1):
                                info = s.get_attr("INET_DIAG_INFO")
                                if info is not None and info.get("tcpi_rtt"):
                                    samples.append((namespace, workload, info["tcpi_rtt"] / 1e6))
                except OSError as e:
                    problem.append(f"rtt_{type(e).__name__}")

        t = threading.Thread(target=work, name="rtt", daemon=True)
        t.start()
        t.join(30)
        for p in problem:
            self.error(p)
        for namespace, workload, rtt in samples:
            self.rtt.observe((namespace, workload), rtt)
        if samples:
            vals = [s[2] for s in samples]
            self.rtt_min, self.rtt_max = min(vals), max(vals)
