"""Dashboards: generated JSON up to date, the conventions linted, and the structure Grafana needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from calico_lens.metrics import names

from tests.helpers import ROOT

DASH = ROOT / "dashboards"
JSON = sorted((DASH / "json").glob("*.json"))
BOARDS = {p.stem: json.loads(p.read_text()) for p in JSON}
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "nodeGraph", "heatmap", "text"}
KNOWN = {m + s for m in names.ALL_METRICS for s in ("", "_total", "_bucket", "_sum", "_count")}
RECORDED = {v for k, v in vars(names).items() if k.startswith("REC_")}


def panels(board: dict) -> list[dict]:
    return board["panels"]


def exprs(board: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]


def test_generated_json_is_up_to_date() -> None:
    p = subprocess.run([sys.executable, str(DASH / "build.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert {b["uid"] for b in BOARDS.values()} == {"calico-lens-health", "calico-lens-posture", "calico-lens-dns",
                                                   "calico-lens-flows", "calico-lens-policy", "calico-lens-tcp",
                                                   "calico-lens-preview"}


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_conventions(name: str) -> None:
    board = BOARDS[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for var in ("cluster", "job", "instance", "namespace"):
        assert variables[var]["multi"] and variables[var]["includeAll"], var
    assert board["graphTooltip"] == 1, "shared crosshair"
    assert "calico-lens" in board["tags"] and board["links"] and board["links"][0]["tags"] == ["calico-lens"]
    for p in panels(board):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("description"), f"{p['title']}: no description"
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit") or p.get("format")
        assert unit, f"{p['title']}: no unit"
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for title, expr in exprs(board):
        for m in re.findall(r"(?<![\w:])(calico_lens_\w+)(?![\w:])", expr):
            assert m in KNOWN, f"{title}: {m} is not in calico_lens.metrics.names"
        for m in re.findall(r"\b(\w+:calico_lens_\w+:\w+)", expr):
            assert m in RECORDED, f"{title}: {m} is not a recording rule"
        for fn_window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
            assert fn_window == "$__rate_interval", f"{title}: rate() must use $__rate_interval"
        for window in re.findall(r"\[([^\]:]+)\]", expr):  # no fixed window: per step, or the selected range
            assert window in ("$__rate_interval", "$__range"), f"{title}: [{window}]"
        assert 'cluster=~"$cluster"' in expr or ("calico_lens" not in expr and "up{" not in expr), title
        for sel in re.findall(r"(?<![\w:])calico_lens_\w+\{([^}]*)\}", expr):  # raw series: job and instance too
            assert 'job=~"$job"' in sel and 'instance=~"$instance"' in sel, f"{title}: {sel}"
        assert not re.search(r"by \([^)]*\binstance\b", expr), f"{title}: per-node panels are keyed by node"


def test_denied_is_red_and_allowed_green_everywhere() -> None:
    seen = 0
    for board in BOARDS.values():
        for p in panels(board):
            for o in p.get("fieldConfig", {}).get("overrides", []):
                name = o["matcher"]["options"]
                colours = [x["value"].get("fixedColor") for x in o["properties"] if x["id"] == "color"]
                if name in ("deny", "denied"):
                    assert colours == ["red"]
                    seen += 1
                if name in ("allow", "allowed"):
                    assert colours == ["green"]
    assert seen >= 3


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_grafana_structure(name: str) -> None:
    """What Grafana needs to load a dashboard: ids, types, a grid without overlaps, unique refIds."""
    board = BOARDS[name]
    for key in ("title", "uid", "panels", "templating", "schemaVersion", "time", "tags"):
        assert key in board, key
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: set[tuple[int, int]] = set()
    for p in panels(board):
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, (p["title"], g)
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
    graph = [p for p in panels(board) if p["type"] == "nodeGraph"]
    for p in graph:
        assert {t["refId"] for t in p["targets"]} == {"nodes", "edges"}
        assert all(t["format"] == "table" and t["instant"] for t in p["targets"])


GRAFANA_SCHEMA = sorted((ROOT / ".tools").glob("grafana-dashboard-*.schema.json"))


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_valid_against_grafanas_published_schema(name: str) -> None:
    """Grafana's own dashboard schema (npm @grafana/schema, turned into JSON Schema by make setup),
    strict: no property the schema does not know, and the schema version it is written for."""
    import jsonschema

    assert GRAFANA_SCHEMA, "Grafana's dashboard schema is missing: run `make setup`"
    schema = json.loads(GRAFANA_SCHEMA[-1].read_text())
    version = int(GRAFANA_SCHEMA[-1].with_name(GRAFANA_SCHEMA[-1].name.replace(".schema.json", ".version"))
                  .read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(BOARDS[name])]
    assert not errors, errors
    assert BOARDS[name]["schemaVersion"] == version


def test_policy_board_links_to_the_flows_of_that_policy() -> None:
    """A link carries the context: time range, data source, cluster, job, instance and the policy
    clicked, which the flows board filters on."""
    board = BOARDS["calico-lens-policy"]
    links = [lk for p in panels(board) for o in p["fieldConfig"]["overrides"] for prop in o["properties"]
             if prop["id"] == "links" for lk in prop["value"]]
    assert links, "the policy column links nowhere"
    url = links[0]["url"]
    assert url.startswith("/d/calico-lens-flows?")
    for part in ("${__url_time_range}", "${datasource:queryparam}", "${cluster:queryparam}",
                 "var-policy=${__value.raw}"):
        assert part in url, part
    flows = BOARDS["calico-lens-flows"]
    assert "policy" in {v["name"] for v in flows["templating"]["list"]}
    assert all('policy=~"$policy"' in expr for _, expr in exprs(flows) if "calico_lens" in expr)
