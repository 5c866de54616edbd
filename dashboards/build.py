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


def render(path: Path) -> tuple[str, str]:
    """(uid, JSON text) of one dashboard source."""
    dash = runpy.run_path(str(path))["dashboard"]
    data = dash.to_json_data()
    return dash.uid, json.dumps(data, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


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
