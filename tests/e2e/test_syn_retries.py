"""On the real kernel: a connection attempt the ingress policy drops is retried by the client's TCP
stack; every retransmitted SYN meets the same Log rules again. calico-lens counts the attempt once
as a flow and the resends as retries, and still counts the same packet logged by two rules twice."""

from __future__ import annotations

import time

import pytest
from calico_lens.config import Config
from calico_lens.demo.node import kmsg_reader
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.pipeline import FlowPipeline

from tests.e2e import scenario


@pytest.mark.parametrize("template", ["%k/%p", "calico-packet"])
def test_retransmitted_syns_are_retries_not_flows(make_node, template: str) -> None:
    node = make_node("iptables", template)
    scenario.build(node)
    with kmsg_reader() as read:
        # 2.5 s: the first SYN and the kernel's resend after 1 s, both dropped by the backend's policy
        assert not node.tcp_connect("frontend-7d4b9c6f5-x2x9q", "backend-5f6d7c8b9-k8s2m", 5432, 4, timeout=2.5)
        time.sleep(0.3)
        lines = [r for r in read() if "DPT=5432" in r]
    store = MetadataStore()
    store.load_list(scenario.snapshot(node))
    pipe = FlowPipeline(Config(log_prefix=template), store)
    pipe.process("kmsg", "\n".join(lines) + "\n")
    # Two log points (the frontend's egress, the backend's ingress) met by each of two SYNs.
    attempts = len({ln.split(" ID=")[1].split()[0] for ln in lines})
    assert len(lines) == 2 * attempts and attempts >= 2, lines
    assert pipe.out.inputs[("kmsg", "parsed")] == len(lines)
    assert pipe.flows.total() == 2  # one connection attempt at each of the two log points
    assert pipe.retries.total() == len(lines) - 2
    if template != "calico-packet":  # the default prefix names no policy: the direction stays unknown
        d = names.FLOW_LABELS.index("direction")
        assert {k[d]: v for k, v in pipe.retries.snapshot()} == {"egress": attempts - 1, "ingress": attempts - 1}
