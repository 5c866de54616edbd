"""Shared pieces of the calico-lens dashboards (grafanalib).

Conventions every dashboard follows (those of the Grafana dashboard linter and the monitoring
mixins): a ``datasource`` variable (type prometheus) used by every panel and query; ``cluster``,
``job``, ``instance`` and ``namespace`` variables (multi-select, All) in every query; a shared
crosshair; a stable uid; the common tag and links between the dashboards that keep the time range
and the variables; ``$__rate_interval`` in every rate and ``$__range`` for "in the selected range";
per-node panels keyed by ``node``; a unit and a one-line description on every panel; denied is red
and allowed green everywhere. ``build.py`` writes the JSON in the shape of Grafana's current
dashboard schema (``schemaVersion`` and all), and a test validates it against that schema.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attr
from grafanalib.core import (
    GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
    Dashboard,
    DashboardLink,
    GridPos,
    Panel,
    Stat,
    Table,
    Target,
    Template,
    Templating,
    TimeSeries,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exporter"))

from calico_lens.metrics import names as n

TAG = "calico-lens"
DS = {"type": "prometheus", "uid": "${datasource}"}
# Every query of an agent's or the inventory's own series is scoped to the chosen clusters, jobs and
# instances; recorded series (aggregated by cluster) only to the clusters.
SEL = 'cluster=~"$cluster",job=~"$job",instance=~"$instance"'
SEL_REC = 'cluster=~"$cluster"'
RANGE = "$__range"
RATE = "$__rate_interval"
DENY, ALLOW, PASS = "red", "green", "blue"
FLOWS = n.FLOWS + "_total"
DNS = n.DNS_REQUESTS + "_total"
CONNS = n.CONNS_STARTED + "_total"
UIDS = {"health": "calico-lens-health", "posture": "calico-lens-posture", "dns": "calico-lens-dns",
        "flows": "calico-lens-flows", "policy": "calico-lens-policy", "tcp": "calico-lens-tcp",
        "preview": "calico-lens-preview"}


def connections(by: str, sel: str = "") -> str:
    """Connections started per second from Felix's records, each connection once: a denial from the
    end that denied it; an allowed connection from the destination's node when it is a pod or host,
    else from the source's (the rule behind namespace_workload:calico_lens_connections_started:rate5m)."""
    extra = f",{sel}" if sel else ""
    return (f"sum by ({by}) (rate({CONNS}{{{SEL}{extra},action=\"deny\"}}[{RATE}]) "
            f"or rate({CONNS}{{{SEL}{extra},action!=\"deny\",reporter=\"dst\"}}[{RATE}]) "
            f"or rate({CONNS}{{{SEL}{extra},action!=\"deny\",reporter=\"src\",destination_kind!~\"pod|host\"}}"
            f"[{RATE}]))")


def connections_or_flows(by: str, sel: str = "") -> str:
    """Felix's connections where an agent has them, logged flows (Log rules) otherwise."""
    extra = f",{sel}" if sel else ""
    return f"{connections(by, sel)} or sum by ({by}) (rate({FLOWS}{{{SEL}{extra}}}[{RATE}]))"


def filter_variable(name: str, label: str, query: str) -> Template:
    """A query variable that filters every panel: multi-select, All (matching anything) by default."""
    return Template(name=name, label=label, dataSource=DS, query=query, includeAll=True, multi=True,
                    allValue=".*", default="$__all")


def templating(namespace_source: str = f"{FLOWS}", namespace_label: str = "destination_namespace",
               extra: tuple[Template, ...] = ()) -> Templating:
    return Templating(list=[
        Template(name="datasource", label="Data source", type="datasource", query="prometheus"),
        filter_variable("cluster", "Cluster", f"label_values({n.BUILD_INFO}, cluster)"),
        filter_variable("job", "Job", f'label_values({n.BUILD_INFO}{{cluster=~"$cluster"}}, job)'),
        filter_variable("instance", "Instance",
                        f'label_values({n.BUILD_INFO}{{cluster=~"$cluster",job=~"$job"}}, instance)'),
        filter_variable("namespace", "Namespace", f"label_values({namespace_source}, {namespace_label})"),
        *extra,
    ])


