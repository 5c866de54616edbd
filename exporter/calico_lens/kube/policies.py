"""Policy index: from what a log prefix tells to the policy, its tier and the verdict.

A Calico ``Log`` rule only logs; the verdict comes from the rule that follows it in the same
policy (``Allow``, ``Deny`` or ``Pass``). This index finds the policy a prefix names, the Log
rules that could have matched the flow, and the action of the rule after each.
"""

from __future__ import annotations

import bisect
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


@dataclass(frozen=True, slots=True)
class _LogRule:
    """A Log rule, ready to test a flow against, with the action of the rule after it (the verdict)."""

    protocol: str | None  # protocol number as text ("6"), or None for any
    ports: tuple[tuple[int, int], ...] | None  # destination port ranges, or None for any port
    action: str

    def matches(self, protocol: str, port: int) -> bool:
        if self.protocol is not None and protocol and self.protocol != _PROTO_NUM.get(protocol, protocol):
            return False
        return self.ports is None or port < 0 or any(lo <= port <= hi for lo, hi in self.ports)


@dataclass(slots=True)
class _Policy:
    code: str
    namespace: str
    name: str
    tier: str
    rules: dict[str, list[_LogRule]]  # direction → its Log rules, in order

    @property
    def label(self) -> str:
        return names.policy_label(self.namespace, self.name)


def _compile(rules: list[dict]) -> list[_LogRule]:
    """The Log rules of one direction; the rule after each gives its verdict (Calico's Log-then-verdict
    pattern: same match criteria, so its action is what happened to what was logged)."""
    out = []
    for i, rule in enumerate(rules):
        if str(rule.get("action", "")).lower() != "log":
            continue
        nxt = rules[i + 1] if i + 1 < len(rules) else {}
        want = rule.get("protocol")
        w = None if want is None else str(want).lower()
        out.append(_LogRule(None if w is None else _PROTO_NUM.get(w, w),
                            _port_ranges((rule.get("destination") or {}).get("ports")),
                            _ACTIONS.get(str(nxt.get("action", "")).lower(), UNKNOWN)))
    return out


def _port_ranges(ports: object) -> tuple[tuple[int, int], ...] | None:
    """Port ranges of a rule's ``destination.ports``; None when any port may match (no ports, or a
    named port, which cannot be checked here)."""
    if not ports or not isinstance(ports, list):
        return None
    out = []
    for spec in ports:
        if isinstance(spec, int):
            out.append((spec, spec))
            continue
        text = str(spec)
        lo, sep, hi = text.partition(":")
        if sep and lo.isdigit() and hi.isdigit():
            out.append((int(lo), int(hi)))
        elif not sep and text.isdigit():
            out.append((int(text), int(text)))
        else:
            return None  # a named port or an odd range: assume it may match
    return tuple(out)


def _parse(code: str, obj: dict) -> _Policy:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ns = "" if code in GLOBAL_KINDS else meta.get("namespace", "") or ""
    tier = spec.get("tier") or "default"
    rules = {d: _compile([r for r in (spec.get(d) or []) if isinstance(r, dict)]) for d in ("ingress", "egress")}
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

    def port_verdicts(self, info: PrefixInfo, policy: _Policy | None, protocol: str, direction: str) -> PortVerdicts:
        """The verdicts of ``policy`` (``find(info)``) for every port of one protocol and direction: a
        scan meets a new port with every flow, and this answers each with one bisect."""
        if policy is None:
            label = names.policy_label(info.namespace if info.name else "", info.name)
            if info.truncated and label:
                label += "..."  # what the cut prefix still tells, marked as incomplete
            return PortVerdicts([], [], PolicyVerdict(label, info.tier, UNKNOWN, ""))
        tier = info.tier or policy.tier
        # Ports where the answer may change: every range's ends; between two of them it cannot (a
        # rule of another protocol only adds a cut that changes nothing).
        cuts = sorted({0, *(b for d, rs in policy.rules.items() if not direction or d == direction
                            for r in rs for lo, hi in r.ports or () for b in (lo, hi + 1))})

        def decide(port: int) -> PolicyVerdict:
            found: list[tuple[str, str]] = []
            for d, rs in policy.rules.items():
                if direction and d != direction:
                    continue
                # The first Log rule that matches logged the packet.
                rule = next((r for r in rs if r.matches(protocol, port)), None)
                if rule is not None:
                    found.append((d, rule.action))
            if len(found) == 1:
                return PolicyVerdict(policy.label, tier, found[0][1], found[0][0])
            actions = {a for _, a in found}
            return PolicyVerdict(policy.label, tier, actions.pop() if len(actions) == 1 else UNKNOWN, "")

        return PortVerdicts(cuts, [decide(c) for c in cuts], decide(-1))


class PortVerdicts:
    """Port → verdict for one policy, protocol and direction: constant between the cut ports."""

    __slots__ = ("_cuts", "_verdicts", "no_port")

    def __init__(self, cuts: list[int], verdicts: list[PolicyVerdict], no_port: PolicyVerdict):
        self._cuts, self._verdicts = cuts or [0], verdicts or [no_port]
        self.no_port = no_port  # for a flow without a port

    def at(self, port: int) -> PolicyVerdict:
        """The verdict for a port (-1: a flow without one)."""
        if port < 0:
            return self.no_port
        return self._verdicts[bisect.bisect_right(self._cuts, port) - 1]
