"""The demo's webhook receiver and notification lines (the Alertmanager side runs in e2e tests)."""

from __future__ import annotations

import http.client

import requests
from calico_lens.demo.alerting import WebhookReceiver, describe, example_config

from tests.helpers import ROOT

PAYLOAD = {"receiver": "team", "status": "firing", "alerts": [
    {"status": "firing", "labels": {"alertname": "CalicoLensDNSServfailRatio", "severity": "warning"},
     "annotations": {"summary": "s", "description": "Clients in shop get SERVFAIL\n  for 12% of queries."}},
    {"status": "resolved", "labels": {"alertname": "CalicoLensAgentDown"}, "annotations": {"summary": "Agent down."}}]}


def test_describe_gives_one_line_per_alert() -> None:
    assert describe("/team", PAYLOAD) == [
        "  alert → team: firing CalicoLensDNSServfailRatio [warning] Clients in shop get SERVFAIL for 12% of queries.",
        "  alert → team: resolved CalicoLensAgentDown [-] Agent down."]
    assert describe("/", {"receiver": "default", "alerts": [{}]}) == ["  alert → default: ? ? [-] "]


def test_receiver_hands_over_json_and_refuses_the_rest() -> None:
    got: list[tuple[str, dict]] = []
    hook = WebhookReceiver(lambda path, payload: got.append((path, payload)))
    url = f"http://127.0.0.1:{hook.port}"
    try:
        assert requests.post(f"{url}/team", json=PAYLOAD, timeout=5).status_code == 200
        assert requests.post(f"{url}/team", data=b"{not json", timeout=5).status_code == 400
        assert requests.post(f"{url}/team", data=b"", timeout=5).status_code == 411
        big = http.client.HTTPConnection("127.0.0.1", hook.port, timeout=5)  # announces 2 MB, sends none
        big.putrequest("POST", "/team")
        big.putheader("Content-Length", str(2 << 20))
        big.endheaders()
        assert big.getresponse().status == 413
        big.close()
        assert requests.post(f"{url}/oncall", json={"alerts": []}, timeout=5).status_code == 200  # still serving
    finally:
        hook.close()
    assert got == [("/team", PAYLOAD), ("/oncall", {"alerts": []})]


def test_example_config_points_every_webhook_at_the_receiver() -> None:
    cfg = example_config(ROOT / "alerts" / "alertmanager.yaml", 4321, group_wait="2s")
    urls = [h["url"] for r in cfg["receivers"] for h in r.get("webhook_configs", [])]
    assert urls and all(u.startswith("http://127.0.0.1:4321/") for u in urls)
    assert cfg["route"]["group_wait"] == "2s" and all(r["group_wait"] == "2s" for r in cfg["route"]["routes"])


def test_demo_says_in_one_line_why_the_tcp_board_is_empty(monkeypatch) -> None:
    from calico_lens.demo import run

    assert run.start_node(True) == (None, "off (--no-node): the TCP board stays empty")
    monkeypatch.setattr(run.os, "geteuid", lambda: 1000)
    node, note = run.start_node(False)
    assert node is None and "run the demo as root" in note and "\n" not in note
