"""The example Alertmanager routing (alerts/alertmanager.yaml) in the real Alertmanager: alerts are
posted to its API, and what it suppresses, groups and delivers is read back from it and from the
webhook it notifies."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import requests
from calico_lens.demo.alerting import WebhookReceiver, alertmanager_binary, example_config, start_alertmanager

from tests.helpers import ROOT
from tests.prom import free_port, wait_http


def _alert(name: str, severity: str, **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, **labels},
            "annotations": {"summary": name, "description": name}}


AGENT = {"job": "calico-lens"}
ALERTS = [
    _alert("CalicoLensAgentDown", "critical", cluster="east", instance="node-1", **AGENT),
    # the down agent's own warning: held back
    _alert("CalicoLensFlowInputStopped", "warning", cluster="east", instance="node-1", **AGENT),
    # another agent, and the same node name in another cluster: not held back
    _alert("CalicoLensFlowInputStopped", "warning", cluster="east", instance="node-2", **AGENT),
    _alert("CalicoLensFlowInputStopped", "warning", cluster="west", instance="node-1", **AGENT),
    # cluster-wide alerts, which carry no instance: never held back by an agent being down
    _alert("CalicoLensPolicyStartedDenying", "warning", cluster="east", policy="shop/deny-a", tier="default"),
    _alert("CalicoLensPolicyStartedDenying", "warning", cluster="east", policy="shop/deny-b", tier="default"),
    _alert("CalicoLensDNSServfailRatio", "warning", cluster="east", namespace="shop"),
    _alert("CalicoLensSecurityScoreDropped", "warning", cluster="east", job="calico-lens-inventory"),
]


def _key(labels: dict) -> tuple:
    return labels["alertname"], labels.get("cluster"), labels.get("instance"), labels.get("policy")


def test_example_routing_holds_back_only_the_down_agents_warnings_and_groups_per_policy() -> None:
    binary = alertmanager_binary()
    assert binary, "Alertmanager is not installed (make setup installs it)"
    work = Path(tempfile.mkdtemp(prefix="cl-am-"))
    posts: list[tuple[str, dict]] = []
    hook = WebhookReceiver(lambda path, payload: posts.append((path, payload)))
    port = free_port()
    am = start_alertmanager(binary, example_config(ROOT / "alerts" / "alertmanager.yaml", hook.port,
                                                   group_wait="1s"), work, port)
    api = f"http://127.0.0.1:{port}/api/v2"
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
        assert requests.post(f"{api}/alerts", json=ALERTS, timeout=5).status_code == 200
        state: dict[tuple, str] = {}
        end = time.monotonic() + 20
        while time.monotonic() < end:
            got = requests.get(f"{api}/alerts", timeout=5).json()
            state = {_key(a["labels"]): a["status"]["state"] for a in got}
            if len(state) == len(ALERTS) and "suppressed" in state.values():
                break
            time.sleep(0.2)
        suppressed = {k for k, v in state.items() if v == "suppressed"}
        assert suppressed == {("CalicoLensFlowInputStopped", "east", "node-1", None)}, state
        assert len(state) == len(ALERTS)

        groups = requests.get(f"{api}/alerts/groups", timeout=5).json()
        policy_groups = [g for g in groups if g["labels"].get("alertname") == "CalicoLensPolicyStartedDenying"]
        assert sorted(g["labels"]["policy"] for g in policy_groups) == ["shop/deny-a", "shop/deny-b"]
        assert all(len(g["alerts"]) == 1 for g in policy_groups)

        # Notifications: the critical one pages on-call, each policy is its own message to the team,
        # and the held-back warning is sent to nobody.
        end = time.monotonic() + 20
        while time.monotonic() < end and len(posts) < len(ALERTS) - 1:
            time.sleep(0.2)
        sent = {(_key(a["labels"]), path) for path, body in posts for a in body["alerts"]}
        assert (("CalicoLensAgentDown", "east", "node-1", None), "/oncall") in sent
        assert {k for k, _ in sent} == {_key(a["labels"]) for a in ALERTS} - suppressed, sent
        per_policy = [body for path, body in posts if body["groupLabels"].get("alertname")
                      == "CalicoLensPolicyStartedDenying"]
        assert len(per_policy) == 2 and all(len(b["alerts"]) == 1 for b in per_policy)
    finally:
        am.terminate()
        am.wait(10)
        hook.close()
        shutil.rmtree(work, ignore_errors=True)
