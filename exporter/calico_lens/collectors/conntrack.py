"""Traffic volume and unanswered connections from the host's connection tracking table.

Calico's connection tracking lives in the host network namespace. Each round dumps the table
through netlink (pyroute2's Conntrack): with ``net.netfilter.nf_conntrack_acct=1`` every entry
carries byte and packet counters for both directions; the growth since the last round is added
to per-flow totals (entries come and go, the totals only grow). An entry that never saw a reply
(no SEEN_REPLY) and is older than ``unreplied_after`` seconds is counted once in
``calico_lens_flows_unreplied_total`` — the "bytes in = 0" signal of an upstream firewall or a dead
service. The agent does not change sysctls: without accounting the byte metrics stay at zero.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from calico_lens.collectors.podnet import setns
from calico_lens.enrich import PROTOCOLS
from calico_lens.kube import endpoints as ep
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.metrics.table import LabelTable

log = logging.getLogger(__name__)
IPS_SEEN_REPLY = 1 << 1
_PORTED = {6, 17, 132, 136}
Granularity = Callable[[ep.Endpoint, str], tuple[str, str, str]]


def _attr(msg: dict, *path: str) -> object:
    cur: object = msg
    for name in path:
        if not isinstance(cur, dict):
            return None
        cur = next((v for k, v, *_ in cur.get("attrs", []) if k == name), None)
    return cur


def entry_of(msg: dict) -> tuple | None:
    """(id, src, dst, proto, dport, status, bytes out, packets out, bytes in, packets in) of a dump message."""
    ip = _attr(msg, "CTA_TUPLE_ORIG", "CTA_TUPLE_IP")
    proto = _attr(msg, "CTA_TUPLE_ORIG", "CTA_TUPLE_PROTO")
    if not isinstance(ip, dict) or not isinstance(proto, dict):
        return None
    src = _attr(ip, "CTA_IP_V4_SRC") or _attr(ip, "CTA_IP_V6_SRC")
    dst = _attr(ip, "CTA_IP_V4_DST") or _attr(ip, "CTA_IP_V6_DST")
    num = _attr(proto, "CTA_PROTO_NUM")
    if not src or not dst or num is None:
        return None
    dport = _attr(proto, "CTA_PROTO_DST_PORT") if num in _PORTED else None

    def counters(which: str) -> tuple[int, int]:
        c = _attr(msg, which)
        if not isinstance(c, dict):
            return 0, 0
        return int(_attr(c, "CTA_COUNTERS_BYTES") or 0), int(_attr(c, "CTA_COUNTERS_PACKETS") or 0)

    bo, po = counters("CTA_COUNTERS_ORIG")
    bi, pi = counters("CTA_COUNTERS_REPLY")
    return (_attr(msg, "CTA_ID"), str(src), str(dst), int(num), "" if dport is None else str(dport),
            int(_attr(msg, "CTA_STATUS") or 0), bo, po, bi, pi)


class ConntrackCollector:
    def __init__(self, store: MetadataStore, side: Granularity, max_series: int, ttl: float, netns: str = "",
                 unreplied_after: float = 5.0, error: Callable[..., None] = lambda reason, n=1: None,
                 volume: bool = True):
        self.store = store
        self.side = side
        self.netns = netns
        self.unreplied_after = unreplied_after
        self.error = error
        labels = names.FLOW_VOLUME_LABELS
        self.bytes = LabelTable(names.FLOW_BYTES, labels, max_series, ttl, help_text=names.HELP[names.FLOW_BYTES])
        self.packets = LabelTable(names.FLOW_PACKETS, labels, max_series, ttl,
                                  help_text=names.HELP[names.FLOW_PACKETS])
        self.unreplied = LabelTable(names.FLOWS_UNREPLIED, names.FLOW_LABELS, max_series, ttl,
                                    help_text=names.TCP_HELP[names.FLOWS_UNREPLIED])
        # Without volume (Felix's records carry it), only unreplied connections are counted here.
        self.volume = volume
        self.tables = [self.bytes, self.packets, self.unreplied] if volume else [self.unreplied]
        self._last: dict[object, tuple[int, int, int, int]] = {}
        self._first_seen: dict[object, float] = {}
        self._counted_unreplied: set[object] = set()
        self.rounds = 0

    def _dump(self) -> list[dict]:
        out: list[dict] = []
        problem: list[str] = []

        def work() -> None:
            try:
                if self.netns:
                    setns(self.netns)
                from pyroute2 import Conntrack

                ct = Conntrack()
                try:
                    out.extend(ct.dump())
                finally:
                    ct.close()
            except Exception as e:  # no permission, no conntrack in this kernel, no pyroute2
                problem.append(f"conntrack_{type(e).__name__}")

        t = threading.Thread(target=work, name="conntrack", daemon=True)  # setns stays in that thread
        t.start()
        t.join(30)
        for p in problem:
            self.error(p)
        return out

    def _labels(self, src: str, dst: str, num: int, dport: str) -> tuple[str, ...] | None:
        s, d = ep.normalise_ip(src), ep.normalise_ip(dst)
        if s is None or d is None:
            return None
        index = self.store.index()
        proto = PROTOCOLS.get(str(num), str(num))
        # Conntrack only keeps connections the dataplane let through: the verdict is allow; which
        # policy allowed it is not known here.
        return (*self.side(index.lookup(s), s), *self.side(index.lookup(d), d), dport, proto, "allow", "", "")

    def collect(self) -> None:
        now = time.monotonic()
        seen: dict[object, tuple[int, int, int, int]] = {}
        rows_b: dict[tuple[str, ...], int] = {}
        rows_p: dict[tuple[str, ...], int] = {}
        rows_u: dict[tuple[str, ...], int] = {}
        for msg in self._dump():
            e = entry_of(msg)
            if e is None:
                continue
            cid, src, dst, num, dport, status, bo, po, bi, pi = e
            labels = self._labels(src, dst, num, dport)
            if labels is None:
                continue
            seen[cid] = (bo, po, bi, pi)
            last = self._last.get(cid, (0, 0, 0, 0))
            for rows, direction, value, prev in ((rows_b, "out", bo, last[0]), (rows_p, "out", po, last[1]),
                                                (rows_b, "in", bi, last[2]), (rows_p, "in", pi, last[3])):
                delta = value - prev if value >= prev else value
                if delta:
                    key = (*labels, direction, names.REPORTER_CONNTRACK)
                    rows[key] = rows.get(key, 0) + delta
            first = self._first_seen.setdefault(cid, now)
            if (not status & IPS_SEEN_REPLY and now - first >= self.unreplied_after
                    and cid not in self._counted_unreplied):
                self._counted_unreplied.add(cid)
                key = (*labels, "egress")
                rows_u[key] = rows_u.get(key, 0) + 1
        if self.volume:
            self.bytes.add_counts(rows_b.items())
            self.packets.add_counts(rows_p.items())
        self.unreplied.add_counts(rows_u.items())
        self._last = seen
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in seen}
        self._counted_unreplied &= set(seen)
        self.rounds += 1
