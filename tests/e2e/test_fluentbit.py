"""The shipped Fluent Bit pipelines (fluentbit/*.yaml) run by the real Fluent Bit binary against a
real agent: exact counts for the tail pipeline across a log rotation, the CoreDNS pipeline on
CRI-wrapped container logs, the kmsg pipeline on real kernel lines of the node harness, and
at-least-once delivery across an agent killed with -9 (filesystem buffering). Every pipeline
passes `--dry-run`.

The binary: $FLUENT_BIT, else the one provided beside the project (../shared/tools/fluent-bit/,
see its README). Without either the tests fail and say so: Fluent Bit has no Debian package."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from calico_lens.metrics import names

from tests.e2e.agent_proc import AgentProcess
from tests.helpers import ROOT, samples, stop
from tests.prom import free_port

PIPELINES = ROOT / "fluentbit"
SHIPPED = sorted(p.name for p in PIPELINES.glob("*.yaml") if p.name != "parsers.yaml")
KEY = "fb-" + uuid.uuid4().hex[:12]
LINES = names.INPUT_LINES + "_total"


def fluent_bit() -> str:
    for candidate in (os.environ.get("FLUENT_BIT", ""), str(ROOT.parent / "shared/tools/fluent-bit/fluent-bit"),
                      "/work/shared/tools/fluent-bit/fluent-bit", shutil.which("fluent-bit") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("Fluent Bit not found: set FLUENT_BIT=/path/to/fluent-bit (no Debian package exists; this "
                "machine provides one in ../shared/tools/fluent-bit/)", pytrace=False)


@pytest.mark.parametrize("name", SHIPPED)
def test_dry_run(name: str) -> None:
    p = subprocess.run([fluent_bit(), "--dry-run", "-c", name], cwd=PIPELINES, capture_output=True, text=True,
                       timeout=30, env={**os.environ, "CALICO_LENS_FORWARD_SHARED_KEY": KEY, "NODE_NAME": "n1"})
    assert p.returncode == 0 and "configuration test is successful" in p.stdout + p.stderr, p.stdout + p.stderr


@pytest.mark.parametrize("kernel", ["kernel-kmsg.yaml", "kernel-tail.yaml", "kernel-systemd.yaml"])
def test_the_charts_fluent_bit_configs_pass_dry_run(kernel: str, tmp_path: Path) -> None:
    """What the chart hands each Fluent Bit container (the pipeline with the agent's port and the HTTP
    server for its probes) is a configuration Fluent Bit accepts."""
    from tests.unit.test_helm import find, render

    docs = render("stock-values.yaml", "--set", "fluentbit.enabled=true", "--set", f"fluentbit.kernelPipeline={kernel}")
    data = find(docs, "ConfigMap", "-fluentbit")["data"]
    assert set(data) == {"parsers.yaml", "kernel.yaml", "coredns.yaml"}
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    for name in ("kernel.yaml", "coredns.yaml"):
        cfg = yaml.safe_load(data[name])
        assert cfg["service"]["health_check"] is True and cfg["service"]["http_server"] is True
        p = subprocess.run([fluent_bit(), "--dry-run", "-c", name], cwd=tmp_path, capture_output=True, text=True,
                           timeout=30, env={**os.environ, "CALICO_LENS_FORWARD_SHARED_KEY": KEY, "NODE_NAME": "n1"})
        assert p.returncode == 0, p.stdout + p.stderr


class Pipeline:
    """One shipped pipeline run by Fluent Bit, its paths moved under ``work`` and its output sent
    to ``port`` (nothing else changed)."""

    def __init__(self, name: str, work: Path, port: int, paths: dict[str, str] | None = None) -> None:
        cfg = yaml.safe_load((PIPELINES / name).read_text())
        state = work / "state"
        cfg["service"]["storage.path"] = str(state / "buffer") + "/"
        cfg["service"]["parsers_file"] = str(PIPELINES / "parsers.yaml")
        cfg["service"]["http_server"] = "off"
        for inp in cfg["pipeline"]["inputs"]:
            if "db" in inp:
                inp["db"] = str(state / Path(inp["db"]).name)
            if "path" in inp:
                inp["path"] = (paths or {})["path"]
                inp["refresh_interval"] = 1  # notice the new file after a rotation at once
        for out in cfg["pipeline"]["outputs"]:
            out["port"] = port
        self.config = work / name
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = open(work / f"{name}.log", "w")
        self.proc = subprocess.Popen([fluent_bit(), "-c", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "CALICO_LENS_FORWARD_SHARED_KEY": KEY, "NODE_NAME": "n1"})

    def close(self) -> None:
        stop(self.proc, 15)
        self.log.close()


def agent(port: int, work: Path, *extra: str) -> AgentProcess:
    """An agent receiving Forward on ``port`` with the shared key, from static (empty) metadata."""
    snap = work / "cluster.yaml"
    snap.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    return AgentProcess("--source", f"forward:127.0.0.1:{port}", "--snapshot", str(snap), *extra,
                        env={"CALICO_LENS_FORWARD_SHARED_KEY": KEY})


def counted(a: AgentProcess, result: str = "parsed") -> float:
    return sum(v for lab, v in samples(a.metrics()).get(LINES, []) if lab == {"source": "forward", "result": result})


def wait_for(fn, want: float, timeout: float = 30.0) -> float:
    end = time.monotonic() + timeout
    got = fn()
    while got < want and time.monotonic() < end:
        time.sleep(0.3)
        got = fn()
    time.sleep(1.5)  # and nothing more arrives
    return fn()


def flow_line(i: int) -> str:
    return (f"Nov 24 10:{i // 60 % 60:02d}:{i % 60:02d} node-1 kernel: [ {1000 + i}.000000] calico-packet: "
            f"IN=cali1a2b OUT=eth0 SRC=10.244.1.{i % 250 + 1} DST=10.96.0.{i % 7 + 1} LEN=60 PROTO=TCP "
            f"SPT={30000 + i} DPT=443 SYN")


def test_tail_pipeline_counts_exactly_across_a_rotation(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "kern.log"
    log.write_text("")
    with agent(port, tmp_path) as a:
        fb = Pipeline("kernel-tail.yaml", tmp_path, port, {"path": str(log)})
        try:
            time.sleep(2)  # Fluent Bit has the file open
            with log.open("a") as fh:
                for i in range(300):
                    fh.write(flow_line(i) + "\n")
                    if i % 3 == 0:
                        fh.write("Nov 24 10:00:00 node-1 kernel: eth0: link becomes ready\n")  # grep drops it
            assert wait_for(lambda: counted(a), 300) == 300
            log.rename(tmp_path / "kern.log.1")  # logrotate's default: move, then a new file
            with (tmp_path / "kern.log").open("w") as fh:
                fh.writelines(flow_line(1000 + i) + "\n" for i in range(200))
            assert wait_for(lambda: counted(a), 500) == 500
            assert counted(a, "malformed") == 0
        finally:
            fb.close()


def test_records_buffered_while_the_agent_is_down_arrive_after_it_restarts(tmp_path: Path) -> None:
    """kill -9 of the agent: what Fluent Bit read meanwhile waits in its filesystem buffer and is
    delivered to the next agent. At least once: every record counted by one of the two agents."""
    port = free_port()
    log = tmp_path / "kern.log"
    log.write_text("")
    first = agent(port, tmp_path)
    fb = Pipeline("kernel-tail.yaml", tmp_path, port, {"path": str(log)})
    try:
        time.sleep(2)
        log.write_text("".join(flow_line(i) + "\n" for i in range(100)))
        assert wait_for(lambda: counted(first), 100) == 100
        first.proc.kill()
        first.proc.wait(10)
        with log.open("a") as fh:
            fh.writelines(flow_line(100 + i) + "\n" for i in range(150))
        time.sleep(3)  # Fluent Bit reads them, fails to deliver, keeps them on disk
        with agent(port, tmp_path) as second:
            got = wait_for(lambda: counted(second), 150, timeout=60)
        assert got >= 150, f"{got} of the 150 records written while the agent was down"
    finally:
        first.close()
        fb.close()


CORE_DNS = ('[INFO] 10.244.1.{n}:{port} - {qid} "A IN {name}. udp 40 false 512" {rcode} qr,rd,ra 120 0.000{d}s')


def test_coredns_pipeline_on_cri_wrapped_lines(tmp_path: Path) -> None:
    port = free_port()
    logs = tmp_path / "containers"
    logs.mkdir()
    log = logs / "coredns-5d78c9869d-abcde_kube-system_coredns-0123456789abcdef.log"
    log.write_text("")
    with agent(port, tmp_path) as a:
        fb = Pipeline("coredns.yaml", tmp_path, port, {"path": str(logs / "coredns-*_kube-system_coredns-*.log")})
        try:
            time.sleep(2)
            lines = []
            for i in range(120):
                text = CORE_DNS.format(n=i % 200 + 2, port=40000 + i, qid=i, name=f"svc{i % 9}.shop.svc.cluster.local",
                                       rcode="NOERROR" if i % 4 else "NXDOMAIN", d=i % 9 + 1)
                stamp = f"2026-11-24T10:00:{i % 60:02d}.{i:09d}Z"
                if i % 10 == 0:  # the runtime split this one in two: CRI partial (P) then final (F)
                    lines += [f"{stamp} stdout P {text[:30]}", f"{stamp} stdout F {text[30:]}"]
                else:
                    lines.append(f"{stamp} stdout F {text}")
                if i % 5 == 0:
                    lines.append(f"{stamp} stdout F [INFO] plugin/reload: Running configuration SHA512 = abc")
            log.write_text("\n".join(lines) + "\n")
            total = names.DNS_REQUESTS + "_total"
            got = wait_for(lambda: sum(v for _, v in samples(a.metrics()).get(total, [])), 120)
            assert got == 120
            assert counted(a, "malformed") == 0
        finally:
            fb.close()


def test_kmsg_pipeline_on_real_kernel_lines(make_node, tmp_path: Path) -> None:
    """Real LOG lines from the node harness, read from /dev/kmsg by Fluent Bit's kmsg input. The
    ring also holds other tests' lines (another prefix: not counted as parsed), so exactness is
    judged on this test's own prefix."""
    from calico_lens.demo.node import Rule, kmsg_reader

    prefix = "fb" + uuid.uuid4().hex[:6]
    node = make_node("iptables", f"{prefix}-%k")
    web = node.add_pod("web-0", "shop", "web")
    db = node.add_pod("db-0", "shop", "db")
    node.add_rule(Rule("allow-web", "shop", "np", "default", "ingress", db, "allow", "tcp", 5432))
    node.serve_tcp(db.name, 5432)
    port = free_port()
    with kmsg_reader() as read, agent(port, tmp_path, "--log-prefix", f"{prefix}-%k") as a:
        fb = Pipeline("kernel-kmsg.yaml", tmp_path, port)
        try:
            time.sleep(2)
            for _ in range(40):
                assert node.tcp_connect(web.name, db.name, 5432)
            time.sleep(1)
            ours = [line for line in read() if prefix in line]
            assert len(ours) >= 40
            got = wait_for(lambda: counted(a), len(ours))
            assert got == len(ours), f"{got} counted of {len(ours)} kernel lines"
        finally:
            fb.close()
