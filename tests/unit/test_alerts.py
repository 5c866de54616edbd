"""Alert and recording rules: generated from one source, checked and unit-tested by promtool,
labels and annotations as promised, and the example Alertmanager routing checked by amtool."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from calico_lens.metrics import names

from tests.helpers import ROOT

ALERTS = ROOT / "alerts"
sys.path.insert(0, str(ALERTS))
import generate  # noqa: E402

RULES = yaml.safe_load((ALERTS / "calico-lens.rules.yaml").read_text())
ALL = [r for g in RULES["groups"] for r in g["rules"]]
ALERT_RULES = [r for r in ALL if "alert" in r]


def run(*cmd: str, cwd=ALERTS) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_generated_rules_are_up_to_date() -> None:
    assert (ALERTS / "calico-lens.rules.yaml").read_text() == generate.render(), \
        "alerts/calico-lens.rules.yaml is stale: run `make rules`"


def test_promtool_check_rules() -> None:
    p = run("promtool", "check", "rules", "calico-lens.rules.yaml")
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(ALL)} rules found" in p.stdout


@pytest.mark.parametrize("test_file", sorted(p.name for p in (ALERTS / "tests").glob("*.test.yaml")))
def test_promtool_unit_tests(test_file: str) -> None:
    p = run("promtool", "test", "rules", f"tests/{test_file}")
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for f in (ALERTS / "tests").glob("*.test.yaml"):
        for t in yaml.safe_load(f.read_text())["tests"]:
            for a in t.get("alert_rule_test", []):
                (fired if a.get("exp_alerts") else silent).add(a["alertname"])
    names_ = {r["alert"] for r in ALERT_RULES}
    assert names_ <= fired, f"never shown firing: {names_ - fired}"
    steady = {"CalicoLensDeniedFlowsSpike", "CalicoLensPolicyDeniedFlowsSpike", "CalicoLensPolicyStartedDenying"}
    assert steady <= silent


def test_every_setting_is_explained_in_the_runbook() -> None:
    table = (ALERTS / "runbook.md").read_text().split("## ", 1)[0]
    missing = [k for k in generate.SETTINGS if f"`{k}`" not in table]
    assert not missing, f"alerts/runbook.md's settings table lacks {missing}"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda r: r["alert"])
def test_every_alert_waits_before_firing(rule: dict) -> None:
    """A `for:` on every alert: one evaluation's blip (a rollout, a scrape gap) never pages."""
    assert rule.get("for") and rule["for"] not in ("0s", "0m"), rule["alert"]


def test_every_aggregation_keeps_the_cluster_label() -> None:
    """`by (...)` and `on (...)` always name the cluster label (a Thanos/Mimir ruler sees many
    clusters); the label's name is a setting."""
    for rules in (ALL, [r for g in generate.build({"cluster_label": "k8s_cluster"})["groups"] for r in g["rules"]]):
        label = "cluster" if rules is ALL else "k8s_cluster"
        for r in rules:
            for clause in re.findall(r"\b(?:by|on) \(([^)]*)\)", r["expr"]):
                assert clause.split(", ")[0] == label, (r.get("alert") or r["record"], clause)


def test_agent_selector_and_runbook_url_are_settings() -> None:
    text = generate.render({"agent_selector": 'job="node-agents"', "runbook_url": "https://runbooks.example/cl.md"})
    assert 'job="calico-lens"' not in text and 'up{job="node-agents"} == 0' in text
    assert "absent(up{job=\"node-agents\"})" in text or 'absent(up{job="node-agents"})' in text
    rules = yaml.safe_load(text)
    urls = {r["annotations"]["runbook_url"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert all(u.startswith("https://runbooks.example/cl.md#calicolens") for u in urls), urls


# Alerts about the cluster as a whole: nothing narrower to name in the description.
CLUSTER_WIDE = {"CalicoLensSecurityScoreDropped", "CalicoLensAgentAbsent"}


def _anchors() -> set[str]:
    heads = re.findall(r"^## (.+)$", (ALERTS / "runbook.md").read_text(), re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda r: r["alert"])
def test_alert_labels_and_annotations(rule: dict) -> None:
    assert rule["alert"].startswith("CalicoLens") and re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    ann = rule["annotations"]
    assert ann["summary"] and "{{" not in ann["summary"], "summary must be static"
    assert "{{" in ann["description"], "description must be templated"
    if rule["alert"] not in CLUSTER_WIDE:
        assert "{{ $labels." in ann["description"], "description must name what is involved"
    anchor = ann["runbook_url"].rsplit("#", 1)[1]
    assert anchor in _anchors(), f"runbook.md has no section #{anchor}"


def test_rules_only_use_known_metrics() -> None:
    known = {m + s for m in names.ALL_METRICS for s in ("", "_total", "_bucket", "_sum", "_count")}
    recorded = {r["record"] for r in ALL if "record" in r}
    for r in ALL:
        for metric in re.findall(r"(?<![\w:])(calico_lens_\w+)(?![\w:])", r["expr"]):
            assert metric in known, f"{metric} in {r.get('alert') or r.get('record')} is not in names.py"
        for metric in re.findall(r"\b(\w+:calico_lens_\w+:\w+)", r["expr"]):
            assert metric in recorded
    assert all(re.fullmatch(r"[a-z_]+:calico_lens_[a-z_]+:[a-z0-9_]+", r) for r in recorded)


def test_settings_change_the_rules() -> None:
    text = generate.render({"spike_factor": 5, "baseline_window": "7d"})
    assert "> 5 * namespace:calico_lens_flows_denied:rate5m_baseline" in text and "[7d]" in text


def test_alertmanager_example_config() -> None:
    p = run("amtool", "check-config", "alertmanager.yaml")
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr
    cases = {("severity=critical", "namespace=shop"): "oncall", ("severity=warning", "namespace=shop"): "team",
             ("severity=info",): "digest", ("alertname=Other",): "default"}
    for labels, receiver in cases.items():
        p = run("amtool", "config", "routes", "test", "--config.file=alertmanager.yaml",
                f"--verify.receivers={receiver}", *labels)
        assert p.returncode == 0, f"{labels}: {p.stdout} {p.stderr}"
    bad = run("amtool", "config", "routes", "test", "--config.file=alertmanager.yaml", "--verify.receivers=team",
              "severity=critical")
    assert bad.returncode != 0
    inhibit = yaml.safe_load((ALERTS / "alertmanager.yaml").read_text())["inhibit_rules"][0]
    assert 'instance=~".+"' in inhibit["target_matchers"] and "instance" in inhibit["equal"]
