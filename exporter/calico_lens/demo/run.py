"""``calico-lens demo``: the real agent on a made-up cluster, fed generated traffic, with a real
Prometheus scraping it and a real Alertmanager routing its alerts when they are installed."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from calico_lens.agent import Agent
from calico_lens.config import Config
from calico_lens.demo.alerting import WebhookReceiver, alertmanager_binary, describe, example_config, start_alertmanager
from calico_lens.demo.cluster import LOG_PREFIX, DnsGenerator, TrafficGenerator, snapshot
from calico_lens.demo.node import PrivilegeError
from calico_lens.demo.tcpnode import DemoNode
from calico_lens.inventory.daemon import Inventory
from calico_lens.server import serve

ROOT = Path(__file__).resolve().parents[3]  # the source checkout, when run from one


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# When the demo's Prometheus starts scraping kubelets, which its egress policy denies: a policy that
# starts denying, after the demo's Prometheus has some history to call it new.
LATE_AFTER = 45.0


def _writer(path: Path, rate: float, stop: threading.Event) -> None:
    gen = TrafficGenerator(seed=int(time.time()), retries=True)
    dns = DnsGenerator(seed=int(time.time()))
    tick = 0.2
    late = time.monotonic() + LATE_AFTER
    with path.open("a") as fh:
        while not stop.wait(tick):
            if late and time.monotonic() >= late:
                late = 0.0
                gen.start_late()
                print("  [demo] prometheus starts scraping kubelets on :10250; monitoring/default.prometheus-egress "
                      "denies it (CalicoLensPolicyStartedDenying fires shortly)", flush=True)
            n = max(1, int(rate * tick))
            fh.write("\n".join(gen.lines(n)) + "\n")
            fh.write("\n".join(dns.lines(max(1, n // 2))) + "\n")  # CoreDNS lines, told apart per line
            fh.write("Nov 23 19:40:05 node-1 kernel: eth0: link becomes ready (not a flow line)\n")
            fh.flush()


def _felix(sock: str, interval: float, stop: threading.Event) -> None:
    """A stand-in Felix: the demo's traffic as Felix flow records over the real socket and protocol."""
    from calico_lens.demo.felix import DemoFlows, StandInFelix

    gen = DemoFlows(seed=int(time.time()), scale=interval / 5)
    felix = StandInFelix(sock)
    while not stop.wait(interval):
        try:
            felix.send(gen.flush(int(time.time())))
        except Exception:  # the agent is stopping or restarting: Felix reconnects and resends next round
            time.sleep(1)
    felix.close()


# A demo has minutes, not days: the staged-policy alert waits 20 s here instead of 15 m, and a policy's
# denials are judged "new" against 30 s of history (1 d by default) with "now" the last 20 s.
DEMO_RULE_SETTINGS = {"staged_for": "20s", "new_denial_min_history": "30s", "new_denial_recent": "20s",
                      "new_denial_for": "10s"}


def start_node(skip: bool) -> tuple[DemoNode | None, str]:
    """The small real node behind the TCP board, where it can be built; else why not, in one line."""
    if skip:
        return None, "off (--no-node): the TCP board stays empty"
    if os.geteuid() != 0:
        return None, "empty: run the demo as root (sudo make demo) for a small real node with TCP traffic"
    try:
        node = DemoNode()
    except (PrivilegeError, OSError, subprocess.CalledProcessError, RuntimeError) as e:
        return None, f"empty: the small real node could not be built ({str(e).splitlines()[0]})"
    return node, (f"real TCP traffic shop/loadgen → shop/cache (delay, 3% loss) in network namespaces "
                  f"{node.node.node_ns} and its pods'")


def demo_rules(workdir: Path) -> list[str]:
    """The rules from alerts/generate.py with the demo's shorter waits (the committed file otherwise)."""
    gen = ROOT / "alerts" / "generate.py"
    if not gen.is_file():
        return []
    import runpy

    text = runpy.run_path(str(gen))["render"](DEMO_RULE_SETTINGS)
    (workdir / "calico-lens.rules.yaml").write_text(text)
    return [str(workdir / "calico-lens.rules.yaml")]


