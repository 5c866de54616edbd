"""Build the dashboards' JSON from the grafanalib sources (*.dashboard.py) into dashboards/json/.

    .venv/bin/python dashboards/build.py          # write
    .venv/bin/python dashboards/build.py --check  # exit 1 if the committed JSON is out of date

The JSON is committed (the Helm chart ships it); a test fails when it drifts from the sources.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "json"
sys.path.insert(0, str(HERE))

from grafanalib._gen import DashboardEncoder  # noqa: E402


def sources() -> list[Path]:
    return sorted(HERE.glob("*.dashboard.py"))


# Grafana's dashboard schema version the JSON is written in (that of npm @grafana/schema 13.2.3, which
# scripts/setup.sh turns into the JSON Schema the tests validate against).
SCHEMA_VERSION = 42
# What grafanalib still writes from Grafana's old (pre-schema) dashboards; the current schema has
# none of it, and Grafana would only carry it along or migrate it away.
LEGACY = {
    "dashboard": {"__inputs", "hideControls", "rows", "sharedCrosshair", "style"},
    "panel": {"editable", "error", "color", "columns", "fontSize", "mappings"},
    "variable": {"auto", "auto_count", "auto_min", "tags", "tagsQuery", "tagValuesQuery", "useTags"},
    "timepicker": {"time_options"},
}


def _no_nulls(o: object) -> object:
    """grafanalib writes null for every unset option; the schema wants them absent (a threshold's
    base step keeps its null value: "from minus infinity")."""
    if isinstance(o, dict):
        return {k: _no_nulls(v) for k, v in o.items() if v is not None or k == "value"}
    if isinstance(o, list):
        return [_no_nulls(v) for v in o]
    return o


def current_shape(data: dict) -> dict:
    """grafanalib's output in the shape of Grafana's current dashboard schema."""
    data = _no_nulls(json.loads(json.dumps(data, cls=DashboardEncoder)))
    for k in LEGACY["dashboard"]:
        data.pop(k, None)
    data["schemaVersion"] = SCHEMA_VERSION
    for k in LEGACY["timepicker"]:
        data.get("timepicker", {}).pop(k, None)
    for v in data.get("templating", {}).get("list", []):
        for k in LEGACY["variable"]:
            v.pop(k, None)
        current = v.pop("current", {})
        current.pop("tags", None)
        if "text" in current and "value" in current:  # a datasource variable has none: Grafana picks the default
            v["current"] = current
    for p in data.get("panels", []):
        for k in LEGACY["panel"]:
            p.pop(k, None)
    return data


def render(path: Path) -> tuple[str, str]:
    """(uid, JSON text) of one dashboard source."""
    dash = runpy.run_path(str(path))["dashboard"]
    return dash.uid, json.dumps(current_shape(dash.to_json_data()), indent=2, sort_keys=True) + "\n"


def build() -> dict[str, str]:
    return {f"{uid}.json": text for uid, text in (render(p) for p in sources())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing")
    args = ap.parse_args()
    built = build()
    if args.check:
        stale = [name for name, text in built.items() if not (OUT / name).exists() or (OUT / name).read_text() != text]
        extra = sorted({p.name for p in OUT.glob("*.json")} - set(built))
        for name in stale + extra:
            print(f"out of date: dashboards/json/{name} (run `make dashboards`)")
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.json"):
        if old.name not in built:
            old.unlink()
    for name, text in built.items():
        (OUT / name).write_text(text)
        print(f"wrote dashboards/json/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
