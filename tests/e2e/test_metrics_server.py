"""The agent's HTTP server as Prometheus and as an attacker on the node network meet it: HEAD,
gzip and OpenMetrics as prometheus-client's own exposition offers them, the process_* metrics,
a bound on connections and on the time a request may take (each refusal counted), and TLS with
basic auth from an exporter-toolkit web config file, scraped by the real Prometheus."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml
from calico_lens.metrics import names
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.e2e.agent_proc import AgentProcess
from tests.helpers import ROOT, samples
from tests.prom import free_port, wait_http

REFUSED = names.METRICS_REFUSED + "_total"
LINE = ("calico-packet: IN=cali1a2b OUT=eth0 SRC=10.244.1.{i} DST=10.96.0.10 LEN=60 PROTO=TCP SPT={p} DPT=443 SYN\n")


def refused(agent: AgentProcess, reason: str, **kw: object) -> float:
    text = requests.get(agent.url + "/metrics", timeout=5, **kw).text
    return sum(v for lab, v in samples(text).get(REFUSED, []) if lab == {"reason": reason})


@pytest.fixture
def agent(tmp_path: Path):
    feed = tmp_path / "kern.log"
    feed.write_text("")
    snap = tmp_path / "cluster.yaml"
    snap.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    limits = {"CALICO_LENS_METRICS_MAX_CONNECTIONS": "4", "CALICO_LENS_METRICS_REQUEST_TIMEOUT": "1s"}
    with AgentProcess("--source", f"file:{feed}", "--snapshot", str(snap), env=limits) as a:
        time.sleep(0.5)  # the file is followed from its end, as tail -F does
        with feed.open("a") as fh:
            fh.write("".join(LINE.format(i=i + 1, p=40000 + i) for i in range(20)))
        end = time.monotonic() + 10
        while "calico_lens_flows_total{" not in a.metrics() and time.monotonic() < end:
            time.sleep(0.2)
        yield a


def test_head_gzip_openmetrics_and_process_metrics(agent: AgentProcess) -> None:
    head = requests.head(agent.url + "/metrics", timeout=5)
    get = requests.get(agent.url + "/metrics", timeout=5, headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Content-Length"] == get.headers["Content-Length"] or "Content-Length" in head.headers
    raw = requests.get(agent.url + "/metrics", timeout=5, headers={"Accept-Encoding": "gzip"}, stream=True).raw
    assert raw.headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(raw.read()).decode()
    assert "calico_lens_flows_total{" in text and "process_resident_memory_bytes" in text
    om = requests.get(agent.url + "/metrics", timeout=5,
                      headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(om.text)}  # the strict parser: # EOF, names, types
    flows = families[names.FLOWS]
    assert flows.type == "counter" and sum(s.value for s in flows.samples if s.name.endswith("_total")) == 20
    assert "process_cpu_seconds" in families


def test_idle_and_trickling_connections_are_cut_and_counted(agent: AgentProcess) -> None:
    """More connections than slots: one more is answered 503 at once; each idle or trickling
    connection is cut at the request deadline; then good scrapes work again."""
    host, port = agent.address.split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(4)]
    time.sleep(0.2)
    extra = socket.create_connection((host, int(port)))
    extra.settimeout(3)
    assert extra.recv(100).startswith(b"HTTP/1.0 503")
    trickle = idle[0]
    trickle.sendall(b"GET /metr")
    time.sleep(1.6)  # past the 1 s deadline
    for s in idle:
        s.settimeout(2)
        assert s.recv(100) == b"", "the server should have closed an idle connection"
        s.close()
    extra.close()
    assert requests.get(agent.url + "/readyz", timeout=5).status_code == 200
    assert refused(agent, "too_many_connections") >= 1
    assert refused(agent, "timeout") >= 4


@pytest.fixture
def tls_agent(tmp_path: Path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=agent",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True, timeout=60)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(tmp_path / "cert.pem"),
                                                         "key_file": str(tmp_path / "key.pem")},
                                   "basic_auth_users": {"prometheus": hashed}}))
    with AgentProcess("--source", f"felix:unix:{tmp_path / 'f.sock'}", "--web-config-file", str(web),
                      ready=False, scheme="https", verify=str(tmp_path / "cert.pem")) as a:
        yield a, tmp_path / "cert.pem"


def test_tls_and_basic_auth_from_a_web_config_file(tls_agent) -> None:
    agent, ca = tls_agent
    url = agent.url
    assert requests.get(url + "/metrics", timeout=5, verify=str(ca), auth=("prometheus", "s3cret")).status_code == 200
    assert requests.get(url + "/metrics", timeout=5, verify=str(ca), auth=("prometheus", "nope")).status_code == 401
    assert requests.get(url + "/metrics", timeout=5, verify=str(ca)).status_code == 401
    assert requests.get(url + "/healthz", timeout=5, verify=str(ca)).status_code == 200  # the kubelet's probes
    with pytest.raises(requests.RequestException):
        requests.get(url.replace("https://", "http://") + "/metrics", timeout=5)
    auth = {"verify": str(ca), "auth": ("prometheus", "s3cret")}
    assert refused(agent, "auth_failed", **auth) == 2
    end = time.monotonic() + 5
    while refused(agent, "tls_error", **auth) < 1 and time.monotonic() < end:
        time.sleep(0.2)
    assert refused(agent, "tls_error", **auth) == 1


def test_the_real_prometheus_scrapes_with_tls_and_basic_auth(tls_agent, tmp_path: Path) -> None:
    agent, ca = tls_agent
    port = free_port()
    cfg = {"global": {"scrape_interval": "1s"},
           "scrape_configs": [{"job_name": "calico-lens", "scheme": "https",
                               "tls_config": {"ca_file": str(ca)},
                               "basic_auth": {"username": "prometheus", "password": "s3cret"},
                               "static_configs": [{"targets": [agent.address]}]}]}
    (tmp_path / "prom.yml").write_text(yaml.safe_dump(cfg))
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prom.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
        end = time.monotonic() + 20
        result: list = []
        while time.monotonic() < end and not result:
            time.sleep(0.5)
            result = requests.get(f"http://127.0.0.1:{port}/api/v1/query", timeout=5,
                                  params={"query": "process_resident_memory_bytes"}).json()["data"]["result"]
        up = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"}, timeout=5).json()
        assert result, up
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        prom.terminate()
        prom.wait(10)


@pytest.mark.parametrize("web,message", [
    ({"tls_server_config": {"cert_file": "/nope.pem", "key_file": "/nope.key"}}, "cannot load cert_file"),
    ({"basic_auth_users": {"prometheus": "plaintext"}}, "basic_auth_users.prometheus: not a bcrypt hash"),
    ({"tls_config": {}}, "unknown key 'tls_config'"),
])
def test_a_bad_web_config_is_a_configuration_error(web: dict, message: str, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(web))
    p = subprocess.run([sys.executable, "-m", "calico_lens", "agent", "--source", f"felix:unix:{tmp_path / 's'}",
                        "--web-config-file", str(path), "--metrics-address", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 2 and message in p.stderr, p.stderr


def test_the_quickstart_prometheus_scrapes_a_protected_metrics(tls_agent, tmp_path: Path) -> None:
    """metrics.webConfigSecret with the quickstart: the chart's own scrape job (scheme, basic auth and
    CA from quickstart.prometheus.scrape.secret), run by the real Prometheus against a real agent."""
    from tests.e2e.test_quickstart_scrape import _meta
    from tests.unit.test_helm import find, render

    agent, ca = tls_agent
    docs = render("stock-values.yaml", "--set", "metrics.webConfigSecret=web", "--set", "metrics.scheme=https",
                  "--set", "quickstart.prometheus.scrape.secret=scrape")
    spec = find(docs, "Deployment", "-prometheus")["spec"]["template"]["spec"]
    assert {"name": "scrape", "secret": {"secretName": "scrape"}} in spec["volumes"]
    cfg = yaml.safe_load(find(docs, "ConfigMap", "-prometheus")["data"]["prometheus.yml"])
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "calico-lens")
    (tmp_path / "password").write_text("s3cret")
    text = yaml.safe_dump(job).replace("/etc/prometheus/scrape/password", str(tmp_path / "password")) \
        .replace("/etc/prometheus/scrape/ca.crt", str(ca))
    job = yaml.safe_load(text)
    job.pop("kubernetes_sd_configs")
    (tmp_path / "targets.json").write_text(json.dumps([{"targets": [agent.address], "labels": _meta("agent")}]))
    job |= {"file_sd_configs": [{"files": [str(tmp_path / "targets.json")]}], "scrape_interval": "1s"}
    port = free_port()
    (tmp_path / "prom.yml").write_text(yaml.safe_dump({"scrape_configs": [job]}))
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prom.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
        end, up = time.monotonic() + 20, []
        while time.monotonic() < end and not (up and up[0]["value"][1] == "1"):
            time.sleep(0.5)
            up = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"},
                              timeout=5).json()["data"]["result"]
        assert up and up[0]["value"][1] == "1" and up[0]["metric"]["job"] == "calico-lens", up
    finally:
        prom.terminate()
        prom.wait(10)
