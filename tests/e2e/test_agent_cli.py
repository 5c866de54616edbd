"""The agent as operators meet it: flags, config errors, readiness against a Kubernetes API."""

from __future__ import annotations

import os
import socket
import time

import requests
import yaml
from calico_lens import __version__
from calico_lens.config import Config
from calico_lens.kube.metadata import MetadataStore
from calico_lens.pipeline import FlowPipeline

from tests.e2e.agent_proc import AgentProcess
from tests.helpers import KERNEL, run_cli
from tests.kubeapi import FakeKubeAPI
from tests.unit.test_kube_watch import pod


def test_version_and_help() -> None:
    version = run_cli("--version").stdout.decode().strip()
    assert version == f"calico-lens {__version__} (C scanner, C snapshot YAML reader)"
    out = run_cli("--help").stdout.decode()
    for word in ("demo", "replay", "agent", "CALICO_LENS_LOG_PREFIX"):
        assert word in out
    assert "--log-prefix" in run_cli("agent", "--help").stdout.decode()


def test_bad_config_exits_before_serving(tmp_path) -> None:
    p = run_cli("agent", "--source", "tcp:1.2.3.4", check=False)
    assert p.returncode == 2
    assert b"sources: 'tcp:1.2.3.4' is not a source" in p.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_series: -5\n")
    p = run_cli("replay", "--config", str(cfg), "/dev/null", check=False)
    assert p.returncode == 2 and b"max_series: -5 is too small" in p.stderr
    p = run_cli("replay", "/no/such/file", check=False)
    assert p.returncode == 2 and b"cannot read /no/such/file" in p.stderr


def test_no_kubernetes_api_and_busy_port_are_clear_errors(tmp_path) -> None:
    """Run by hand outside a cluster: one line that says what to give, no traceback."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config
    for cmd in (("agent", "--source", "stdin"), ("inventory",)):
        p = run_cli(*cmd, check=False, env=env)
        assert p.returncode == 2 and b"Traceback" not in p.stderr, p.stderr
        assert b"no Kubernetes API: not in a pod and no kubeconfig" in p.stderr and b"--snapshot FILE" in p.stderr
    (tmp_path / "bad-kubeconfig").write_text("clusters: [\n")
    p = run_cli("agent", "--kubeconfig", str(tmp_path / "bad-kubeconfig"), check=False, env=env)
    assert p.returncode == 2 and b"kubeconfig: " in p.stderr and b"Traceback" not in p.stderr, p.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        p = run_cli("agent", "--source", "stdin", "--snapshot", str(KERNEL / "iptables-default.snapshot.yaml"),
                    "--metrics-address", address, check=False, input=b"")
    assert p.returncode == 2, p.stderr
    assert f"metrics_address: cannot serve on {address}".encode() in p.stderr, p.stderr


def test_ready_only_after_first_kubernetes_sync(tmp_path) -> None:
    with FakeKubeAPI() as api:
        api.forbidden.add("pods")
        api.put("pods", pod("web-0", "10.0.0.1"))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": api.url}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "users": [{"name": "test", "user": {"token": "t"}}]}))
        feed = tmp_path / "kern.log"
        feed.write_text("")
        with AgentProcess("--source", f"file:{feed}", "--kubeconfig", str(kubeconfig), ready=False) as a:
            time.sleep(1.0)
            r = requests.get(a.url + "/readyz", timeout=5)
            assert r.status_code == 503 and "pods" in r.text
            api.forbidden.discard("pods")
            end = time.monotonic() + 20
            while requests.get(a.url + "/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < end, "never became ready"
                time.sleep(0.2)
            text = a.metrics()
            assert 'calico_lens_kubernetes_objects{resource="pods"} 1.0' in text
            assert 'calico_lens_kubernetes_synced{resource="pods"} 1.0' in text


def test_pod_series_go_when_the_pod_goes() -> None:
    store = MetadataStore()
    store.load_list({"kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "shop"},
         "status": {"phase": "Running", "podIP": "10.0.0.1"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop"},
         "status": {"phase": "Running", "podIP": "10.0.0.2"}}]})
    pipe = FlowPipeline(Config(source_granularity="pod"), store)
    line = ("calico-packet: IN=cali1 OUT=eth0 SRC={} DST=1.1.1.1 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=1 DF "
            "PROTO=TCP SPT=1 DPT=443 \n")
    pipe.process("file", line.format("10.0.0.1") + line.format("10.0.0.2"))
    assert {k[1] for k, _ in pipe.flows.snapshot()} == {"web-0", "web-1"}
    store.apply("pods", "DELETED", {"metadata": {"name": "web-0", "namespace": "shop"}})
    assert {k[1] for k, _ in pipe.flows.snapshot()} == {"web-1"}
    assert pipe.flows.expired == 1


def test_a_source_that_cannot_run_makes_the_agent_not_ready_and_is_retried(tmp_path) -> None:
    """A source that failed used to stop for good while /readyz stayed 200. Now the agent says why,
    counts each failure and tries again with a backoff."""
    from tests.helpers import source_errors

    snap = tmp_path / "empty.yaml"
    snap.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": []}))
    missing = tmp_path / "no-tracefs" / "trace_pipe"
    with AgentProcess("--source", f"trace:{missing}", "--snapshot", str(snap), ready=False) as a:
        end = time.monotonic() + 20
        while True:
            r = requests.get(a.url + "/readyz", timeout=5)
            tries = source_errors(a.metrics())[("trace", "failed")]
            if (r.status_code == 503 and tries >= 2) or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert r.status_code == 503 and "cannot open the trace pipe" in r.text and str(missing) in r.text
        assert tries >= 2  # retried, not given up
        assert requests.get(a.url + "/healthz", timeout=5).status_code == 200  # alive, just not ready
