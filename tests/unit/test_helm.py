"""The Helm chart, rendered by the real helm binary: lint, Kubernetes schemas (1.29 and 1.33), the
Prometheus/Alertmanager configs it renders, synced assets, least-privilege RBAC, values schema."""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from calico_lens.kube.resources import INVENTORY_RESOURCES, RESOURCES

from tests.helpers import ROOT

HELM = ROOT / ".tools" / "helm"
CHART = ROOT / "helm" / "calico-lens"
CASES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
CRD_GROUPS = ("monitoring.coreos.com", "projectcalico.org")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail("helm is not installed: run `make setup` (it fetches helm into .tools/)", pytrace=False)
    p = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {p.stderr}")
    return p


def render(case: str, *extra: str) -> list[dict]:
    api = ["--api-versions", "monitoring.coreos.com/v1"] if "kube-prometheus" in case else []
    out = helm("template", "lens", str(CHART), "-n", "observability", "-f", str(CHART / "ci" / case), *api,
               *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict], kind: str, suffix: str = "") -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix))


@pytest.mark.parametrize("case", ["", *CASES])
def test_lint(case: str) -> None:
    p = helm("lint", str(CHART), "--strict", *(["-f", str(CHART / "ci" / case)] if case else []))
    assert "0 chart(s) failed" in p.stdout


