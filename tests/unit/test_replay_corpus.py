"""`calico-lens replay --snapshot` on the real kernel corpus gives exact counts and labels."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from calico_lens.metrics import names

from tests.helpers import WRAPPERS, case, flows, inputs, run_cli

CASES = ["iptables-default", "iptables-cut", "nftables-full", "nftables-tier"]
_POLICY_IN_TEMPLATE = re.compile(r"%[np]")


def expected_for(meta: dict) -> Counter:
    """The ground truth as the agent can know it: a template without %n/%p names no policy, so
    the action is unknown and the direction comes from the interfaces alone."""
    exp: Counter = meta["expected"]
    if _POLICY_IN_TEMPLATE.search(meta["log_prefix"]):
        return exp
    out: Counter = Counter()
    idx = {k: i for i, k in enumerate(names.FLOW_LABELS)}
    for labels, n in exp.items():
        row = list(labels)
        pod_to_pod = row[idx["source_kind"]] == "pod" and row[idx["destination_kind"]] == "pod"
        row[idx["policy"]] = row[idx["tier"]] = ""
        row[idx["action"]] = "unknown"
        row[idx["direction"]] = "unknown" if pod_to_pod else row[idx["direction"]]
        out[tuple(row)] += n
    return out


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("name", CASES)
def test_replay_exact(tmp_path, name: str, wrapper: str) -> None:
    records, meta, snap = case(name)
    log = tmp_path / f"{name}.{wrapper}.log"
    log.write_text(WRAPPERS[wrapper](records))
    out = run_cli("replay", "--snapshot", str(snap), "--log-prefix", meta["log_prefix"], str(log)).stdout.decode()
    want = expected_for(meta)
    got = flows(out)
    assert got == want, f"missing {want - got}\nextra {got - want}"
    counts = inputs(out)
    total = sum(want.values())
    assert counts[("file", "parsed")] == total
    assert counts[("file", "ignored")] == meta["lines"] - total
    assert counts[("file", "malformed")] == 0


def test_ipv6_lines_land_on_pods() -> None:
    """The kernel prints IPv6 fully expanded; the pods' IPv6 flows must still be named."""
    records, meta, snap = case("nftables-full")
    assert "fd00:0198:0018:0000" in records
    got = flows(run_cli("replay", "--snapshot", str(snap), "--log-prefix", meta["log_prefix"], "-",
                        input=records.encode()).stdout.decode())
    idx = {k: i for i, k in enumerate(names.FLOW_LABELS)}
    v6 = [k for k in got if k[idx["protocol"]] == "icmpv6" and k[idx["destination_workload"]] == "ledger"]
    assert v6 and all(k[idx["destination_kind"]] == "pod" for k in v6)
    assert not [k for k in got if k[idx["source_kind"]] in ("public", "private") and k[idx["source_namespace"]]]
