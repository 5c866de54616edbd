"""Every query of every dashboard panel, with the variables set to All, returns at least one
series from a real Prometheus that scrapes a real agent and inventory (the demo) with the rules:
the TCP board from the small real node the demo builds as root."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import requests

from tests.prom import free_port
from tests.unit.test_dashboards import BOARDS

# Panels whose data cannot exist yet, with the reason (their descriptions say so too).
NO_DATA_YET: dict[tuple[str, str], str] = {
    ("calico-lens-health", "Input lost or cut off"): "a healthy agent reports no source problems: the demo's "
                                                     "file is never overrun, cut, rotated or missing",
}


def run_queries(url: str, queries: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str]]:
    """The queries that returned no series; a query Prometheus rejects fails the test."""
    empty = []
    for uid, title, ref, expr in queries:
        try:
            r = requests.get(url, params={"query": expr}, timeout=10).json()
        except requests.RequestException:
            r = {"status": "error", "error": "unreachable"}
        assert r["status"] == "success" or r.get("error") == "unreachable", f"{uid}/{title}/{ref}: {r}"
        if r["status"] != "success" or not r["data"]["result"]:
            empty.append((uid, title, ref))
    return empty


def board_queries() -> list[tuple[str, str, str, str]]:
    return [(b["uid"], p["title"], t["refId"], substitute(t["expr"])) for b in BOARDS.values()
            for p in b["panels"] for t in p["targets"]]


def substitute(expr: str) -> str:
    """The query Grafana sends with every variable at All and a 5-minute range."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
    return re.sub(r"\$(cluster|job|instance|namespace|policy)\b", ".*", expr)


def test_every_panel_query_returns_data() -> None:
    mport, pport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "calico_lens", "demo", "--duration", "120", "--rate", "500",
                             "--metrics-address", f"127.0.0.1:{mport}", "--prometheus-port", str(pport)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{pport}/api/v1/query"
    queries = board_queries()  # the TCP board too: as root, the demo builds a small real node for it
    empty: list[tuple[str, str, str]] = []
    try:
        banner = [proc.stdout.readline() for _ in range(11)]  # the banner: the demo is up
        assert any(line.startswith("  tcp board    real TCP traffic") for line in banner), banner
        end = time.monotonic() + 60
        while time.monotonic() < end:
            time.sleep(3)
            empty = run_queries(url, queries)
            if all((uid, title) in NO_DATA_YET for uid, title, _ in empty):
                break
    finally:
        proc.terminate()
        proc.wait(20)
    missing = [e for e in empty if (e[0], e[1]) not in NO_DATA_YET]
    assert not missing, f"panels without data: {missing}"
    assert len(queries) > 40
