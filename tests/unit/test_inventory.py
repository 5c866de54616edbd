"""The cluster inventory: selector semantics, exact metrics on fixture clusters, the score moving
the right way, and the daemon surviving an API it cannot fully read."""

from __future__ import annotations

import time

import pytest
import requests
import yaml
from calico_lens.inventory import selectors
from calico_lens.inventory.model import WEIGHTS, Model
from calico_lens.kube.metadata import MetadataStore
from calico_lens.kube.resources import INVENTORY_RESOURCES
from calico_lens.metrics import names

from tests.helpers import CLI, DATA, run_cli, samples
from tests.kubeapi import FakeKubeAPI
from tests.prom import free_port, wait_http

FIX = DATA / "inventory"


def inventory(name: str) -> dict[str, dict[tuple, float]]:
    out = run_cli("inventory", "--snapshot", str(FIX / f"{name}.yaml"), "--once").stdout.decode()
    fams: dict[str, dict[tuple, float]] = {}
    for metric, rows in samples(out).items():
        fams[metric] = {tuple(sorted(lab.items())): v for lab, v in rows}
    return fams


def rows(fams: dict, metric: str, *keys: str) -> dict[tuple, float]:
    return {tuple(dict(k)[x] for x in keys): v for k, v in fams.get(metric, {}).items()}


