"""End to end with real processes: agent fed a denied-traffic burst → real Prometheus with the
generated rules → real Alertmanager with the example routing → a webhook receiver (the demo's)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from calico_lens.demo.alerting import WebhookReceiver, alertmanager_binary, example_config, start_alertmanager

from tests.e2e.agent_proc import AgentProcess
from tests.helpers import ROOT, as_syslog, case
from tests.prom import free_port, wait_http

sys.path.insert(0, str(ROOT / "alerts"))
import generate

# This Prometheus is seconds old: judge "new" denials after one second of history (1 d by default,
# so that a young Prometheus does not call every denying policy new) and fire at once.
YOUNG = {"new_denial_min_history": "1s", "new_denial_for": "1s"}


def test_denied_burst_reaches_the_webhook(tmp_path) -> None:
    records, meta, snap = case("iptables-cut")
    work = Path(tempfile.mkdtemp(prefix="cl-alert-"))
    received: list[tuple[str, dict]] = []
    hook = WebhookReceiver(lambda path, payload: received.append((path, payload)))
    procs: list[subprocess.Popen] = []
    try:
        # The example routing, pointed at this test's webhook, with a short group wait.
        binary = alertmanager_binary()
        assert binary, "Alertmanager is not installed (make setup installs it)"
        am_cfg = example_config(ROOT / "alerts" / "alertmanager.yaml", hook.port, group_wait="1s")
        am_port = free_port()
        procs.append(start_alertmanager(binary, am_cfg, work, am_port))
        wait_http(f"http://127.0.0.1:{am_port}/-/ready")

        feed = tmp_path / "kern.log"
        feed.write_text("")
        with AgentProcess("--source", f"file:{feed}", "--snapshot", str(snap), "--log-prefix",
                          meta["log_prefix"]) as agent:
            (work / "rules.yaml").write_text(generate.render(YOUNG))
            prom_port = free_port()
            (work / "prom.yml").write_text(yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(work / "rules.yaml")],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                "scrape_configs": [{"job_name": "calico-lens", "static_configs": [{"targets": [agent.address]}]}]}))
            procs.append(subprocess.Popen(
                ["prometheus", f"--config.file={work / 'prom.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
            time.sleep(2)  # a few clean scrapes first
            feed.write_text(as_syslog(records))  # the burst: denied flows from two policies
            end = time.monotonic() + 60
            alerts: dict[str, dict] = {}
            while time.monotonic() < end and len(alerts) < 2:
                for path, body in list(received):
                    for a in body["alerts"]:
                        if a["labels"]["alertname"] == "CalicoLensPolicyStartedDenying" and a["status"] == "firing":
                            alerts[a["labels"]["policy"]] = {"path": path, **a}
                time.sleep(0.2)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        hook.close()
        shutil.rmtree(work, ignore_errors=True)
    assert set(alerts) == {"shop/default-deny-backend-ingress", "payments/deny-all-ingress"}, alerts
    a = alerts["payments/deny-all-ingress"]
    assert a["path"] == "/team"  # severity=warning routes to the team receiver
    assert a["labels"]["severity"] == "warning" and a["labels"]["tier"] == "default"
    assert a["annotations"]["summary"] == "A policy started denying traffic it never denied before."
    assert "payments/deny-all-ingress" in a["annotations"]["description"]
    assert a["annotations"]["runbook_url"].endswith("#calicolenspolicystarteddenying")
