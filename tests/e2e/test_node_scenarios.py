"""On the real kernel: a Calico-like node, Felix-style LOG rules, `calico-lens agent` reading
/dev/kmsg (and a file fed the same lines), a real Prometheus scraping it. What Prometheus holds
must equal the ground truth the scenario works out: nothing more, nothing less."""

from __future__ import annotations

import pytest
import yaml
from calico_lens.demo.node import SYSCTLS, Node, kmsg_reader, leftovers
from calico_lens.metrics import names

from tests.e2e import scenario
from tests.e2e.agent_proc import AgentProcess
from tests.prom import Prometheus

FLOWS = names.FLOWS + "_total"


def prom_flows(prom: Prometheus) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(k, "") for k in names.FLOW_LABELS): float(r["value"][1])
            for r in prom.query(FLOWS) if float(r["value"][1]) > 0}


def run_scenario(node: Node, tmp_path, source: str) -> None:
    scenario.build(node)
    scenario.start_servers(node)
    snap = tmp_path / "snapshot.yaml"
    snap.write_text(yaml.safe_dump(scenario.snapshot(node)))
    truth = {k: float(v) for k, v in scenario.expected(node).items()}
    feed = tmp_path / "kern.log"
    feed.write_text("")
    src = "kmsg" if source == "kmsg" else f"file:{feed}"
    with AgentProcess("--source", src, "--snapshot", str(snap), "--log-prefix", node.log_prefix) as agent, \
            Prometheus([agent.address]) as prom, kmsg_reader() as read:
        for t in scenario.TRAFFIC:
            scenario.send(node, t)
        if source == "file":  # the same kernel lines, shipped to a file as rsyslog would
            feed.write_text("".join(r + "\n" for r in read()))
        prom.wait_value(f"sum({FLOWS})", sum(truth.values()))
        assert prom_flows(prom) == truth
        prom.wait_value(f'sum({names.INPUT_LINES}_total{{result="malformed"}})', 0)


@pytest.mark.parametrize("dataplane,template,source", [
    ("iptables", "%k/%p", "kmsg"),  # policy names cut at 29 characters
    ("iptables", "%k/%p", "file"),
    ("nftables", "%k/%p", "kmsg"),
    ("nftables", "calico|%t|%k|%n", "kmsg"),
])
def test_scenario_matches_ground_truth(make_node, tmp_path, dataplane: str, template: str, source: str) -> None:
    run_scenario(make_node(dataplane, template), tmp_path, source)


def test_harness_cleans_up_after_a_failure() -> None:
    before = {k: open(f"/proc/sys/{k}").read() for k in SYSCTLS}
    names_seen: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), Node("nftables") as node:
        node.add_pod("a", "ns")
        node.add_external("x")
        names_seen = [*node._namespaces]
        assert open("/proc/sys/net/netfilter/nf_log_all_netns").read().strip() == "1"
        raise RuntimeError("boom")
    assert names_seen and not set(names_seen) & set(leftovers())
    assert {k: open(f"/proc/sys/{k}").read() for k in SYSCTLS} == before


def test_without_privileges_one_clear_line() -> None:
    """Run as an unprivileged user, the harness says in one line what is missing. The user cannot
    read a checkout under a private directory, so the (standard-library only) harness module is
    copied to a readable place and run with the interpreter behind the venv."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from tests.helpers import ROOT

    where = tempfile.mkdtemp(prefix="cl-priv-")
    try:
        os.chmod(where, 0o755)
        shutil.copy(ROOT / "exporter" / "calico_lens" / "demo" / "node.py", os.path.join(where, "node.py"))
        os.chmod(os.path.join(where, "node.py"), 0o644)
        code = ("from node import PrivilegeError, check_privileges\n"
                "try:\n check_privileges()\nexcept PrivilegeError as e:\n print(e)\n")
        python = os.path.realpath(sys.executable)  # the base interpreter, outside the checkout
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", code],
                           capture_output=True, text=True, cwd=where, timeout=60)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") == 1 and "needs root" in p.stdout
