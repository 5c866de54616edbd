"""End to end: `calico-lens agent` tails a file that the test appends to (and rotates); a real
Prometheus scrapes it; PromQL answers match the lines written."""

from __future__ import annotations

import os
import time

import requests
from calico_lens.metrics import names

from tests.e2e.agent_proc import AgentProcess
from tests.helpers import as_syslog, case
from tests.prom import Prometheus


def test_agent_tails_file_and_prometheus_agrees(tmp_path) -> None:
    records, meta, snap = case("iptables-cut")
    kern = tmp_path / "kern.log"
    kern.write_text("Nov 23 19:00:00 node-1 kernel: boot noise before the agent started\n")
    lines = as_syslog(records).splitlines(keepends=True)
    args = ("--source", f"file:{kern}", "--snapshot", str(snap), "--log-prefix", meta["log_prefix"])
    with AgentProcess(*args) as agent, Prometheus([agent.address]) as prom:
        assert requests.get(agent.url + "/healthz", timeout=5).status_code == 200
        half = len(lines) // 2
        with kern.open("a") as fh:  # appended in two writes, the second ending mid-line
            fh.write("".join(lines[:half]) + lines[half][:40])
            fh.flush()
            time.sleep(0.3)
            fh.write(lines[half][40:])
        # Rotation: the old file moves away, a new one takes its place.
        os.rename(kern, tmp_path / "kern.log.1")
        time.sleep(0.5)
        kern.write_text("".join(lines[half + 1:]))

        total = sum(meta["expected"].values())
        flows = names.FLOWS + "_total"
        prom.wait_value(f"sum({flows})", total)
        prom.wait_value(f'sum({names.INPUT_LINES}_total{{result="parsed"}})', total)
        prom.wait_value(f'sum({names.INPUT_LINES}_total{{result="ignored"}})', meta["lines"] - total)
        prom.wait_value(f'sum({names.INPUT_LINES}_total{{result="malformed"}})', 0)
        # Per label set, Prometheus holds exactly the ground truth.
        res = prom.query(f"{flows}")
        got = {tuple(r["metric"].get(k, "") for k in names.FLOW_LABELS): float(r["value"][1]) for r in res}
        assert got == {k: float(v) for k, v in meta["expected"].items()}
        denied = prom.value(f'sum({flows}{{action="deny",destination_workload="ledger"}})')
        want = sum(v for k, v in meta["expected"].items() if k[8] == "deny" and k[4] == "ledger")
        assert denied == want > 0
