"""Felix's flow records → labelled tables: connections, bytes, packets, policy hits and the
staged-policy preview. Felix already names both ends, so no Kubernetes metadata is needed.

Each record is counted exactly once per (flow key, start, end): Felix resends the last five
minutes after every reconnect. Labels are computed once per distinct key (its bytes).
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from calico_lens.config import Config
from calico_lens.enrich import PROTOCOLS
from calico_lens.kube import endpoints as ep
from calico_lens.metrics import names
from calico_lens.metrics.table import ALIVE, LabelTable, LiveTable
from calico_lens.parse.felix_flow import (
    FlowDedupe,
    FlowRecord,
    RecordError,
    check_shape,
    decode,
    felix_batch,
    fields_fast,
    flow_ident,
)
from calico_lens.proto import goldmane_pb2 as pb

ACTIONS = {pb.Allow: "allow", pb.Deny: "deny", pb.Pass: "pass"}
REPORTERS = {pb.Src: "src", pb.Dst: "dst"}
# Short kinds as FelixConfiguration logPrefix %k writes them (np gnp snp sgnp sknp knp kcnp pro).
KINDS = {pb.CalicoNetworkPolicy: "np", pb.GlobalNetworkPolicy: "gnp", pb.StagedNetworkPolicy: "snp",
         pb.StagedGlobalNetworkPolicy: "sgnp", pb.StagedKubernetesNetworkPolicy: "sknp", pb.NetworkPolicy: "knp",
         pb.AdminNetworkPolicy: "kanp", pb.BaselineAdminNetworkPolicy: "kbanp", pb.Profile: "pro",
         pb.EndOfTier: "eot", pb.ClusterNetworkPolicy: "kcnp"}
_PORTED = {"tcp", "udp", "sctp", "udplite"}
_GLOBAL_NS = ("", "-")  # Felix writes "-" for cluster-scoped endpoints
DEDUPE_HORIZON = 900  # seconds of start times kept for dedupe: Felix resends its last 5 minutes

Error = Callable[[str, int], None]


# Where a record's numbers are in flow_fields()' tuple: (key, start, end, these...).
_P_IN, _P_OUT, _B_IN, _B_OUT, _STARTED, _COMPLETED, _LIVE = range(3, 10)
_UNBOUND = [0, 0, False]  # a slot's row before its first write: dead, so the writer binds


class _Labels:
    """What one distinct flow key contributes: label tuples for every table it feeds, and the rows
    they write, bound on first use (``slots``: [number index, table, labels, bound row])."""

    __slots__ = ("flow", "hits", "live", "preview", "slots", "volume_in", "volume_out")

    def __init__(self, flow, volume_in, volume_out, hits, preview):
        self.flow = flow  # FLOW_RECORD_LABELS
        self.volume_in = volume_in
        self.volume_out = volume_out
        self.hits = hits  # POLICY_HIT_LABELS tuples, one per enforced hit
        self.preview = preview  # POLICY_PREVIEW_LABELS or None
        self.slots: list[list] = []
        self.live: list = _UNBOUND  # the bound row of the live gauge


def aggregate_workload(name: str, labels: list[str] | tuple[str, ...]) -> str:
    """Felix names a workload endpoint by its pods' generateName plus "*" (``web-7d9c5b-*``):
    the same workload the Log-line path names (the Deployment, the CronJob, the StatefulSet)."""
    base = name[:-1] if name.endswith("*") else name
    if not base.endswith("-"):
        return base  # a pod without generateName is its own workload
    base = base[:-1]
    hashes = [v.partition("=")[2] for v in labels if v.startswith("pod-template-hash=")]
    if hashes:
        return ep.deployment_of(base, hashes[0])
    if not labels:  # Felix sends only the labels all pods share; none at all: judge by the name
        return ep.cronjob_of(ep.deployment_of(base, None))
    return ep.cronjob_of(base)


def _interned(labels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(map(sys.intern, labels))


def _policy_label(hit: pb.PolicyHit) -> tuple[str, str, str]:
    """(policy, kind, tier) of a hit; an end-of-tier hit is named by the policy that triggered it."""
    if hit.kind == pb.EndOfTier and hit.HasField("trigger"):
        hit = hit.trigger
    kind = KINDS.get(hit.kind)
    if kind is None or not hit.name:
        raise RecordError("malformed", f"policy hit of kind {hit.kind} named {hit.name!r}")
    name = f"__PROFILE__.{hit.name}" if kind == "pro" else hit.name
    return names.policy_label(hit.namespace, name), kind, hit.tier


def _deciding(hits, action: int | None = None):
    """The hit that decided: policies are evaluated in order and the first non-Pass verdict wins, so
    the first hit (by policy index) with ``action`` (or, without one, the first that is not a Pass)."""
    ordered = sorted(hits, key=lambda h: h.policy_index)
    for h in ordered:
        if (h.action == action) if action is not None else (h.action != pb.Pass):
            return h
    return ordered[-1] if ordered else None


class PyFlowDedupe:
    """Recent Felix flows by identity, oldest first: _scan.FlowDedupe's twin without a compiler."""

    def __init__(self) -> None:
        self._seen: OrderedDict[int, int] = OrderedDict()  # identity → start, in arrival order
        self.newest = 0
        self.evicted = 0  # dropped while Felix could still resend them

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, ident: int, start: int) -> bool:
        if ident in self._seen:
            return False
        self._seen[ident] = start
        self.newest = max(self.newest, start)
        return True

    def dump(self) -> bytes:
        """(identity, start) pairs, oldest first, packed as _scan.FlowDedupe.dump() packs them."""
        return b"".join(_SEEN_PAIR.pack(i, start) for i, start in self._seen.items())

    def trim(self, horizon: int, limit: int) -> None:
        seen, oldest_kept = self._seen, self.newest - horizon
        while seen:
            start = next(iter(seen.values()))
            if start >= oldest_kept and len(seen) <= limit:
                break
            if start >= oldest_kept:
                self.evicted += 1  # a resend of this one would now count twice
            seen.popitem(last=False)


