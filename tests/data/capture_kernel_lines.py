"""Capture the real kernel LOG corpus under tests/data/kernel/ (run as root; takes about a minute).

For each case it builds the node harness, runs the scenario's traffic, and keeps every
/dev/kmsg record written meanwhile (flow lines and whatever else the kernel said), the
Kubernetes snapshot, and the ground truth worked out from the scenario.

    sudo .venv/bin/python -m tests.data.capture_kernel_lines
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import yaml
from calico_lens.demo.node import Node, Rule, kmsg_reader, kmsg_write

from tests.e2e import scenario

OUT = Path(__file__).parent / "kernel"
CASES = {
    # name: (dataplane, logPrefix template)
    "iptables-default": ("iptables", "calico-packet"),
    "iptables-cut": ("iptables", "%k/%p"),
    "nftables-full": ("nftables", "%k/%p"),
    "nftables-tier": ("nftables", "calico|%t|%k|%n"),
}


def capture(name: str, dataplane: str, template: str) -> None:
    with kmsg_reader() as read, Node(dataplane, template, tag=name[:3]) as node:
        scenario.build(node)
        scenario.start_servers(node)
        kmsg_write(f"calico-lens capture {name}: start")
        for t in scenario.TRAFFIC:
            scenario.send(node, t)
        truth = scenario.expected(node)
        frags = 0
        if name == "nftables-full":
            extra = _fragments(node)
            frags = sum(extra.values())
            truth.update(extra)
        kmsg_write(f"calico-lens capture {name}: end")
        time.sleep(0.3)
        node.stop_servers()
        records = read()
        snap = scenario.snapshot(node)
    start = next(i for i, r in enumerate(records) if f"capture {name}: start" in r)
    records = records[start:]
    (OUT / f"{name}.kmsg").write_text("\n".join(records) + "\n")
    (OUT / f"{name}.snapshot.yaml").write_text(yaml.safe_dump(snap, sort_keys=False))
    rows = [[*labels, n] for labels, n in sorted(truth.items())]
    meta = {"dataplane": dataplane, "log_prefix": template, "lines": len(records), "probe_lines": frags,
            "expected": rows}
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: {len(records)} records, {sum(truth.values())} flow lines expected "
          f"({frags} from the fragment probe)")


def _fragments(node: Node) -> Counter:
    """Log fragments before reassembly (a prerouting hook below conntrack's defrag), then send a
    large ping each way so IPv4 and IPv6 fragments appear. Returns the extra lines expected: six
    fragment lines, plus the reassembled pings that the egress policy logs as usual."""
    fe = node.pods["frontend-7d4b9c6f5-x2x9q"]
    rule = Rule("frag-probe", "", "gnp", "default", "egress", fe, "allow")
    node.rules.append(rule)  # after the frontend's egress policy: the scenario's rows never meet it
    prefix = node.prefix_for(rule)
    from calico_lens.demo.node import run

    run("nft", "-f", "-", ns=node.node_ns, input=(
        "table inet calico_frag {\n chain pre {\n  type filter hook prerouting priority -450; policy accept;\n"
        f'  iifname "{fe.iface}" ip frag-off & 0x3fff != 0 log prefix "{prefix}" level notice\n'
        f'  iifname "{fe.iface}" exthdr frag exists log prefix "{prefix}" level notice\n }}\n}}\n'))
    pings = (scenario.Traffic(fe.name, "internet", "icmp", 0, 4),
             scenario.Traffic(fe.name, "internet", "icmpv6", 0, 6))
    node.ping(fe.name, "internet", 4, size=3000)  # 3 fragments: 1480 + 1480 + 48 bytes
    node.ping(fe.name, "internet", 6, size=3000)  # 3 fragments: 1448 + 1448 + 112 bytes
    extra = scenario.expected(node, pings)
    for proto in ("icmp", "icmpv6"):
        extra[("shop", "frontend", "pod", "", "private", "private", "", proto, "allow", "frag-probe", "default",
               "egress")] += 3
    return extra


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (dataplane, template) in CASES.items():
        capture(name, dataplane, template)


if __name__ == "__main__":
    main()
