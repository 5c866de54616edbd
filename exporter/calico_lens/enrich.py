"""Enrichment: a raw flow key (addresses, interfaces, prefix) → the flow's label tuple.

Runs once per *distinct* raw key and remembers the answer until the metadata changes, so the
cost does not grow with the line rate.
"""

from __future__ import annotations

from calico_lens.config import Config
from calico_lens.kube import endpoints as ep
from calico_lens.kube.endpoints import Endpoint
from calico_lens.kube.metadata import MetadataStore
from calico_lens.parse.kernel_log import RawKey, split_span
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


class Enricher:
    def __init__(self, cfg: Config, store: MetadataStore):
        self.cfg = cfg
        self.store = store
        self.matcher = PrefixMatcher(cfg.log_prefix)
        self._heads: dict[str, PrefixInfo | None] = {}
        self._cache: dict[RawKey, tuple[str, ...] | str] = {}
        self._gen = -1
        self.evictions = 0

    def _prefix(self, head: str) -> PrefixInfo | None:
        info = self._heads.get(head, self)
        if info is self:
            info = self.matcher.match(head)
            if len(self._heads) >= _MAX_HEADS:  # heads with per-line stamps: keep the cache bounded
                self._heads.clear()
            self._heads[head] = info
        return info  # type: ignore[return-value]

    def resolve(self, keys: list[RawKey]) -> dict[RawKey, tuple[str, ...] | str]:
        """Labels (or IGNORED / MALFORMED) for each key of one batch."""
        if self._gen != self.store.generation:
            self._cache.clear()
            self._gen = self.store.generation
        cache = self._cache
        out: dict[RawKey, tuple[str, ...] | str] = {}
        missing = []
        for k in keys:
            got = cache.get(k)
            if got is None:
                missing.append(k)
            else:
                out[k] = got  # taken now: an eviction below must not lose it
        if missing:
            size = self.cfg.enrich_cache_size
            if len(cache) + len(missing) > size:
                self.evictions += len(cache)
                cache.clear()
            index = self.store.index()
            policies = self.store.policies()
            for k in missing:
                got = out[k] = self._labels(k, index, policies)
                if len(cache) < size:  # a batch of more new keys than the cache holds: the rest is not kept
                    cache[k] = got
        return out

    def _labels(self, key: RawKey, index, policies) -> tuple[str, ...] | str:
        head, span, proto, dport, verdict = key
        parts = split_span(span, self.cfg.interface_prefix)
        if parts is None:
            return MALFORMED
        in_if, out_if, src, dst = parts
        info = self._prefix(head)
        if info is None:
            if not verdict:
                return IGNORED  # a LOG line, but not from a Calico log rule
            info = PrefixInfo()
        s_ip, d_ip = ep.normalise_ip(src), ep.normalise_ip(dst)
        if s_ip is None or d_ip is None:
            return MALFORMED
        protocol = PROTOCOLS.get(proto, proto.lower())
        if not protocol.replace("-", "").isalnum() or (protocol.isdigit() and int(protocol) > 255):
            return MALFORMED  # an IP protocol number is one byte
        if dport and (not (dport.isascii() and dport.isdigit()) or len(dport) > 5 or int(dport) > 65535):
            return MALFORMED  # a port is 16 bits: -5, 65536 or a 32-digit "port" is not a value
        port = dport if protocol in _PORTED else ""
        s_ep, d_ep = index.lookup(s_ip), index.lookup(d_ip)
        direction = self._direction(in_if, out_if)
        v = policies.verdict(info, protocol, port, direction)
        direction = direction or v.direction or "unknown"
        action = verdict or v.action
        return (
            *self._side(s_ep, s_ip, self.cfg.source_granularity),
            *self._side(d_ep, d_ip, self.cfg.destination_granularity),
            port, protocol, action, v.policy, v.tier, direction,
        )

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