ENDPOINTS = ("namespace", "ingress", "egress")
EXPECTED = {
    "empty": {"score": 100.0, "endpoints": {}, "isolation": {}, "policies": {}},
    "default-deny": {
        "score": 100.0,
        "endpoints": {("a", "default_deny", "default_deny"): 1, ("b", "default_deny", "default_deny"): 1},
        "isolation": {("a", "ingress"): 1, ("a", "egress"): 1, ("b", "ingress"): 1, ("b", "egress"): 1},
        "policies": {("KubernetesNetworkPolicy", "", "active"): 2},
    },
    "mixed": {
        "score": 62.8,
        "endpoints": {("shop", "default_deny", "default_deny"): 2, ("dev", "unprotected", "unprotected"): 1},
        "isolation": {("shop", "ingress"): 1, ("shop", "egress"): 1, ("dev", "ingress"): 0, ("dev", "egress"): 0},
        "policies": {("GlobalNetworkPolicy", "security", "active"): 1, ("NetworkPolicy", "default", "active"): 3,
                     ("NetworkPolicy", "default", "unused"): 1, ("StagedNetworkPolicy", "default", "active"): 1},
    },
    "k8s-only": {
        "score": 57.5,  # 25 + 20 + 15 * 1/2 (one allow-all egress rule) + 5
        "endpoints": {("app", "default_deny", "unprotected"): 2},
        "isolation": {("app", "ingress"): 1, ("app", "egress"): 0},
        "policies": {("KubernetesNetworkPolicy", "", "active"): 2},
    },
    "invalid": {
        "score": 40.0,
        "endpoints": {("x", "isolated", "unprotected"): 1},
        "isolation": {("x", "ingress"): 0, ("x", "egress"): 0},
        "policies": {("GlobalNetworkPolicy", "default", "invalid"): 1, ("NetworkPolicy", "default", "active"): 1,
                     ("NetworkPolicy", "default", "invalid"): 1},
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_cluster_metrics(name: str) -> None:
    fams, want = inventory(name), EXPECTED[name]
    assert rows(fams, names.SECURITY_SCORE) == {(): want["score"]}
    assert rows(fams, names.ENDPOINTS, *ENDPOINTS) == want["endpoints"]
    assert rows(fams, names.NAMESPACE_ISOLATION, "namespace", "direction") == want["isolation"]
    assert rows(fams, names.POLICIES, "kind", "tier", "state") == want["policies"]
    comp = rows(fams, names.SECURITY_COMPONENT, "component")
    assert set(comp) == {(k,) for k in WEIGHTS}
    assert round(sum(comp.values()), 1) == pytest.approx(want["score"], abs=0.1)


def test_mixed_cluster_details() -> None:
    fams = inventory("mixed")
    sel = rows(fams, names.POLICY_SELECTED, "policy", "namespace", "kind", "tier")
    assert sel == {("security.prod-default-deny", "", "GlobalNetworkPolicy", "security"): 2,
                   ("shop/default.web-https", "shop", "NetworkPolicy", "default"): 1,
                   ("shop/default.pay-egress", "shop", "NetworkPolicy", "default"): 1,  # via its service account
                   ("dev/default.dev-allow-all", "dev", "NetworkPolicy", "default"): 1,
                   ("shop/default.old-api", "shop", "NetworkPolicy", "default"): 0,
                   ("dev/default.dev-deny", "dev", "StagedNetworkPolicy", "default"): 1}
    info = rows(fams, names.POLICY_INFO, "policy", "order", "types")
    assert info[("security.prod-default-deny", "1000", "Ingress,Egress")] == 1
    assert info[("shop/default.web-https", "10", "Ingress")] == 1  # types default to Ingress
    r = rows(fams, names.POLICY_RULES, "policy", "direction", "action")
    assert r == {("shop/default.web-https", "ingress", "allow"): 1, ("shop/default.pay-egress", "egress", "allow"): 1,
                 ("dev/default.dev-allow-all", "ingress", "allow"): 1, ("shop/default.old-api", "ingress", "deny"): 1}
    rec = {(ns, check, sev) for ns, check, sev, _msg in rows(fams, names.RECOMMENDATION, "namespace", "check",
                                                                "severity", "message")}
    assert rec == {("dev", "namespace_default_deny_ingress", "high"),
                   ("dev", "namespace_default_deny_egress", "medium"),
                   ("dev", "workload_open_ingress", "high"), ("dev", "workload_open_egress", "medium"),
                   ("dev", "policy_allow_all", "high"), ("shop", "policy_unused", "low")}
    assert rows(fams, names.NAMESPACE_SCORE, "namespace") == {("shop",): 98.8, ("dev",): 5.0}


def test_invalid_selectors_are_reported_not_fatal() -> None:
    fams = inventory("invalid")
    assert rows(fams, names.POLICY_ERRORS, "policy", "namespace", "kind") == {
        ("x/broken", "x", "NetworkPolicy"): 1, ("also-broken", "", "GlobalNetworkPolicy"): 1}


LABELS = {"app": "web", "tier": "frontend", "env": "prod", "version": "v2"}


@pytest.mark.parametrize("sel,want", [
    ("", True), ("all()", True), ("global()", False),
    ("app == 'web'", True), ('app == "web"', True), ("app == 'db'", False), ("missing == 'x'", False),
    ("app != 'db'", True), ("missing != 'x'", True), ("app != 'web'", False),
    ("env in {'prod', 'staging'}", True), ("env in {'dev'}", False), ("missing in {'x'}", False),
    ("env not in {'dev'}", True), ("missing not in {'x'}", True), ("env not in {'prod'}", False),
    ("has(app)", True), ("has(missing)", False), ("!has(missing)", True), ("!has(app)", False),
    ("app == 'web' && tier == 'frontend'", True), ("app == 'web' && tier == 'backend'", False),
    ("app == 'db' || tier == 'frontend'", True), ("!(app == 'db' || env == 'dev')", True),
    ("(app == 'web' || app == 'api') && !has(canary)", True),
    ("version starts with 'v'", True), ("version ends with '1'", False), ("app contains 'e'", True),
    ("all() && app == 'web'", True),
])
def test_calico_selector_semantics(sel: str, want: bool) -> None:
    assert selectors.calico(sel)(LABELS) is want


@pytest.mark.parametrize("bad", ["app == ", "app = 'x'", "app == 'x' &&", "(app == 'x'", "has()", "app in ['x']",
                                 "app ~= 'x'", "'x' == app"])
def test_invalid_calico_selectors(bad: str) -> None:
    with pytest.raises(selectors.SelectorError):
        selectors.calico(bad)


def test_kubernetes_selectors() -> None:
    k = selectors.kubernetes
    assert k({})(LABELS) and k(None)(LABELS)
    assert k({"matchLabels": {"app": "web"}})(LABELS)
    assert not k({"matchLabels": {"app": "web", "env": "dev"}})(LABELS)
    assert k({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]})(LABELS)
    assert k({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]})(LABELS)
    assert k({"matchExpressions": [{"key": "app", "operator": "Exists"}]})(LABELS)
    assert not k({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]})(LABELS)
    with pytest.raises(selectors.SelectorError):
        k({"matchExpressions": [{"key": "a", "operator": "Near"}]})


