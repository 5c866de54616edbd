"""Enrichment: a raw flow key (addresses, interfaces, prefix) → the flow's label tuple.

Runs once per *distinct* raw key and remembers the answer until the metadata changes, so the
cost does not grow with the line rate. A new key mostly shares its parts with keys seen before (a
scan: the same span with a new port, or a new source address next to a known destination), so
the parts are remembered too: the endpoint of an address, the sides and direction of a span, the
policy and verdict of a prefix for a protocol, port and direction. All are bounded and all are
dropped when the metadata changes.
"""

from __future__ import annotations

from calico_lens.config import Config
from calico_lens.kube import endpoints as ep
from calico_lens.kube.endpoints import Endpoint
from calico_lens.kube.metadata import MetadataStore
from calico_lens.kube.policies import PortVerdicts
from calico_lens.parse.kernel_log import AddressClasses, RawKey, split_span
from calico_lens.parse.prefix import PrefixInfo, PrefixMatcher

IGNORED = "ignored"
MALFORMED = "malformed"

# Protocol numbers the kernel (or the eBPF trace) prints as digits, by name.
PROTOCOLS = {
    "1": "icmp", "2": "igmp", "4": "ipip", "6": "tcp", "17": "udp", "41": "ipv6", "47": "gre",
    "50": "esp", "51": "ah", "58": "icmpv6", "89": "ospf", "103": "pim", "112": "vrrp", "132": "sctp",
    "136": "udplite",
}
_PORTED = {"tcp", "udp", "sctp", "udplite"}
_MAX_HEADS = 4096


# Addresses the scanner may write in place of an external one (the first that no endpoint claims).
_FOLD_TO = {ep.PRIVATE: ("10.255.255.254", "172.31.255.254", "192.168.255.254", "100.127.255.254"),
            ep.PUBLIC: ("1.0.0.254", "9.255.255.254", "126.255.255.254", "223.255.255.254")}

_NO_PREFIX = PrefixInfo()
_BAD_ADDRESS = "bad address"
Side = tuple[str, str, str]


def _protocol(proto: str) -> str:
    """The protocol label of a PROTO= value, or MALFORMED."""
    protocol = PROTOCOLS.get(proto) or proto.lower()
    if not protocol.replace("-", "").isalnum() or (protocol.isdigit() and int(protocol) > 255):
        return MALFORMED  # an IP protocol number is one byte
    return protocol


def _port(dport: str) -> int | None:
    """The number of a DPT= value, or None when it is not a 16-bit port (-5, 65536, 32 digits)."""
    if dport.isascii() and dport.isdigit() and len(dport) <= 5:
        n = int(dport)
        if n <= 65535:
            return n
    return None


