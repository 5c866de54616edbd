"""The quickstart Prometheus's scrape config, run by the real Prometheus: Kubernetes pod discovery
cannot run here (and Debian's Prometheus has no Kubernetes discovery at all), so the targets come
from a file carrying the same __meta_kubernetes_* labels pod discovery would attach; the chart's
relabelling then has to keep only calico-lens pods, name the jobs the rules expect, label `node`
as the PodMonitor does and leave the metrics' own `namespace` alone."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

from tests.helpers import DATA
from tests.prom import free_port, wait_http
from tests.unit.test_helm import find, render


def _meta(component: str, port_name: str = "metrics", instance: str = "lens") -> dict[str, str]:
    return {"__meta_kubernetes_pod_label_app_kubernetes_io_instance": instance,
            "__meta_kubernetes_pod_label_app_kubernetes_io_component": component,
            "__meta_kubernetes_pod_container_port_name": port_name,
            "__meta_kubernetes_pod_node_name": "node-7", "__meta_kubernetes_pod_name": f"lens-{component}-x1"}


def test_quickstart_relabelling_in_the_real_prometheus() -> None:
    cfg = yaml.safe_load(find(render("stock-values.yaml"), "ConfigMap", "-prometheus")["data"]["prometheus.yml"])
    work = Path(tempfile.mkdtemp(prefix="cl-qs-"))
    inv_port, prom_port, other = free_port(), free_port(), free_port()
    inventory = subprocess.Popen([sys.executable, "-m", "calico_lens", "inventory", "--snapshot",
                                  str(DATA / "inventory" / "mixed.yaml"), "--metrics-address",
                                  f"127.0.0.1:{inv_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{inv_port}"
    (work / "targets.json").write_text(json.dumps([
        {"targets": [target], "labels": _meta("inventory")},
        {"targets": [f"127.0.0.1:{other}"], "labels": _meta("grafana")},  # another component: dropped
        {"targets": [f"127.0.0.1:{other + 1}"], "labels": _meta("inventory", "http")},  # not the metrics port
        {"targets": [f"127.0.0.1:{other + 2}"], "labels": _meta("inventory", instance="other-release")},
    ]))
    for job in cfg["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"names": ["observability"]}}]
        job["file_sd_configs"] = [{"files": [str(work / "targets.json")]}]
        job["scrape_interval"] = "1s"
    cfg.pop("rule_files"), cfg.pop("alerting")
    (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    prom = subprocess.Popen(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{prom_port}/api/v1/query"
    try:
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
        up: list = []
        iso: list = []
        end = time.monotonic() + 30
        while time.monotonic() < end and not iso:
            time.sleep(0.5)
            up = requests.get(url, params={"query": "up"}, timeout=5).json()["data"]["result"]
            iso = requests.get(url, params={"query": "calico_lens_namespace_isolation"},
                               timeout=5).json()["data"]["result"]
    finally:
        prom.terminate()
        inventory.terminate()
        prom.wait(10)
        inventory.wait(10)
    assert [r["metric"] for r in up] == [{"__name__": "up", "instance": target, "job": "calico-lens-inventory",
                                          "node": "node-7", "pod": "lens-inventory-x1"}]
    assert iso and {r["metric"]["namespace"] for r in iso} == {"shop", "dev"}
    assert all(r["metric"]["node"] == "node-7" for r in iso)