# The flows board's policy filter, which the policy board's links set.
POLICY_VARIABLE = filter_variable(
    "policy", "Policy", f'label_values({{__name__=~"{FLOWS}|{CONNS}",cluster=~"$cluster"}}, policy)')
# The board's context as URL parameters, for links to another board.
CONTEXT = "${__url_time_range}&${datasource:queryparam}&${cluster:queryparam}&${job:queryparam}&${instance:queryparam}"


def links() -> list[DashboardLink]:
    return [DashboardLink(title="calico-lens", type="dashboards", tags=[TAG], asDropdown=True,
                          keepTime=True, includeVars=True)]


def grid(x: int, y: int, w: int, h: int) -> GridPos:
    return GridPos(h=h, w=w, x=x, y=y)


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, format=fmt, datasource=DS)


def colour_overrides(mapping: dict[str, str]) -> list[dict]:
    return [{"matcher": {"id": "byName", "options": name},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}]}
            for name, colour in mapping.items()]


ACTION_COLOURS = colour_overrides({"deny": DENY, "allow": ALLOW, "pass": PASS})


def timeseries(title: str, description: str, unit: str, targets: list[Target], pos: tuple[int, int, int, int],
               overrides: list[dict] | None = None, stacking: bool = False) -> TimeSeries:
    return TimeSeries(title=title, description=description, unit=unit, dataSource=DS, targets=targets,
                      gridPos=grid(*pos), overrides=overrides or [],
                      stacking={"mode": "normal"} if stacking else {}, legendDisplayMode="table",
                      legendPlacement="right", legendCalcs=["lastNotNull"])


def stat(title: str, description: str, unit: str, expr: str, pos: tuple[int, int, int, int],
         thresholds: list[dict] | None = None) -> Stat:
    return Stat(title=title, description=description, format=unit, dataSource=DS, targets=[target(expr)],
                gridPos=grid(*pos), reduceCalc="lastNotNull",
                thresholds=thresholds or [{"color": "green", "value": None}])


def table(title: str, description: str, unit: str, targets: list[Target], pos: tuple[int, int, int, int],
          transformations: list[dict] | None = None, overrides: list[dict] | None = None) -> Table:
    return Table(title=title, description=description, unit=unit, dataSource=DS, targets=targets,
                 gridPos=grid(*pos), transformations=transformations or [], overrides=overrides or [])


@attr.s
class NodeGraph(Panel):
    """Grafana's ``nodeGraph`` panel, which grafanalib has no class for. Fed by a nodes query
    (fields id, title, mainstat) and an edges query (id, source, target, mainstat)."""

    unit = attr.ib(default="ops")

    def to_json_data(self) -> dict:
        stat = {"mainStatUnit": self.unit}
        return self.panel_json({"type": "nodeGraph", "fieldConfig": {"defaults": {"unit": self.unit}, "overrides": []},
                                "options": {"nodes": stat, "edges": stat}})


@attr.s
class HeatmapPanel(Panel):
    """Grafana's current ``heatmap`` panel over Prometheus histogram buckets (grafanalib's class
    targets the old one)."""

    unit = attr.ib(default="s")

    def to_json_data(self) -> dict:
        return self.panel_json({"type": "heatmap", "fieldConfig": {"defaults": {"unit": self.unit}, "overrides": []},
                                "options": {"calculate": False, "yAxis": {"unit": self.unit},
                                            "cellGap": 1, "color": {"scheme": "Oranges", "mode": "scheme"}}})


def dashboard(key: str, title: str, description: str, panels: list[Panel], **templating_args) -> Dashboard:
    return Dashboard(title=title, description=description, uid=UIDS[key], tags=[TAG], timezone="browser",
                     refresh="30s", panels=panels, templating=templating(**templating_args), links=links(),
                     editable=True, graphTooltip=GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR).auto_panel_ids()