def _py_ident(key: bytes, start: int, end: int) -> int:
    """Not hash(): identities outlive the process (the seen file), and str/bytes hashes are salted."""
    d = hashlib.blake2b(key, digest_size=8)
    d.update(_SEEN_PAIR.pack(start & 0xFFFFFFFFFFFFFFFF, end))
    return int.from_bytes(d.digest(), "little") or 1


class SeenFileError(ValueError):
    """A seen file that cannot be used (another format, machine or identity scheme; cut short)."""


_SEEN_PAIR = struct.Struct("=Qq")  # as _scan.c's Seen: identity, start (native order: the node's own file)
# The header names the identity scheme and byte order: a file from the other scheme would match nothing.
_SEEN_MAGIC = b"calico-lens seen flows v1 "


class FlowRecordStage:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        cap, ttl = cfg.max_series, cfg.series_ttl
        # One lock for the writers and every table of the stage: add() updates bound rows in place.
        self._lock = lock = threading.Lock()

        def table(name: str, labels: tuple[str, ...]) -> LabelTable:
            return LabelTable(name, labels, cap, ttl, help_text=names.HELP[name], lock=lock)

        self.started = table(names.CONNS_STARTED, names.FLOW_RECORD_LABELS)
        self.completed = table(names.CONNS_COMPLETED, names.FLOW_RECORD_LABELS)
        self.live = LiveTable(names.CONNS_LIVE, names.FLOW_RECORD_LABELS, cap, names.HELP[names.CONNS_LIVE], lock)
        self.bytes = table(names.FLOW_BYTES, names.FLOW_VOLUME_LABELS)
        self.packets = table(names.FLOW_PACKETS, names.FLOW_VOLUME_LABELS)
        self.hits = table(names.POLICY_HITS, names.POLICY_HIT_LABELS)
        self.preview = table(names.POLICY_PREVIEW, names.POLICY_PREVIEW_LABELS)
        self.tables = [self.started, self.completed, self.bytes, self.packets, self.hits, self.preview]
        self._labels: dict[bytes, _Labels | RecordError] = {}
        # (key, start, end) of recent flows, to drop Felix's resends; C and Python paths share it
        self._seen = FlowDedupe() if FlowDedupe is not None else PyFlowDedupe()
        self._ident = flow_ident if flow_ident is not None else _py_ident
        self.dedupe_max = cfg.felix_dedupe_max
        self.label_evictions = 0
        self._interval = -1  # the last interval start the live table was told of
        self._flushes: dict[int, int] = {}  # interval start → new records: how big Felix's flushes are

    # -- labels, once per distinct key ---------------------------------------------------------
    def _side(self, name: str, namespace: str, etype: int, labels, granularity: str) -> tuple[str, str, str]:
        ns = "" if namespace in _GLOBAL_NS else namespace
        if etype == pb.WorkloadEndpoint:
            kind, workload = ep.POD, aggregate_workload(name, labels)
        elif etype == pb.HostEndpoint:
            kind, workload, ns = ep.HOST, name, ""
        elif etype == pb.NetworkSet:
            kind, workload = ep.NETWORKSET, name
        elif etype == pb.Network:
            kind = ep.PUBLIC if name == "pub" else ep.PRIVATE if name == "pvt" else ""
            if not kind:
                raise RecordError("malformed", f"network endpoint named {name!r} (want pub or pvt)")
            return "", kind, kind
        else:
            raise RecordError("malformed", f"endpoint type {etype}")
        if not name:
            raise RecordError("malformed", "endpoint without a name")
        return (ns, "", kind) if granularity == "namespace" else (ns, workload, kind)

    def _compute(self, rec: FlowRecord) -> _Labels:
        f = rec.flow
        check_shape(f)
        k = f.Key
        action, reporter = ACTIONS.get(k.action), REPORTERS.get(k.reporter)
        if action is None or reporter is None:
            raise RecordError("malformed", f"action {k.action} / reporter {k.reporter}")
        src = self._side(k.source_name, k.source_namespace, k.source_type, f.source_labels,
                         self.cfg.source_granularity)
        dst = self._side(k.dest_name, k.dest_namespace, k.dest_type, f.dest_labels,
                         self.cfg.destination_granularity)
        proto = k.proto.lower()
        proto = PROTOCOLS.get(proto, proto)
        if not proto or not proto.replace("-", "").isalnum():
            raise RecordError("malformed", f"protocol {k.proto!r}")
        port = str(k.dest_port) if proto in _PORTED else ""
        enforced, pending = list(k.policies.enforced_policies), list(k.policies.pending_policies)
        decider = _deciding(enforced, k.action)
        policy, _, tier = _policy_label(decider) if decider is not None else ("", "", "")
        direction = "egress" if reporter == "src" else "ingress"
        base = (*src, *dst, port, proto, action, policy, tier)
        flow = (*base, direction, reporter)
        pair = (src[0], src[1], dst[0], dst[1])
        hits = tuple((*pair, *_policy_label(h), ACTIONS.get(h.action, "unknown"), str(h.rule_index), reporter)
                     for h in enforced)
        preview = None
        p = _deciding(pending)
        if p is not None and p.action != k.action and p.action in ACTIONS:
            ppol, pkind, ptier = _policy_label(p)
            preview = (*pair, ppol, pkind, ptier, action, ACTIONS[p.action], reporter)
        # Felix counts bytes in/out at the reporting end; our "out" is always what the source sent.
        d_in, d_out = ("in", "out") if reporter == "src" else ("out", "in")
        # Label values repeat across keys (namespaces, workloads, policies): share one copy of each.
        return _Labels(_interned(flow), _interned((*base, d_in, reporter)), _interned((*base, d_out, reporter)),
                       tuple(_interned(h) for h in hits), _interned(preview) if preview else None)

    def _miss(self, key: bytes, raw: bytes, rec: FlowRecord | None) -> _Labels | RecordError:
        """Labels for a key not seen before (or a refusal), from the fully decoded message."""
        try:
            got: _Labels | RecordError = self._compute(rec or decode(raw))
        except RecordError as e:
            got = e
        if isinstance(got, _Labels):
            u = _UNBOUND
            got.slots = [[_STARTED, self.started, got.flow, u], [_COMPLETED, self.completed, got.flow, u],
                         [_B_IN, self.bytes, got.volume_in, u], [_B_OUT, self.bytes, got.volume_out, u],
                         [_P_IN, self.packets, got.volume_in, u], [_P_OUT, self.packets, got.volume_out, u],
                         *([_STARTED, self.hits, h, u] for h in got.hits)]
            if got.preview is not None:
                got.slots.append([_STARTED, self.preview, got.preview, u])
        if len(self._labels) >= self.cfg.felix_label_cache_size:
            self.label_evictions += len(self._labels)
            self._labels.clear()
        self._labels[key] = got
        return got

    # -- the counted entry ----------------------------------------------------------------------
    def add(self, raws: list[bytes], error: Error) -> tuple[int, int, int]:
        """Count a batch of raw FlowUpdate messages. Returns (parsed, duplicate, malformed); every
        malformed one is also reported to ``error`` with its reason. The common case (a known key,
        its rows bound, the current interval) runs in C (felix_batch); each record it stops at takes
        the Python path below, then C goes on."""
        parsed = dup = bad = 0
        now = time.monotonic()
        limit = self.cfg.felix_max_message_bytes
        with self._lock:
            i, total = 0, len(raws)
            while i < total:
                if felix_batch is not None:
                    i, p, d = felix_batch(raws, i, limit, self._labels, _Labels, self._seen, now, self._interval)
                    parsed, dup = parsed + p, dup + d
                    if p:  # C counts only records of the current interval
                        self._flushes[self._interval] = self._flushes.get(self._interval, 0) + p
                    if i >= total:
                        break
                got = self._one(raws[i], limit, now)
                if got is None:
                    dup += 1
                elif got is True:
                    parsed += 1
                else:
                    bad += 1
                    error(got.reason, 1)
                i += 1
            self._seen.trim(DEDUPE_HORIZON, self.dedupe_max)
        return parsed, dup, bad

    def _one(self, raw: bytes, limit: int, now: float) -> bool | RecordError | None:
        """One record (under the lock): True counted, None a resend, or why it was refused."""
        rec = None
        try:
            if len(raw) > limit:
                raise RecordError("oversize", f"{len(raw)} bytes > felix_max_message_bytes {limit}")
            f = fields_fast(raw) if fields_fast is not None else None
            if f is None:  # no C reader, or a message it leaves to protobuf
                rec = decode(raw)
                f = rec[:10]
            lab = self._labels.get(f[0]) or self._miss(f[0], raw, rec)
            if isinstance(lab, RecordError):
                raise lab
        except RecordError as e:
            return e
        start = f[1]
        if not self._seen.add(self._ident(f[0], start, f[2]), start):
            return None
        # Counters: add in place to the rows this key writes (bound on first use).
        for slot in lab.slots:
            i, table, labels, row = slot
            n = f[i]
            if n:
                if not row[ALIVE]:
                    row = slot[3] = table.bind(labels, [0.0, now, True])
                row[0] += n
                row[1] = now
        flushes = self._flushes
        flushes[start] = flushes.get(start, 0) + 1
        if len(flushes) > 8:  # a few recent intervals (resends may add to older ones)
            del flushes[min(flushes)]
        live_t = self.live
        if start != self._interval:
            live_t.interval(start)
            self._interval = start
        row, n = lab.live, f[_LIVE]
        if not row[ALIVE]:
            row = lab.live = live_t.bind(lab.flow, [start, 0, True], n)
        live_t.set_live(row, start, n)
        return True

    # -- what was counted, across agent restarts ------------------------------------------------
    def _seen_header(self) -> bytes:
        scheme = b"c" if flow_ident is not None else b"py"
        return _SEEN_MAGIC + scheme + b" " + sys.byteorder.encode() + b"\n"

    def save_seen(self, path: str) -> int:
        """Write the identities of the flows counted lately (Felix may still resend them) to ``path``,
        owner only, replaced atomically. Returns how many."""
        with self._lock:
            body = self._seen.dump()
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self._seen_header() + body)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return len(body) // _SEEN_PAIR.size

    def load_seen(self, path: str) -> int:
        """Remember the flows a previous agent counted (its ``save_seen``), so that Felix's resends
        of them after the restart are not counted again. Returns how many; raises SeenFileError."""
        head, pair = self._seen_header(), _SEEN_PAIR.size
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            got = f.read(len(head))
            if got != head:
                raise SeenFileError(f"header {got[:60]!r}, want {head!r}")
            if (size - len(head)) % pair:
                raise SeenFileError(f"{size - len(head)} bytes of entries, not a multiple of {pair}")
            # the newest felix_dedupe_max of them (the file is oldest first)
            f.seek(len(head) + max(0, (size - len(head)) // pair - self.dedupe_max) * pair)
            body = f.read(self.dedupe_max * pair)
        body = body[:len(body) // pair * pair]  # the file changed under us: whole entries only
        n = len(body) // pair
        with self._lock:
            add = self._seen.add
            for ident, start in _SEEN_PAIR.iter_unpack(body):
                add(ident, start)
            self._seen.trim(DEDUPE_HORIZON, self.dedupe_max)
        return n

    def flush_records(self) -> int:
        """New records of the newest flush interval so far (Felix sends a flush's records together)."""
        with self._lock:
            return self._flushes[max(self._flushes)] if self._flushes else 0

    @property
    def dedupe_evicted(self) -> int:
        """Flows forgotten early to stay within felix_dedupe_max."""
        return self._seen.evicted

    def dedupe_entries(self) -> int:
        return len(self._seen)
