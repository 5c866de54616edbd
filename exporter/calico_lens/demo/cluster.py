"""The demo's made-up cluster and a generator of realistic Calico LOG lines for it.

The cluster is small but shaped like a real one: a shop (frontend → backend → database), a
payments namespace, CoreDNS in kube-system, two nodes, a network set of partner APIs, and
policies whose Log rules come before Allow / Deny / Pass rules. The generator renders kernel LOG
lines the way Felix's rules make the kernel print them, with the prefix cut at 29 characters as
iptables does. ``bench/`` uses the same generator for its input.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from calico_lens.metrics import names

LOG_PREFIX = "%k/%p"  # the FelixConfiguration logPrefix the demo "cluster" uses
IPTABLES_PREFIX_MAX = 29


@dataclass(frozen=True)
class DemoPod:
    name: str
    namespace: str
    workload: str
    ip: str
    iface: str
    owner: str = "ReplicaSet"


PODS = [
    DemoPod("frontend-7d4b9c6f5-x2x9q", "shop", "frontend", "10.244.1.10", "cali1a2b3c4d5e6"),
    DemoPod("frontend-7d4b9c6f5-p8m2k", "shop", "frontend", "10.244.2.11", "cali2b3c4d5e6f7"),
    DemoPod("backend-5f6d7c8b9-k8s2m", "shop", "backend", "10.244.1.20", "cali3c4d5e6f7a8"),
    DemoPod("postgres-0", "shop", "postgres", "10.244.2.30", "cali4d5e6f7a8b9", "StatefulSet"),
    DemoPod("checkout-6c7d8e9f0-q4w5e", "payments", "checkout", "10.244.1.40", "cali5e6f7a8b9c0"),
    DemoPod("coredns-5d78c9869d-abcde", "kube-system", "coredns", "10.244.0.2", "cali6f7a8b9c0d1"),
    DemoPod("prometheus-0", "monitoring", "prometheus", "10.244.2.50", "cali7a8b9c0d1e2", "StatefulSet"),
]
BY_WORKLOAD = {}
for _p in PODS:
    BY_WORKLOAD.setdefault(_p.workload, []).append(_p)
NODES = {"node-1": "192.168.10.11", "node-2": "192.168.10.12"}
PARTNER_NETS = ["203.0.113.0/24"]
PUBLIC_HOSTS = ["140.82.112.3", "151.101.1.69", "104.16.132.229"]
SERVICES = {("shop", "backend"): "10.96.10.20", ("kube-system", "kube-dns"): "10.96.0.10"}

# (policy kind, namespace, name, tier, direction, [rules]) — Log rules followed by their verdicts.
POLICIES = [
    ("gnp", "", "platform.log-all-egress", "platform", "egress", [{"action": "Log"}, {"action": "Pass"}]),
    ("np", "shop", "default.backend-allow-frontend", "default", "ingress",
     [{"action": "Log", "protocol": "TCP", "destination": {"ports": [8080]}},
      {"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}},
      {"action": "Log"}, {"action": "Deny"}]),
    ("np", "shop", "default.postgres-allow-backend", "default", "ingress",
     [{"action": "Log", "protocol": "TCP", "destination": {"ports": [5432]}},
      {"action": "Allow", "protocol": "TCP", "destination": {"ports": [5432]}},
      {"action": "Log"}, {"action": "Deny"}]),
    ("np", "payments", "default.checkout-egress", "default", "egress",
     [{"action": "Log", "protocol": "TCP", "destination": {"ports": [443]}},
      {"action": "Allow", "protocol": "TCP", "destination": {"ports": [443]}},
      {"action": "Log"}, {"action": "Deny"}]),
    ("np", "monitoring", "default.prometheus-egress", "default", "egress",
     [{"action": "Log", "protocol": "TCP", "destination": {"ports": [9100]}},
      {"action": "Allow", "protocol": "TCP", "destination": {"ports": [9100]}},
      {"action": "Log"}, {"action": "Deny"}]),
]

# Traffic mix: (weight, source workload, destination, protocol, port). A destination is a
# workload, "svc:<ns>/<name>", "partner", "public" or "node".
MIX = [
    (30, "frontend", "backend", "TCP", 8080),
    (4, "frontend", "backend", "TCP", 22),
    (12, "backend", "postgres", "TCP", 5432),
    (2, "frontend", "postgres", "TCP", 5432),
    (18, "frontend", "coredns", "UDP", 53),
    (8, "backend", "coredns", "UDP", 53),
    (6, "checkout", "partner", "TCP", 443),
    (2, "checkout", "public", "TCP", 443),
    (1, "checkout", "public", "TCP", 25),
    (3, "frontend", "public", "TCP", 443),
    (4, "prometheus", "node", "TCP", 9100),
    (1, "frontend", "checkout", "ICMP", 0),
    (2, "checkout", "coredns", "UDP", 53),  # its egress policy forgot DNS: denied
]
# Traffic that starts a while into the demo (TrafficGenerator.start_late): Prometheus gains a
# kubelet scrape job that its egress policy does not allow, so a policy *starts* denying.
LATE_MIX = [(3, "prometheus", "node", "TCP", 10250)]


def snapshot() -> dict:
    """The cluster as `kubectl get ... -A -o yaml` would print it."""
    items: list[dict] = []
    for ns in sorted({p.namespace for p in PODS}):
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for name, ip in NODES.items():
        items.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                      "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
    for p in PODS:
        if p.owner == "ReplicaSet":
            rs = p.name.rsplit("-", 1)[0]
            owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": f"rs-{rs}", "controller": True}
            labels = {"app": p.workload, "pod-template-hash": rs.rsplit("-", 1)[1]}
        else:
            owner = {"apiVersion": "apps/v1", "kind": p.owner, "name": p.workload, "uid": f"x-{p.workload}",
                     "controller": True}
            labels = {"app": p.workload}
        items.append({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": p.name, "namespace": p.namespace, "labels": labels,
                                   "ownerReferences": [owner]},
                      "spec": {"nodeName": "node-1" if p.ip.startswith("10.244.1.") else "node-2"},
                      "status": {"phase": "Running", "podIP": p.ip, "podIPs": [{"ip": p.ip}]}})
    for (ns, name), ip in SERVICES.items():
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                      "spec": {"clusterIP": ip, "clusterIPs": [ip]}})
    items.append({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                  "metadata": {"name": "partner-apis", "labels": {"role": "partner"}}, "spec": {"nets": PARTNER_NETS}})
    for code, ns, name, tier, direction, rules in POLICIES:
        kind = "NetworkPolicy" if code == "np" else "GlobalNetworkPolicy"
        meta = {"name": name, **({"namespace": ns} if ns else {})}
        selector = "all()" if code == "gnp" else f"app == '{name.split('.', 1)[1].split('-')[0]}'"
        items.append({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
                      "spec": {"tier": tier, "order": 100, "selector": selector, "types": [direction.capitalize()],
                               direction: rules}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _prefix(code: str, ns: str, name: str) -> str:
    return (LOG_PREFIX.replace("%k", code).replace("%p", names.policy_label(ns, name)) + ": ")[:IPTABLES_PREFIX_MAX]


def _matches(rule: dict, proto: str, port: int) -> bool:
    if "protocol" in rule and rule["protocol"] != proto:
        return False
    ports = (rule.get("destination") or {}).get("ports")
    return not ports or port in ports


class TrafficGenerator:
    """Renders kernel LOG lines for the mix. ``distinct=True`` gives every line a new source
    address, to feed the exporter an unbounded number of distinct flows."""

    def __init__(self, seed: int = 7, distinct: bool = False, wrapper: str = "syslog", retries: bool = False):
        self.rng = random.Random(seed)
        self.distinct = distinct
        self.retries = retries  # a dropped TCP attempt is sometimes resent: the same lines, a new IP ID
        self.wrapper = wrapper
        self.n = 0
        weights = [w for w, *_ in MIX]
        self._choices = [m[1:] for m in MIX]
        self._weights = weights

    def start_late(self) -> None:
        """Add LATE_MIX to the traffic from now on."""
        self._choices += [m[1:] for m in LATE_MIX]
        self._weights += [w for w, *_ in LATE_MIX]

    def _dest_ip(self, dest: str) -> tuple[str, str]:
        if dest == "partner":
            return f"203.0.113.{self.rng.randint(1, 254)}", "eth0"
        if dest == "public":
            return self.rng.choice(PUBLIC_HOSTS), "eth0"
        if dest == "node":
            return self.rng.choice(list(NODES.values())), ""
        pod = self.rng.choice(BY_WORKLOAD[dest])
        return pod.ip, pod.iface

    def _log_points(self, src: DemoPod, dst_wl: str, proto: str, port: int) -> list[str]:
        """The prefixes of the Log rules this packet meets, in Felix's order (egress, ingress); the
        list ends with a Deny's Log rule when the packet is dropped (``self.denied``)."""
        self.denied = False
        out = []
        for direction, owner in (("egress", src.workload), ("ingress", dst_wl)):
            for code, ns, name, _tier, pdir, rules in POLICIES:
                if pdir != direction:
                    continue
                if code == "np" and not _applies(name, owner):
                    continue
                for i, rule in enumerate(rules):
                    if rule["action"] == "Log" and _matches(rule, proto, port):
                        out.append(_prefix(code, ns, name))
                        if rules[i + 1]["action"] == "Deny":
                            self.denied = True
                            return out
                        break
        return out

    def lines(self, count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            src_wl, dest, proto, port = self.rng.choices(self._choices, self._weights)[0]
            src = self.rng.choice(BY_WORKLOAD[src_wl])
            dst_ip, out_if = self._dest_ip(dest)
            src_ip = src.ip
            if self.distinct:
                src_ip = f"10.{(self.n >> 16) & 255}.{(self.n >> 8) & 255}.{self.n & 255}"
            points = self._log_points(src, dest, proto, port)
            ident, sport = self.rng.randint(1, 65000), self.rng.randint(32768, 60999)
            resends = self.rng.randint(0, 2) if self.retries and proto == "TCP" and self.denied else 0
            for attempt in range(1 + resends):
                for prefix in points:
                    out.append(self._render(prefix, src.iface, out_if, src_ip, dst_ip, proto, port, ident + attempt,
                                            sport))
                    self.n += 1
        return out[:count]

    def _render(self, prefix: str, in_if: str, out_if: str, src: str, dst: str, proto: str, port: int,
                ident: int, sport: int) -> str:
        if proto == "TCP":
            l4 = f"PROTO=TCP SPT={sport} DPT={port} WINDOW=64240 RES=0x00 SYN URGP=0 "
            length = 60
        elif proto == "UDP":
            l4 = f"PROTO=UDP SPT={sport} DPT={port} LEN=41 "
            length = 61
        else:
            l4 = f"PROTO=ICMP TYPE=8 CODE=0 ID={ident} SEQ=1 "
            length = 84
        body = (f"{prefix}IN={in_if} OUT={out_if} MAC=ee:ee:ee:ee:ee:ee:0a:58:0a:f4:01:0a:08:00 SRC={src} "
                f"DST={dst} LEN={length} TOS=0x00 PREC=0x00 TTL=63 ID={ident} DF {l4}")
        stamp = 1000 + self.n / 1000
        if self.wrapper == "syslog":
            sec = self.n // 1000
            return f"Nov 23 19:{(sec // 60) % 60:02d}:{sec % 60:02d} node-1 kernel: [{stamp:12.6f}] {body}"
        if self.wrapper == "dmesg":
            return f"[{stamp:12.6f}] {body}"
        return body


def port_scan(count: int, start: int = 0) -> list[str]:
    """A SYN scan from outside the cluster through the backend's ingress Log-then-Deny rule, as
    /dev/kmsg hands it out: one source port, every line a new destination port (each sweep of all
    ports from the next source address), so every line is a new flow."""
    pod = BY_WORKLOAD["backend"][0]
    prefix = _prefix("np", "shop", "default.backend-allow-frontend")
    out = []
    for n in range(start, start + count):
        sweep, port = divmod(n, 65535)
        out.append(f"4,{n},{n * 13},-;{prefix}IN=eth0 OUT={pod.iface} MAC=ee:ee:ee:ee:ee:ee:0a:58:0a:f4:01:0a:08:00 "
                   f"SRC=198.51.{100 + sweep // 250}.{sweep % 250 + 1} DST={pod.ip} LEN=44 TOS=0x00 PREC=0x00 TTL=52 "
                   f"ID={n % 65536} PROTO=TCP SPT=61000 DPT={port + 1} WINDOW=1024 RES=0x00 SYN URGP=0 ")
    return out


def _applies(policy: str, workload: str) -> bool:
    """Which workload a demo NetworkPolicy selects (its name says it)."""
    return policy.split(".", 1)[1].startswith(workload + "-")


# CoreDNS queries the demo's pods make: (weight, client workload, [(qtype, name, rcode, seconds)]).
# An external name without a trailing dot walks the search path first (ndots:5): three misses.
def _search(ns: str, name: str) -> list[tuple[str, str, str, float]]:
    return [("A", f"{name}.{ns}.svc.cluster.local.", "NXDOMAIN", 0.0001),
            ("A", f"{name}.svc.cluster.local.", "NXDOMAIN", 0.0001),
            ("A", f"{name}.cluster.local.", "NXDOMAIN", 0.0001),
            ("A", f"{name}.", "NOERROR", 0.015)]


DNS_MIX = [
    (40, "frontend", [("A", "backend.shop.svc.cluster.local.", "NOERROR", 0.00015),
                      ("AAAA", "backend.shop.svc.cluster.local.", "NOERROR", 0.00012)]),
    (15, "backend", [("A", "postgres.shop.svc.cluster.local.", "NOERROR", 0.00014)]),
    (10, "frontend", _search("shop", "api.github.com")),
    (8, "checkout", [("A", "api.partner-apis.example.", "NOERROR", 0.03)]),
    (3, "checkout", [("A", "broken.partner-apis.example.", "SERVFAIL", 2.0)]),
    (3, "backend", [("A", "cache.shop.svc.cluster.local.", "NXDOMAIN", 0.0001)]),  # a service that is gone
    (2, "frontend", [("A", "nosuch-tracker.example.", "NXDOMAIN", 0.02)]),
]


class DnsGenerator:
    """CoreDNS `log` plugin lines (default format) for the demo cluster's clients."""

    def __init__(self, seed: int = 11):
        self.rng = random.Random(seed)
        self.n = 0

    def lines(self, count: int) -> list[str]:
        out: list[str] = []
        weights = [w for w, *_ in DNS_MIX]
        while len(out) < count:
            _, client, queries = self.rng.choices(DNS_MIX, weights)[0]
            pod = self.rng.choice(BY_WORKLOAD[client])
            for qtype, name, rcode, seconds in queries:
                self.n += 1
                dur = seconds * self.rng.uniform(0.6, 1.6)
                out.append(f'[INFO] {pod.ip}:{self.rng.randint(32768, 60999)} - {self.n % 65536} '
                           f'"{qtype} IN {name} udp {len(name) + 18} false 512" {rcode} qr,rd,ra '
                           f"{len(name) + 40} {dur:.9f}s")
        return out[:count]
