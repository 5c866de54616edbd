"""A known mix of traffic on the node harness, with its ground truth and Kubernetes snapshot.

The ground truth is worked out here from the scenario itself (which rules a packet meets, in
Felix's order), never from calico-lens, so a test can compare the two.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from calico_lens.demo.node import Node, Rule, sctp_init

NAMESPACES = ("shop", "payments")
PARTNER_SET = "partner-net"  # a GlobalNetworkSet holding the "partner" external host


@dataclass(frozen=True)
class Traffic:
    src: str
    dst: str
    protocol: str  # tcp | udp | icmp | icmpv6 | sctp | gre
    port: int = 0
    family: int = 4
    count: int = 1


def build(node: Node) -> None:
    """Pods, externals and policies: two namespaces, an egress policy, ingress allow/deny."""
    node.add_pod("frontend-7d4b9c6f5-x2x9q", "shop", "frontend")
    node.add_pod("backend-5f6d7c8b9-k8s2m", "shop", "backend")
    node.add_pod("ledger-0", "payments", "ledger", owner_kind="StatefulSet")
    node.add_external("partner")
    node.add_external("internet")
    fe, be, ledger = (node.pods[n] for n in ("frontend-7d4b9c6f5-x2x9q", "backend-5f6d7c8b9-k8s2m", "ledger-0"))
    # Egress of the frontend: log everything and allow it (a global policy, as an audit tier would).
    node.add_rule(Rule("log-egress-frontend-all-destinations", "", "gnp", "default", "egress", fe, "allow"))
    # Ingress of the backend: allow 8080 from anyone, log and deny the rest.
    node.add_rule(Rule("allow-http-8080-from-frontend", "shop", "np", "default", "ingress", be, "allow", "tcp", 8080))
    node.add_rule(Rule("default-deny-backend-ingress", "shop", "np", "default", "ingress", be, "deny"))
    # Ingress of the ledger: UDP 5353 allowed, everything else denied.
    node.add_rule(Rule("allow-udp-5353", "payments", "np", "default", "ingress", ledger, "allow", "udp", 5353))
    node.add_rule(Rule("deny-all-ingress", "payments", "np", "default", "ingress", ledger, "deny"))


TRAFFIC: tuple[Traffic, ...] = (
    Traffic("frontend-7d4b9c6f5-x2x9q", "backend-5f6d7c8b9-k8s2m", "tcp", 8080, 4, 3),
    Traffic("frontend-7d4b9c6f5-x2x9q", "backend-5f6d7c8b9-k8s2m", "tcp", 5432, 4, 2),
    Traffic("frontend-7d4b9c6f5-x2x9q", "backend-5f6d7c8b9-k8s2m", "tcp", 8080, 6, 2),
    Traffic("frontend-7d4b9c6f5-x2x9q", "ledger-0", "udp", 5353, 4, 2),
    Traffic("frontend-7d4b9c6f5-x2x9q", "ledger-0", "icmp", 0, 4, 1),
    Traffic("frontend-7d4b9c6f5-x2x9q", "ledger-0", "icmpv6", 0, 6, 1),
    Traffic("frontend-7d4b9c6f5-x2x9q", "partner", "udp", 53, 4, 2),
    Traffic("frontend-7d4b9c6f5-x2x9q", "partner", "tcp", 443, 6, 1),
    Traffic("frontend-7d4b9c6f5-x2x9q", "internet", "icmp", 0, 4, 1),
    Traffic("frontend-7d4b9c6f5-x2x9q", "internet", "sctp", 38412, 4, 1),
    Traffic("frontend-7d4b9c6f5-x2x9q", "internet", "gre", 0, 4, 1),
    Traffic("backend-5f6d7c8b9-k8s2m", "ledger-0", "tcp", 9000, 4, 2),
    Traffic("backend-5f6d7c8b9-k8s2m", "ledger-0", "tcp", 9000, 6, 1),
    Traffic("ledger-0", "backend-5f6d7c8b9-k8s2m", "icmp", 0, 4, 1),
)


def send(node: Node, t: Traffic) -> None:
    for _ in range(t.count):
        if t.protocol == "tcp":
            node.tcp_connect(t.src, t.dst, t.port, t.family)
        elif t.protocol == "udp":
            node.udp_send(t.src, t.dst, t.port, t.family)
        elif t.protocol in ("icmp", "icmpv6"):
            node.ping(t.src, t.dst, t.family)
        elif t.protocol == "sctp":
            node.raw_send(t.src, t.dst, 132, sctp_init(40000, t.port), t.family)
        elif t.protocol == "gre":
            node.raw_send(t.src, t.dst, 47, b"\x00\x00\x08\x00", t.family)


def start_servers(node: Node) -> None:
    node.serve_tcp("backend-5f6d7c8b9-k8s2m", 8080)
    node.serve_tcp("partner", 443)


def _rule_matches(rule: Rule, t: Traffic) -> bool:
    if rule.protocol and rule.protocol != t.protocol:
        return False
    return not rule.port or rule.port == t.port


def _endpoint(node: Node, name: str) -> tuple[str, str, str]:
    if name in node.pods:
        p = node.pods[name]
        return (p.namespace, p.workload, "pod")
    if name == "partner":
        return ("", PARTNER_SET, "networkset")
    return ("", "private", "private")  # 198.19.0.0/16 is in the benchmarking range, a private one


def expected(node: Node, traffic: tuple[Traffic, ...] = TRAFFIC) -> Counter[tuple[str, ...]]:
    """Label tuples (in names.FLOW_LABELS order) → lines the kernel will log."""
    out: Counter[tuple[str, ...]] = Counter()
    # The kernel's LOG target prints ports for TCP and UDP; this kernel prints SCTP as PROTO=132
    # without ports, so on the wire-truth side an SCTP flow has no port either.
    ported = {"tcp", "udp"}
    for t in traffic:
        src, dst = _endpoint(node, t.src), _endpoint(node, t.dst)
        port = str(t.port) if t.protocol in ported else ""
        chains = [("egress", t.src), ("ingress", t.dst)]
        for direction, owner in chains:
            pod = node.pods.get(owner)
            if pod is None:
                continue
            rule = next((r for r in node.rules if r.pod is pod and r.direction == direction and _rule_matches(r, t)),
                        None)
            if rule is None:
                continue
            policy = f"{rule.namespace}/{rule.policy}" if rule.namespace else rule.policy
            out[(*src, *dst, port, t.protocol, rule.action, policy, rule.tier, direction)] += t.count
            if rule.action == "deny":
                break
    return out


def snapshot(node: Node) -> dict:
    """The Kubernetes objects describing the node's pods, sets and policies (a kubectl List)."""
    items: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in NAMESPACES]
    items += [node.pod_object(p) for p in node.pods.values()]
    partner = node.externals.get("partner")
    if partner:
        items.append({
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
            "metadata": {"name": PARTNER_SET, "labels": {"role": "partner"}},
            "spec": {"nets": [partner.ip4.rsplit(".", 1)[0] + ".0/24", partner.ip6 + "/128"]},
        })
    policies: dict[tuple[str, str, str], dict] = {}
    for r in node.rules:
        key = (r.kind, r.namespace, r.policy)
        if key not in policies:
            kind = "NetworkPolicy" if r.kind == "np" else "GlobalNetworkPolicy"
            meta = {"name": r.policy, **({"namespace": r.namespace} if r.namespace else {})}
            policies[key] = {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
                             "spec": {"tier": r.tier, "order": 100, "selector": f"app == '{r.pod.workload}'",
                                      "types": [], "ingress": [], "egress": []}}
        spec = policies[key]["spec"]
        match: dict = {}
        if r.protocol:
            match["protocol"] = {"icmpv6": "ICMPv6", "icmp": "ICMP"}.get(r.protocol, r.protocol.upper())
            if r.port:
                match["destination"] = {"ports": [r.port]}
        spec[r.direction] += [{"action": "Log", **match}, {"action": r.action.capitalize(), **match}]
        if r.direction.capitalize() not in spec["types"]:
            spec["types"].append(r.direction.capitalize())
    items.extend(policies.values())
    items.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
                  "status": {"addresses": [{"type": "InternalIP", "address": "198.18.255.1"}]}})
    return {"apiVersion": "v1", "kind": "List", "items": items}