class _Bounded(dict):
    """A dict that starts over when full: the caches below stay within their bound."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.evicted = 0

    def put(self, key, value):
        if len(self) >= self.limit:
            self.evicted += len(self)
            self.clear()
        self[key] = value
        return value


# What a key tells apart from its port (a scan's keys share all of it), as a plain tuple (a
# NamedTuple costs a Python-level call per new key): source and destination sides (namespace,
# workload, kind ×2), protocol, whether the protocol has ports (so the port is a label), direction,
# the policy's verdicts by port, and the line's own verdict (eBPF) or "".
_Part = tuple[tuple[str, ...], str, bool, str, PortVerdicts, str]


LabelCounts = tuple[list[tuple[tuple[str, ...], int]], int, int, "RawKey | None"]


class Enricher:
    def __init__(self, cfg: Config, store: MetadataStore):
        self.cfg = cfg
        self.store = store
        self.matcher = PrefixMatcher(cfg.log_prefix)
        size = max(cfg.enrich_cache_size, 1)
        self._parts = _Bounded(size)  # (head, span, proto, verdict) → _Part | IGNORED | MALFORMED
        self._heads = _Bounded(_MAX_HEADS)  # head → (PrefixInfo | None, its policy) (heads may carry stamps)
        self._spans = _Bounded(size)  # span → (direction, source side + destination side) | MALFORMED | _BAD_ADDRESS
        self._ips = _Bounded(size)  # address text → (source side, destination side) | _BAD_ADDRESS
        self._protocols = _Bounded(1024)  # PROTO= text → protocol label | MALFORMED
        self._verdicts = _Bounded(size)  # (head, protocol, direction) → PortVerdicts
        self._ports = _Bounded(1 << 17)  # DPT= text → number | None
        self._caches = (self._parts, self._heads, self._spans, self._ips, self._verdicts)  # follow the metadata
        self._gen = -1
        self._classes = None  # AddressClasses for the scanner
        self._classes_of = None  # the IPIndex they were made from

    @property
    def evictions(self) -> int:
        return sum(c.evicted for c in (*self._caches, self._protocols, self._ports))

    def address_classes(self) -> AddressClasses | None:  # type: ignore[valid-type]
        """For the C scanner (``parse_text``): the external addresses it may fold, under the current
        metadata. Every IPv4 address no endpoint claims gets the labels of "private" or "public"
        whatever its value, so a flood from a new address each line costs a few keys, not one per line.
        None when labels name external addresses (external_by_ip) or without the C scanner."""
        if AddressClasses is None or self.cfg.external_by_ip:
            return None
        index = self.store.index()
        if self._classes_of is not index:
            known, nets = index.known_v4()
            # a representative is an address the index itself calls external of that class
            to = [next((a for a in _FOLD_TO[k] if index.lookup(a) == ep.external(a)
                        and ep.external(a).kind == k), "") for k in (ep.PRIVATE, ep.PUBLIC)]
            self._classes = AddressClasses(known, [n for n, _ in nets], [m for _, m in nets],
                                           ep.PRIVATE_STARTS, ep.PRIVATE_ENDS, *to)
            self._classes_of = index
        return self._classes

    def label_counts(self, counts: dict[RawKey, int]) -> LabelCounts:
        """The label set of each raw key: ([(labels, lines)], ignored lines, malformed lines, a malformed key).
        Label sets may repeat in the list: the table adds them (one hash per key, not three)."""
        if self._gen != self.store.generation:
            for c in self._caches:
                c.clear()
            self._gen = self.store.generation
        labels_of = self._labels
        rows: list[tuple[tuple[str, ...], int]] = []
        ignored = malformed = 0
        bad = None
        for k, n in counts.items():
            lab = labels_of(k)
            if lab.__class__ is tuple:
                rows.append((lab, n))  # type: ignore[arg-type]
            elif lab is IGNORED:
                ignored += n
            else:
                malformed += n
                bad = k
        return rows, ignored, malformed, bad

    def _labels(self, key: RawKey) -> tuple[str, ...] | str:
        head, span, proto, dport, verdict = key
        pkey = (head, span, proto, verdict)
        part = self._parts.get(pkey)
        if part is None:
            part = self._parts.put(pkey, self._part(head, span, proto, verdict))
        if part.__class__ is str:
            return part  # type: ignore[return-value]
        sides, protocol, ported, direction, verdicts, action = part
        if dport:
            n = self._ports.get(dport, -2)
            if n == -2:
                n = self._ports.put(dport, _port(dport))
            if n is None:
                return MALFORMED
        if ported and dport:
            v = verdicts.at(n)
        else:
            dport, v = "", verdicts.no_port
        return (*sides, dport, protocol, action or v.action, v.policy, v.tier, direction or v.direction or "unknown")

    def _part(self, head: str, span: str, proto: str, verdict: str) -> _Part | str:
        store = self.store
        sides = self._spans.get(span)
        if sides is None:
            sides = self._spans.put(span, self._span(span, store.index()))
        if sides is MALFORMED:
            return MALFORMED
        hp = self._heads.get(head)
        if hp is None:
            info = self.matcher.match(head)
            hp = self._heads.put(head, (info, store.policies().find(info) if info else None))
        info, policy = hp
        if info is None:
            if not verdict:
                return IGNORED  # a LOG line, but not from a Calico log rule
            info = _NO_PREFIX
        if sides is _BAD_ADDRESS:
            return MALFORMED
        protocol = self._protocols.get(proto)
        if protocol is None:
            protocol = self._protocols.put(proto, _protocol(proto))
        if protocol is MALFORMED:
            return MALFORMED
        direction, both = sides
        vkey = (head, protocol, direction)
        verdicts = self._verdicts.get(vkey)
        if verdicts is None:
            verdicts = self._verdicts.put(vkey, store.policies().port_verdicts(info, policy, protocol, direction))
        return (both, protocol, protocol in _PORTED, direction, verdicts, verdict)

    def _span(self, span: str, index) -> tuple[str, tuple[str, ...]] | str:
        """What a span tells, once per distinct span: (direction, source side + destination side)."""
        parts = split_span(span, self.cfg.interface_prefix)
        if parts is None:
            return MALFORMED
        in_if, out_if, src, dst = parts
        ips = self._ips
        s = ips.get(src) or ips.put(src, self._ip(src, index))
        d = ips.get(dst) or ips.put(dst, self._ip(dst, index))
        if s is _BAD_ADDRESS or d is _BAD_ADDRESS:
            return _BAD_ADDRESS
        return self._direction(in_if, out_if), s[0] + d[1]

    def _ip(self, text: str, index) -> tuple[Side, Side] | str:
        """An address's (source side, destination side), or _BAD_ADDRESS."""
        v4 = ep.ipv4_int(text)
        if v4 is not None:
            norm, e = text, index.lookup(text, v4)
        else:
            norm = ep.normalise_ip(text)
            if norm is None:
                return _BAD_ADDRESS
            e = index.lookup(norm)
        return (self._side(e, norm, self.cfg.source_granularity), self._side(e, norm, self.cfg.destination_granularity))

    def _direction(self, in_if: str, out_if: str) -> str:
        """Ingress or egress of the local workload, from which side its cali* interface is on."""
        pre = self.cfg.interface_prefix
        from_wl, to_wl = in_if.startswith(pre), out_if.startswith(pre)
        if from_wl and not to_wl:
            return "egress"
        if to_wl and not from_wl:
            return "ingress"
        if from_wl and to_wl:
            return ""  # pod to pod on one node: the policy's rules tell
        if not out_if:
            return "ingress"  # to the host itself (INPUT)
        if not in_if:
            return "egress"  # from the host itself (OUTPUT)
        return ""

    def side_of(self, e: Endpoint, ip: str) -> tuple[str, str, str]:
        """(namespace, workload, kind) of an endpoint for volume metrics (source granularity)."""
        return self._side(e, ip, self.cfg.source_granularity)

    def _side(self, e: Endpoint, ip: str, granularity: str) -> tuple[str, str, str]:
        if e.kind in (ep.PUBLIC, ep.PRIVATE) and self.cfg.external_by_ip:
            return (e.namespace, ip, e.kind)
        if granularity == "namespace":
            return (e.namespace, "", e.kind)
        if granularity == "pod" and e.pod:
            return (e.namespace, e.pod, e.kind)
        return (e.namespace, e.workload, e.kind)
