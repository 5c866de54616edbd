"""Policy index: from what a log prefix tells to the policy, its tier and the verdict.

A Calico ``Log`` rule only logs; the verdict comes from the rule that follows it in the same
policy (``Allow``, ``Deny`` or ``Pass``). This index finds the policy a prefix names, the Log
rules that could have matched the flow, and the action of the rule after each.
"""

from __future__ import annotations

from dataclasses import dataclass

from calico_lens.metrics import names
from calico_lens.parse.prefix import GLOBAL_KINDS, PrefixInfo

UNKNOWN = "unknown"
_ACTIONS = {"allow": "allow", "deny": "deny", "pass": "pass"}
_PROTO_NUM = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58", "sctp": "132", "udplite": "136"}


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    policy: str  # "namespace/name" for namespaced kinds, "name" for global ones
    tier: str
    action: str  # allow | deny | pass | unknown
    direction: str  # ingress | egress | "" when the policy does not tell


@dataclass(slots=True)
class _Policy:
    code: str
    namespace: str
    name: str
    tier: str
    rules: dict[str, list[dict]]

    @property
    def label(self) -> str:
        return names.policy_label(self.namespace, self.name)


def _parse(code: str, obj: dict) -> _Policy:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ns = "" if code in GLOBAL_KINDS else meta.get("namespace", "") or ""
    tier = spec.get("tier") or "default"
    rules = {d: [r for r in (spec.get(d) or []) if isinstance(r, dict)] for d in ("ingress", "egress")}
    return _Policy(code, ns, meta.get("name", ""), tier, rules)


class PolicyIndex:
    def __init__(self, entries: list[tuple[str, dict]]):
        self._all = [_parse(code, obj) for code, obj in entries]

    def __len__(self) -> int:
        return len(self._all)

    def find(self, info: PrefixInfo) -> _Policy | None:
        """The one policy the prefix names (a cut name must be unambiguous), else None."""
        if not info.name:
            return None
        hits = []
        for p in self._all:
            if info.kind and p.code != info.kind:
                continue
            if info.namespace and p.namespace != info.namespace:
                continue
            if info.tier and p.tier != info.tier:
                continue
            if p.name == info.name:
                return p
            if info.truncated and p.name.startswith(info.name):
                hits.append(p)
        return hits[0] if len(hits) == 1 else None

    def verdict(self, info: PrefixInfo, protocol: str, port: str, direction: str) -> PolicyVerdict:
        policy = self.find(info)
        if policy is None:
            label = names.policy_label(info.namespace if info.name else "", info.name)
            if info.truncated and label:
                label += "..."  # what the cut prefix still tells, marked as incomplete
            return PolicyVerdict(label, info.tier, UNKNOWN, "")
        found: list[tuple[str, str]] = []
        for d, rules in policy.rules.items():
            if direction and d != direction:
                continue
            # The first Log rule that matches logged the packet; the rule after it has the same
            # match criteria in Calico's Log-then-verdict pattern, so its action is the verdict.
            for i, rule in enumerate(rules):
                if str(rule.get("action", "")).lower() == "log" and _rule_matches(rule, protocol, port):
                    nxt = rules[i + 1] if i + 1 < len(rules) else {}
                    found.append((d, _ACTIONS.get(str(nxt.get("action", "")).lower(), UNKNOWN)))
                    break
        tier = info.tier or policy.tier
        if len(found) == 1:
            return PolicyVerdict(policy.label, tier, found[0][1], found[0][0])
        actions = {a for _, a in found}
        return PolicyVerdict(policy.label, tier, actions.pop() if len(actions) == 1 else UNKNOWN, "")


def _rule_matches(rule: dict, protocol: str, port: str) -> bool:
    want = rule.get("protocol")
    if want is not None and protocol:
        w = str(want).lower()
        if w != protocol and _PROTO_NUM.get(w, w) != _PROTO_NUM.get(protocol, protocol):
            return False
    ports = (rule.get("destination") or {}).get("ports")
    if ports and port:
        return any(_port_in(p, int(port)) for p in ports)
    return True


def _port_in(spec: object, port: int) -> bool:
    if isinstance(spec, int):
        return spec == port
    text = str(spec)
    if ":" in text:
        lo, _, hi = text.partition(":")
        if lo.isdigit() and hi.isdigit():
            return int(lo) <= port <= int(hi)
        return True
    if text.isdigit():
        return int(text) == port
    return True  # a named port: cannot be checked here, assume it may match