def _model(extra: list[dict]) -> Model:
    store = MetadataStore(INVENTORY_RESOURCES)
    doc = yaml.safe_load((FIX / "mixed.yaml").read_text())
    store.load_list({"kind": "List", "items": doc["items"] + extra})
    return Model(store.all_objects())


def test_score_moves_the_right_way() -> None:
    base = _model([])
    comp = base.components()
    # Stated contributions: each component is its weight times the share that scores.
    assert comp["namespace_ingress_default_deny"] == 0.5 and comp["no_allow_all_rules"] == 0.8
    deny_dev = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                "metadata": {"name": "default.dev-default-deny", "namespace": "dev"},
                "spec": {"selector": "all()", "types": ["Ingress", "Egress"]}}
    better = _model([deny_dev])
    assert better.score() > base.score()
    # +25*1/2 and +15*1/2 (dev gets its default deny), +20/3 and +10/3 (toy protected), +10/3 (toy's egress
    # restricted), and the shares of policies without allow-all rules (4/5 -> 5/6) and used (5/6 -> 6/7).
    gain = 12.5 + 7.5 + 20 / 3 + 10 / 3 + 10 / 3 + 15 * (5 / 6 - 4 / 5) + 5 * (6 / 7 - 5 / 6)
    assert better.score() - base.score() == pytest.approx(gain, abs=0.11)
    open_web = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                "metadata": {"name": "default.web-open", "namespace": "shop"},
                "spec": {"selector": "app == 'web'", "ingress": [{"action": "Allow"}]}}
    worse = _model([open_web])
    assert worse.score() < base.score()
    assert worse.components()["no_allow_all_rules"] == pytest.approx(4 / 6)


def test_daemon_survives_what_it_cannot_read(tmp_path) -> None:
    with FakeKubeAPI() as api:
        for r in ("calico_networkpolicies", "calico_globalnetworkpolicies", "calico_networksets",
                  "calico_globalnetworksets"):
            api.forbidden.add(r)
        api.put("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        api.put("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "shop"},
                         "status": {"phase": "Running", "podIP": "10.0.0.1"}})
        api.put("networkpolicies", {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                    "metadata": {"name": "deny", "namespace": "shop"}, "spec": {"podSelector": {}}})
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "t", "cluster": {"server": api.url}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            "users": [{"name": "t", "user": {}}]}))
        port = free_port()
        import subprocess

        proc = subprocess.Popen([*CLI, "inventory", "--kubeconfig", str(kubeconfig), "--metrics-address",
                                 f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            fams = samples(text)
            synced = {lab["resource"]: v for lab, v in fams[names.KUBE_SYNCED]}
            assert synced["pods"] == 1 and synced["calico_networkpolicies"] == 0
            assert {(lab["namespace"], lab["ingress"]): v for lab, v in fams[names.ENDPOINTS]} == {
                ("shop", "default_deny"): 1}
            # What it could not see shows up as restarts; the daemon keeps serving.
            time.sleep(1.5)
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            restarts = {lab["resource"]: v for lab, v in samples(text)[names.KUBE_WATCH_RESTARTS + "_total"]}
            assert restarts["calico_networkpolicies"] >= 1
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(10)


def test_once_needs_a_snapshot() -> None:
    p = run_cli("inventory", "--once", check=False)
    assert p.returncode == 2 and b"--once needs --snapshot" in p.stderr


def test_policy_label_is_the_same_in_the_inventory_and_in_flows(tmp_path) -> None:
    """One form of `policy` everywhere: the policy board joins traffic on it without label_replace."""
    from calico_lens.demo.cluster import LOG_PREFIX, TrafficGenerator, snapshot

    snap = tmp_path / "cluster.yaml"
    snap.write_text(yaml.safe_dump(snapshot()))
    log = tmp_path / "kern.log"
    log.write_text("\n".join(TrafficGenerator(seed=3).lines(3000)) + "\n")
    board = {lab["policy"] for lab, _ in samples(run_cli("inventory", "--snapshot", str(snap), "--once")
                                                 .stdout.decode())[names.POLICY_INFO]}
    flows = samples(run_cli("replay", "--snapshot", str(snap), "--log-prefix", LOG_PREFIX, str(log)).stdout.decode())
    seen = {lab["policy"] for lab, _ in flows[names.FLOWS + "_total"] if lab["policy"]}
    assert "shop/default.backend-allow-frontend" in seen and "platform.log-all-egress" in seen
    assert seen <= board, seen - board