@pytest.mark.parametrize("version", ["1.29", "1.33"])
@pytest.mark.parametrize("case", CASES)
def test_manifests_validate(case: str, version: str) -> None:
    docs = render(case)
    assert docs
    for d in docs:
        if d["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue  # custom resources: checked below by what they must contain
        kubernetes_validate.validate(d, version, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"DaemonSet", "Deployment", "ClusterRole"} <= kinds
    operator = "kube-prometheus" in case
    assert ("PodMonitor" in kinds) is operator and ("PrometheusRule" in kinds) is operator
    quickstart = not operator and case != "quickstart-off-values.yaml"
    assert any(d["metadata"]["name"].endswith("-grafana") for d in docs) is quickstart
    assert ({"Tier", "GlobalNetworkPolicy"} <= kinds) is (case == "log-policies-values.yaml")


def test_rendered_prometheus_rules_and_alertmanager(tmp_path) -> None:
    for case in ("stock-values.yaml", "remote-write-values.yaml"):
        docs = render(case)
        prom = find(docs, "ConfigMap", "-prometheus")["data"]
        # Debian's promtool is built without Kubernetes discovery: check the rest of the config with a
        # file in its place (tests/e2e/test_quickstart_scrape.py runs the relabelling for real).
        cfg = yaml.safe_load(prom["prometheus.yml"])
        for job in cfg["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
            job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        (tmp_path / "rules.yaml").write_text(prom["calico-lens.rules.yaml"])
        p = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                           text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        p = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True,
                           text=True)
        assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr
        am = find(docs, "ConfigMap", "-alertmanager")["data"]["alertmanager.yml"]
        (tmp_path / "am.yml").write_text(am)
        p = subprocess.run(["amtool", "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        if case == "remote-write-values.yaml":
            cfg = yaml.safe_load(prom["prometheus.yml"])
            assert cfg["remote_write"] == [{"url": "https://metrics.example.com/api/v1/write"}]
            urls = {w["url"] for r in yaml.safe_load(am)["receivers"] for w in r.get("webhook_configs", [])}
            assert urls == {"https://alerts.example.com/hook"}


def test_scrapes_label_node_and_keep_the_metrics_namespace_label() -> None:
    """The quickstart Prometheus and the PodMonitor give the agents' series the same `node` and `job`
    labels (per-node panels are keyed by node), and never rename the metrics' own `namespace`."""
    prom = yaml.safe_load(find(render("stock-values.yaml"), "ConfigMap", "-prometheus")["data"]["prometheus.yml"])
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert set(jobs) == {"calico-lens", "calico-lens-inventory"}
    for job in jobs.values():
        assert job["honor_labels"] is True
        assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["observability"]}}]
        assert {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"} in job["relabel_configs"]
    docs = render("stock-values.yaml")
    assert _grants(find(docs, "Role", "-prometheus")) == {("", "pods", v) for v in ("get", "list", "watch")}
    monitor = find(render("kube-prometheus-stack-values.yaml"), "PodMonitor")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["honorLabels"] is True
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in endpoint["relabelings"]


def test_metrics_behind_tls_basic_auth_and_a_network_policy() -> None:
    docs = render("kube-prometheus-secured-values.yaml")
    for kind, suffix in (("DaemonSet", "-agent"), ("Deployment", "-inventory")):
        spec = find(docs, kind, suffix)["spec"]["template"]["spec"]
        c = spec["containers"][0]
        assert c["args"][-2:] == ["--web-config-file", "/etc/calico-lens/web/web-config.yml"]
        assert {"name": "web-config", "mountPath": "/etc/calico-lens/web", "readOnly": True} in c["volumeMounts"]
        assert {"name": "web-config", "secret": {"secretName": "calico-lens-web"}} in spec["volumes"]
        assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS" == c["livenessProbe"]["httpGet"]["scheme"]
    endpoint = find(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["serverName"] == "calico-lens"
    assert endpoint["basicAuth"]["password"] == {"name": "calico-lens-scrape", "key": "password"}
    policy = find(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prometheus"}
    assert not [d for d in render("stock-values.yaml") if d["kind"] == "NetworkPolicy"]
    # the quickstart Prometheus scrapes plain HTTP: with /metrics protected it would see every target
    # down, so the chart refuses the pair and says what to do instead
    p = helm("template", "lens", str(CHART), "--set", "metrics.webConfigSecret=web", check=False)
    assert p.returncode != 0 and "quickstart.enabled=false" in p.stderr, p.stderr


def test_prometheus_rule_carries_the_rules() -> None:
    docs = render("kube-prometheus-stack-values.yaml")
    rule = find(docs, "PrometheusRule")
    source = yaml.safe_load((ROOT / "alerts" / "calico-lens.rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_rules_settings_reach_the_rules(tmp_path) -> None:
    """rules.agentSelector and rules.runbookUrl replace the generator's defaults everywhere, in the
    PrometheusRule and in the quickstart Prometheus, and the result is still valid rules."""
    sys.path.insert(0, str(ROOT / "alerts"))
    import generate

    values = yaml.safe_load((CHART / "values.yaml").read_text())["rules"]
    assert values == {"agentSelector": generate.SETTINGS["agent_selector"],
                      "runbookUrl": generate.SETTINGS["runbook_url"]}, "chart defaults and alerts/generate.py differ"
    custom = ["--set", 'rules.agentSelector=job=~"node-agents|calico-lens-.*"',
              "--set", "rules.runbookUrl=https://wiki.example.com/runbooks/calico-lens"]
    want = yaml.safe_load(generate.render({"agent_selector": 'job=~"node-agents|calico-lens-.*"',
                                           "runbook_url": "https://wiki.example.com/runbooks/calico-lens"}))
    rule = find(render("kube-prometheus-stack-values.yaml", *custom), "PrometheusRule")
    assert rule["spec"]["groups"] == want["groups"]
    text = find(render("stock-values.yaml", *custom), "ConfigMap", "-prometheus")["data"]["calico-lens.rules.yaml"]
    assert yaml.safe_load(text)["groups"] == want["groups"]
    (tmp_path / "rules.yaml").write_text(text)
    p = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    bad = helm("template", "lens", str(CHART), "--set", "rules.agentSelector=calico-lens", check=False)
    assert bad.returncode != 0 and "agentSelector" in bad.stderr


def test_synced_assets_equal_their_sources() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "helm" / "sync.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout
    docs = render("quickstart-off-values.yaml")
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]]
    assert len(dashboards) == len(list((ROOT / "dashboards" / "json").glob("*.json")))
    assert all(d["metadata"]["labels"]["grafana_dashboard"] == "1" for d in dashboards)


def _grants(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def _reads(resources) -> set[tuple[str, str, str]]:
    out = set()
    for r in resources:
        groups = [r.group, "crd.projectcalico.org"] if r.group == "projectcalico.org" else [r.group]
        out |= {(g, r.plural, v) for g in groups for v in ("list", "watch")}
    return out


def test_rbac_is_least_privilege() -> None:
    docs = render("kmsg-values.yaml")
    assert _grants(find(docs, "ClusterRole", "-agent")) == _reads(RESOURCES)
    docs = render("quickstart-off-values.yaml")  # the felix source alone reads no Kubernetes API
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role")
                and d["metadata"]["name"].endswith("-agent")]
    assert find(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert _grants(find(docs, "ClusterRole", "-inventory")) == _reads(INVENTORY_RESOURCES)
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole"):
            assert {v for _, _, v in _grants(d)} <= {"get", "list", "watch"}, d["metadata"]["name"]


def test_security_contexts() -> None:
    """Only what reads /dev/kmsg is privileged (a bind-mounted device is not in an unprivileged
    container's device allow-list: tests/e2e/test_image.py shows the EPERM); everything else drops
    every capability and adds only what it names."""
    docs = render("log-policies-values.yaml", "--set", "agent.sources={felix}")
    for d in docs:
        if d["kind"] not in ("DaemonSet", "Deployment"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")
    agent = find(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]["containers"][0]
    assert set(agent["securityContext"]["capabilities"]["add"]) == {"SYS_PTRACE", "SYS_ADMIN", "NET_ADMIN"}
    cfg = yaml.safe_load(find(docs, "ConfigMap", "-agent")["data"]["agent.yaml"])
    assert cfg["log_prefix"] == "%k/%p" and "forward:127.0.0.1:24224" in cfg["sources"]
    assert cfg["forward_max_connections"] == 8  # Fluent Bit needs 4; each may buffer a 16 MiB frame
    kmsg = render("log-policies-values.yaml", "--set", "fluentbit.kernelPipeline=kernel-kmsg.yaml")
    for d in (find(kmsg, "DaemonSet", "-agent"), find(kmsg, "DaemonSet", "-fluentbit")):
        sc = d["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        # Kubernetes refuses allowPrivilegeEscalation: false beside privileged: true
        assert sc["privileged"] is True and "allowPrivilegeEscalation" not in sc, d["metadata"]["name"]


def test_each_source_gets_only_its_host_access() -> None:
    """kmsg: /dev/kmsg, privileged; trace (eBPF dataplane): the host's tracefs and no capability;
    felix (the default): Felix's socket directory only."""
    host = {"/dev/kmsg", "/sys/kernel/tracing", "/var/run/calico/flows"}
    for case, source, mount in (("kmsg-values.yaml", "kmsg", "/dev/kmsg"),
                                ("ebpf-values.yaml", "trace", "/sys/kernel/tracing"),
                                ("stock-values.yaml", "felix", "/var/run/calico/flows")):
        docs = render(case)
        agent = find(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]
        mounts = {m["mountPath"] for m in agent["containers"][0]["volumeMounts"]}
        paths = {v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
        sc = agent["containers"][0]["securityContext"]
        cfg = yaml.safe_load(find(docs, "ConfigMap", "-agent")["data"]["agent.yaml"])
        assert cfg["sources"] == [source], case
        assert mount in mounts and mount in paths, case
        assert not (host - {mount}) & (mounts | paths), case
        assert bool(sc.get("privileged")) is (source == "kmsg"), case
    felix = find(render("stock-values.yaml"), "DaemonSet", "-agent")["spec"]["template"]["spec"]
    assert not felix["hostPID"] and not felix["hostNetwork"]
    assert "add" not in felix["containers"][0]["securityContext"]["capabilities"]  # nothing but the socket dir
    volume = next(v for v in felix["volumes"] if "hostPath" in v)
    assert volume["hostPath"] == {"path": "/var/run/calico/flows", "type": "DirectoryOrCreate"}


def test_any_agent_setting_rolls_the_agents() -> None:
    def checksum(*extra: str) -> str:
        ds = find(render("stock-values.yaml", *extra), "DaemonSet", "-agent")
        return ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    assert checksum("--set", "agent.maxSeries=5000") != base
    assert checksum("--set", "logPrefix=x") != base
    assert checksum("--set", "agent.port=9808") == base


def _pod_specs(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(name, pod template metadata, pod spec) of every workload."""
    return [(d["metadata"]["name"], d["spec"]["template"]["metadata"], d["spec"]["template"]["spec"]) for d in docs
            if d["kind"] in ("DaemonSet", "Deployment")]


@pytest.mark.parametrize("case", CASES)
def test_every_container_has_resources_and_probes(case: str) -> None:
    for name, _, spec in _pod_specs(render(case)):
        for c in spec["containers"]:
            assert c.get("resources", {}).get("requests") and c["resources"].get("limits", {}).get("memory"), \
                f"{name}/{c['name']}: no requests or memory limit"
            assert c.get("readinessProbe") and c.get("livenessProbe"), f"{name}/{c['name']}: no probes"


def test_platform_settings_reach_every_pod() -> None:
    docs = render("platform-values.yaml")
    pods = _pod_specs(docs)
    assert {n for n, _, _ in pods} == {"obs-netlens-agent", "obs-netlens-inventory", "obs-netlens-fluentbit",
                                       "obs-netlens-prometheus", "obs-netlens-alertmanager", "obs-netlens-grafana"}
    for name, meta, spec in pods:
        assert spec["imagePullSecrets"] == [{"name": "registry-creds"}], name
        assert meta["labels"]["cost-center"] == "42" and meta["annotations"]["team.example.com/owner"] == "network"
        assert meta["labels"].get("app.kubernetes.io/name", "netlens") == "netlens", name
    agent = find(docs, "DaemonSet", "-agent")
    spec = agent["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "platform-node-critical"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["affinity"]["nodeAffinity"] and spec["tolerations"][0]["key"] == "dedicated"
    assert agent["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["CALICO_LENS_MAX_SERIES"]["value"] == "50000"
    assert env["CALICO_LENS_FORWARD_SHARED_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "netlens-forward",
                                                                                  "key": "shared-key"}
    inv = find(docs, "Deployment", "-inventory")["spec"]["template"]["spec"]
    assert inv["priorityClassName"] == "platform-critical" and inv["containers"][0]["env"][0]["value"] == "debug"
    fb = find(docs, "DaemonSet", "-fluentbit")["spec"]["template"]["spec"]
    for c in fb["containers"]:
        key = next(e for e in c["env"] if e["name"] == "CALICO_LENS_FORWARD_SHARED_KEY")
        assert key["valueFrom"]["secretKeyRef"]["name"] == "netlens-forward"
    # Own Secrets named: none generated; the quickstart keeps its data on claims.
    assert not [d for d in docs if d["kind"] == "Secret"]
    grafana = find(docs, "Deployment", "-grafana")["spec"]["template"]["spec"]["containers"][0]
    assert grafana["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "netlens-grafana"
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims["obs-netlens-prometheus"]["spec"]["storageClassName"] == "fast"
    assert claims["obs-netlens-prometheus"]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert "obs-netlens-alertmanager" in claims
    prom = find(docs, "Deployment", "-prometheus")["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "obs-netlens-prometheus"}} in prom["volumes"]


def test_generated_secrets_are_referenced_and_retention_covers_the_rules() -> None:
    docs = render("stock-values.yaml", "--set", "fluentbit.enabled=true")
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    assert set(secrets) == {"lens-forward", "lens-grafana"}
    assert len(secrets["lens-forward"]["data"]["shared-key"]) >= 40  # 32 random characters, base64
    fb = find(docs, "DaemonSet", "-fluentbit")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "lens-forward", "key": "shared-key"} in [e.get("valueFrom", {}).get("secretKeyRef")
                                                             for e in fb["env"]]
    args = find(docs, "Deployment", "-prometheus")["spec"]["template"]["spec"]["containers"][0]["args"]
    retention = next(a for a in args if a.startswith("--storage.tsdb.retention.time="))
    assert int(retention.rsplit("=", 1)[1].rstrip("d")) > 7  # CalicoLensPolicyStartedDenying looks back 7d
    assert not find(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"].get("imagePullSecrets")


def test_every_setting_change_rolls_its_pods() -> None:
    def checksum(kind: str, suffix: str, *extra: str) -> str:
        d = find(render("stock-values.yaml", "--set", "fluentbit.enabled=true", *extra), kind, suffix)
        return d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    for kind, suffix, change in (("DaemonSet", "-agent", "agent.extraEnv[0].name=X"),
                                 ("DaemonSet", "-fluentbit", "fluentbit.httpPort=2040"),
                                 ("DaemonSet", "-fluentbit", "agent.forwardPort=24225"),
                                 ("Deployment", "-prometheus", "rules.agentSelector=job=\"x\""),
                                 ("Deployment", "-prometheus", "quickstart.prometheus.remoteWrite[0].url=https://a"),
                                 ("Deployment", "-alertmanager", "quickstart.alertmanager.webhookURL=https://h"),
                                 ("Deployment", "-inventory", "inventory.extraEnv[0].name=X")):
        extra = ("--set", change) if "extraEnv" not in change else ("--set", change, "--set",
                                                                    change.replace(".name=X", ".value=1"))
        assert checksum(kind, suffix) != checksum(kind, suffix, *extra), change


@pytest.mark.parametrize("setting,message", [
    ("agent.tcpStats=maybe", "/agent/tcpStats"),
    ("bogus=1", "bogus"),
    ("agent.granularity.source=node", "/agent/granularity/source"),
    ("quickstart.prometheus.remoteWrite[0].url=ftp://x", "/quickstart/prometheus/remoteWrite/0/url"),
])
def test_values_schema_rejects(setting: str, message: str) -> None:
    p = helm("template", "lens", str(CHART), "--set", setting, check=False)
    assert p.returncode != 0 and message in p.stderr, p.stderr