def start_prometheus(workdir: Path, target: str, port: int, inventory: str,
                     alertmanager: str | None = None) -> subprocess.Popen | None:
    binary = shutil.which("prometheus")
    if binary is None:
        print("  (Prometheus is not installed: `make setup` installs it; the agent runs without it)")
        return None
    rules = demo_rules(workdir)
    cfg = {"global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
           "scrape_configs": [
               {"job_name": "calico-lens", "static_configs": [{"targets": [target], "labels": {"node": "node-1"}}]},
               {"job_name": "calico-lens-inventory", "static_configs": [{"targets": [inventory]}]}]}
    if rules:
        cfg["rule_files"] = rules
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([binary, f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_alerting(workdir: Path, port: int) -> tuple[subprocess.Popen | None, WebhookReceiver | None, str | None]:
    """Alertmanager with the example routing, its webhooks printed to this terminal."""
    binary = alertmanager_binary()
    config = ROOT / "alerts" / "alertmanager.yaml"
    if binary is None or not config.is_file():
        print("  (Alertmanager or alerts/alertmanager.yaml not found: `make setup` in a checkout has both)")
        return None, None, None
    out = threading.Lock()

    def show(path: str, payload: dict) -> None:
        with out:
            print("\n".join(describe(path, payload)), flush=True)

    hook = WebhookReceiver(show)
    port = port if _port_free(port) else _free_port()
    # A 5 s group wait instead of the example's 30 s: a demo should show its first alert quickly.
    am = start_alertmanager(binary, example_config(config, hook.port, group_wait="5s"), workdir, port)
    return am, hook, f"127.0.0.1:{port}"


def run_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    node, node_note = start_node(args.no_node)
    try:
        return _run(args, node, node_note)
    finally:
        if node is not None:  # the namespaces and their rules go, whatever happened
            node.close()


def _run(args: argparse.Namespace, node: DemoNode | None, node_note: str) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="calico-lens-demo-"))
    cluster = snapshot()
    if node is not None:
        cluster["items"] += node.objects()
    snap = workdir / "cluster.yaml"
    snap.write_text(yaml.safe_dump(cluster, sort_keys=False))
    log = workdir / "kern.log"
    log.write_text("")
    host, _, port = args.metrics_address.rpartition(":")
    if not _port_free(int(port)):
        port = str(_free_port())
    address = f"{host or '127.0.0.1'}:{port}"
    sock = str(workdir / "felix" / "flows.sock")
    cfg = Config(log_prefix=LOG_PREFIX, sources=[f"file:{log}", f"felix:unix:{sock}"], metrics_address=address,
                 snapshot=str(snap), **(node.agent_settings() if node is not None else {}))
    agent = Agent(cfg)
    agent.start(kube=False)
    # The cluster-wide inventory (policy board, security score) on the same made-up cluster.
    inv_address = f"127.0.0.1:{_free_port()}"
    inventory = Inventory(Config(snapshot=str(snap), metrics_address=inv_address))
    inventory.load()
    inv_httpd = serve("127.0.0.1", int(inv_address.rsplit(":", 1)[1]), inventory.exposition, inventory.ready)
    stop = threading.Event()
    threading.Thread(target=_writer, args=(log, args.rate, stop), daemon=True).start()
    threading.Thread(target=_felix, args=(sock, 5.0, stop), daemon=True).start()

    print("calico-lens demo: a made-up cluster (shop, payments, kube-system, monitoring) with generated")
    print(f"Calico LOG lines ({args.rate:.0f}/s) and CoreDNS query lines flowing through the real agent pipeline,")
    print("and the same traffic as Felix flow records (a stand-in Felix on the agent's gRPC socket every 5 s,")
    print("with a staged policy that would deny the frontend's calls to the internet).")
    print(f"  metrics      http://{address}/metrics")
    print(f"  inventory    http://{inv_address}/metrics  (policy board, security score)")
    prom = am = hook = None
    if not args.no_prometheus:
        am_address = None
        if not args.no_alertmanager and shutil.which("prometheus"):
            am, hook, am_address = start_alerting(workdir, args.alertmanager_port)
        pport = args.prometheus_port if _port_free(args.prometheus_port) else _free_port()
        prom = start_prometheus(workdir, address, pport, inv_address, am_address)
        if prom is not None:
            q = "sum by (source_workload, destination_workload, action) (rate(calico_lens_flows_total[1m]))"
            print(f"  prometheus   http://127.0.0.1:{pport}/graph?g0.expr={q.replace(' ', '%20')}")
            print(f"  alerts       http://127.0.0.1:{pport}/alerts  (rules from alerts/)")
        if am is not None:
            print(f"  alertmanager http://{am_address}  (example routing; notifications are printed here)")
    print(f"  files        {workdir} (snapshot, generated kern.log)")
    print(f"  tcp board    {node_note}")
    print(f"Try: curl -s http://{address}/metrics | grep 'action=\"deny\"'")
    print(f"     curl -s http://{address}/metrics | grep policy_preview")
    print("Stop with Ctrl-C." if not args.duration else f"Stopping after {args.duration:.0f} s.")
    sys.stdout.flush()

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait(args.duration or None)
    stop.set()
    agent.stop()
    inv_httpd.shutdown()
    for proc in (prom, am):
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    if hook is not None:
        hook.close()
    shutil.rmtree(workdir, ignore_errors=True)
    print("calico-lens demo: stopped, files removed.")
    return 0
