"""`calico-lens demo` runs the real agent on its built-in cluster, a real Prometheus scrapes it, and
a real Alertmanager delivers the alerts to the terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import requests

from tests.prom import free_port


def test_demo_serves_flows_and_prometheus_scrapes_them() -> None:
    mport, pport, aport = free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "calico_lens", "demo", "--duration", "120", "--rate", "500",
                             "--metrics-address", f"127.0.0.1:{mport}", "--prometheus-port", str(pport),
                             "--alertmanager-port", str(aport)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        end = time.monotonic() + 15
        while time.monotonic() < end and not any(line.startswith("Stop") for line in output):
            time.sleep(0.1)
        banner = "".join(output)
        assert f"http://127.0.0.1:{mport}/metrics" in banner
        assert f"http://127.0.0.1:{pport}/graph" in banner
        assert f"http://127.0.0.1:{aport}" in banner
        url = f"http://127.0.0.1:{pport}/api/v1/query"
        want = {"deny": False, "allow": False, "networkset": False, "public": False, "coredns": False}
        end = time.monotonic() + 35
        while time.monotonic() < end and not all(want.values()):
            try:
                res = requests.get(url, params={"query": "calico_lens_flows_total"}, timeout=5).json()["data"]["result"]
            except requests.RequestException:
                res = []
            for r in res:
                m = r["metric"]
                want["deny"] |= m.get("action") == "deny"
                want["allow"] |= m.get("action") == "allow"
                want["networkset"] |= m.get("destination_kind") == "networkset"
                want["public"] |= m.get("destination_kind") == "public"
                want["coredns"] |= m.get("destination_workload") == "coredns" and m.get("destination_port") == "53"
            time.sleep(0.5)
        assert all(want.values()), want
        wanted = {("cluster", "NOERROR"), ("search_miss", "NXDOMAIN"), ("external", "SERVFAIL"),
                  ("external", "NXDOMAIN"), ("cluster", "NXDOMAIN")}
        seen: set = set()
        while time.monotonic() < end + 10 and not wanted <= seen:
            dns = requests.get(url, params={"query": "sum by (zone, rcode) (calico_lens_dns_requests_total)"},
                               timeout=5).json()["data"]["result"]
            seen = {(r["metric"]["zone"], r["metric"]["rcode"]) for r in dns}
            time.sleep(0.5)
        assert wanted <= seen
        score: list = []
        while time.monotonic() < end + 20 and not score:  # the inventory is scraped every 5 s
            r = requests.get(url, params={"query": "calico_lens_security_score"}, timeout=5)
            score = r.json()["data"]["result"]
            time.sleep(0.5)
        assert score and 0 <= float(score[0]["value"][1]) <= 100
        malformed = requests.get(url, params={"query": 'sum(calico_lens_input_lines_total{result="malformed"})'},
                                 timeout=5).json()["data"]["result"]
        assert float(malformed[0]["value"][1]) == 0
        # 45 s in, Prometheus starts scraping kubelets and its egress policy starts denying: only that
        # policy is new (the others denied from the start, which the demo's Prometheus has seen), so
        # only it fires; the example routing sends warnings to the "team" webhook, which the demo prints.
        while time.monotonic() < end + 40 and not any("firing CalicoLensPolicyStartedDenying" in x for x in output):
            time.sleep(0.5)
        fired = [x for x in output if "firing CalicoLensPolicyStartedDenying" in x]
        new = "[warning] Policy monitoring/default.prometheus-egress "
        assert fired and all(x.startswith("  alert → team: ") and new in x for x in fired), output
        # Felix's records through the stand-in Felix: connections, and the staged policy's preview
        preview = requests.get(url, params={"query": "calico_lens_policy_preview_connections_total"},
                               timeout=5).json()["data"]["result"]
        assert {(r["metric"]["policy"], r["metric"]["pending_action"]) for r in preview} >= {
            ("shop/default.frontend-public-lockdown", "deny"), ("payments/default.checkout-allow-dns", "allow")}
        while time.monotonic() < end + 60 and not any("firing CalicoLensStagedPolicyWouldDeny" in x for x in output):
            time.sleep(0.5)
        staged = [x for x in output if "firing CalicoLensStagedPolicyWouldDeny" in x]
        assert staged and "shop/default.frontend-public-lockdown" in staged[0], output
        # Ctrl-C at a terminal signals the whole foreground process group: the demo stops everything
        # it started, quietly (its helpers in the node's namespaces once each printed a traceback)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
        reader.join(5)
        assert output[-1] == "calico-lens demo: stopped, files removed.\n", output[-5:]
        assert not any(w in x for x in output for w in ("Traceback", "KeyboardInterrupt", "RefusedError")), output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(20)
        reader.join(5)
