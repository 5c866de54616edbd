"""Every query of every dashboard panel, with the variables set to All, returns at least one
series from a real Prometheus that scrapes a real agent and inventory (the demo) with the rules."""

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
# The TCP dashboard reads the kernel (pod namespaces, sock_diag, conntrack), which the demo has not:
# its queries run against an agent on the node harness in test_tcp_dashboard_queries_return_data.
ON_THE_NODE = {"calico-lens-tcp"}


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


def board_queries(uids: set[str] | None = None, skip: set[str] | None = None) -> list[tuple[str, str, str, str]]:
    return [(b["uid"], p["title"], t["refId"], substitute(t["expr"])) for b in BOARDS.values()
            if (uids is None or b["uid"] in uids) and b["uid"] not in (skip or set())
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
    queries = board_queries(skip=ON_THE_NODE)
    empty: list[tuple[str, str, str]] = []
    try:
        for _ in range(6):
            proc.stdout.readline()  # the banner: the demo is up
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
