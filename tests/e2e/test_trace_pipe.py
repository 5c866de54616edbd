"""The eBPF dataplane's source on the real kernel: Calico's eBPF programs write their Log lines into
the trace ring buffer (bpf_trace_printk) and the agent reads them from the trace pipe. Here the
lines enter the same ring buffer through trace_marker, in a tracing instance of the test's own, and
come out of the real trace pipe — header, per-CPU buffers and "[LOST n EVENTS]" notes included."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.agent_proc import AgentProcess
from tests.helpers import KERNEL, flows, inputs, source_errors
from tests.prom import wait_http

TRACEFS = Path("/sys/kernel/tracing")
SNAPSHOT = KERNEL / "iptables-default.snapshot.yaml"  # frontend 198.18.0.1, backend .2 (shop), ledger .3 (payments)


@pytest.fixture
def trace_instance():
    """A tracing instance of the test's own (its own ring buffer and trace pipe), removed after;
    tracefs is mounted for the test if it was not, and unmounted again."""
    if os.geteuid() != 0:
        pytest.fail("the trace pipe test needs root (tracefs): run the suite as root, e.g. `sudo make test`",
                    pytrace=False)
    mounted = False
    if not (TRACEFS / "instances").is_dir():
        p = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.fail(f"cannot mount tracefs on {TRACEFS}: {p.stderr.strip()}", pytrace=False)
        mounted = True
    inst = TRACEFS / "instances" / f"calico-lens-{uuid.uuid4().hex[:8]}"
    inst.mkdir()
    try:
        yield inst
    finally:
        inst.rmdir()
        if mounted:
            subprocess.run(["umount", str(TRACEFS)], check=True)


def ebpf_line(src: str, dst: str, proto: int, dport: int, verdict: str, hook: str) -> str:
    return f"cali527b0801ecb-{hook}: policy {verdict} proto {proto} src {src}:40000 dest {dst}:{dport}"


def write_markers(inst: Path, lines: list[str]) -> None:
    """One write per line: one trace event each, as bpf_trace_printk makes one per call."""
    fd = os.open(inst / "trace_marker", os.O_WRONLY)
    try:
        for line in lines:
            os.write(fd, line.encode())
    finally:
        os.close(fd)


def lost(text: str) -> int:
    return source_errors(text)[("trace", "records_lost")]


def wait_for(agent: AgentProcess, done) -> str:
    """The agent's exposition once ``done(exposition)`` holds."""
    wait_http(agent.url + "/metrics", ok=lambda r: done(r.text))
    return agent.metrics()


def test_ebpf_lines_through_the_trace_pipe(trace_instance: Path) -> None:
    sent = (
        # "-I": the ingress policy of the pod behind the interface (Calico's naming, felix/bpf-gpl/log.h).
        [ebpf_line("198.18.0.1", "198.18.0.2", 6, 8080, "ALLOWED", "I")] * 5  # frontend → backend, into backend
        + [ebpf_line("198.18.0.3", "198.18.0.2", 17, 53, "DENIED", "I")] * 3  # ledger → backend udp/53
        # "-E": its egress policy.
        + [ebpf_line("198.18.0.1", "8.8.8.8", 1, 0, "ALLOWED", "E")] * 2  # frontend → internet, out of frontend
        + ["some other program's trace line"] * 4
    )
    with AgentProcess("--source", f"trace:{trace_instance / 'trace_pipe'}", "--snapshot", str(SNAPSHOT)) as agent:
        write_markers(trace_instance, sent)
        text = wait_for(agent, lambda t: sum(v for (s, _), v in inputs(t).items() if s == "trace") >= len(sent))
    assert inputs(text)[("trace", "parsed")] == 10
    assert inputs(text)[("trace", "ignored")] == 4
    assert inputs(text)[("trace", "malformed")] == 0
    assert lost(text) == 0
    pod = "pod"
    want = Counter({
        ("shop", "frontend", pod, "shop", "backend", pod, "8080", "tcp", "allow", "", "", "ingress"): 5,
        ("payments", "ledger", pod, "shop", "backend", pod, "53", "udp", "deny", "", "", "ingress"): 3,
        ("shop", "frontend", pod, "", "public", "public", "", "icmp", "allow", "", "", "egress"): 2,
    })
    assert flows(text) == want


def test_lost_trace_events_are_counted(trace_instance: Path) -> None:
    """A ring buffer too small for what was written before the agent read it: the pipe says how many
    events it overwrote, and every written line is either parsed or counted as lost."""
    (trace_instance / "buffer_size_kb").write_text("4")
    sent = [ebpf_line("198.18.0.1", "198.18.0.2", 6, 8080, "ALLOWED", "E")] * 3000
    write_markers(trace_instance, sent)
    with AgentProcess("--source", f"trace:{trace_instance / 'trace_pipe'}", "--snapshot", str(SNAPSHOT)) as agent:
        text = wait_for(agent, lambda t: inputs(t).get(("trace", "parsed"), 0) + lost(t) >= len(sent))
    parsed = inputs(text)[("trace", "parsed")]
    assert lost(text) > 0 and parsed > 0, (parsed, lost(text))
    assert parsed + lost(text) == len(sent)
    assert sum(flows(text).values()) == parsed
    assert inputs(text)[("trace", "malformed")] == 0
