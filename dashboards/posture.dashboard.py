"""Security posture: the score, its components, the riskiest namespaces and what to do."""

from calico_lens.metrics import names as n
from common import DS, FLOWS, RATE, SEL, dashboard, grid, table, target, timeseries
from grafanalib.core import Stat

NS = f'{SEL},namespace=~"$namespace"'
HIDE_TIME = [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}}]

dashboard = dashboard("posture", "calico-lens / Security posture", "The policy posture score (formula in the "
                      "README), what lowers it and what to do.", [
    timeseries("Security score", "Cluster score 0-100 over time.", "none",
               [target(f"min({n.SECURITY_SCORE}{{{SEL}}})", "score")], (0, 0, 12, 8)),
    Stat(title="Score components", description="Points each component adds (its weight times its share).",
         dataSource=DS, format="none", orientation="horizontal", textMode="value_and_name", graphMode="none",
         reduceCalc="lastNotNull", thresholds=[{"color": "blue", "value": None}], gridPos=grid(12, 0, 12, 8),
         targets=[target(f"max by (component) ({n.SECURITY_COMPONENT}{{{SEL}}})", "{{component}}", "A", True)]),
    table("Riskiest namespaces", "The 10 namespaces with the lowest score.", "none",
          [target(f"bottomk(10, max by (namespace) ({n.NAMESPACE_SCORE}{{{NS}}}))", "", "A", True, "table")],
          (0, 8, 8, 10), [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]),
    table("Recommended actions", "Open findings, most severe first.", "none",
          [target(f"max by (severity, namespace, check, message) ({n.RECOMMENDATION}{{{NS}}})", "", "A", True,
                  "table")], (8, 8, 16, 10), HIDE_TIME),
    table("Namespaces without a default deny", "Namespaces where some pods are not covered by a default deny.",
          "none", [target(f"max by (namespace, direction) ({n.NAMESPACE_ISOLATION}{{{NS}}} == 0)", "", "A", True,
                          "table")], (0, 18, 12, 9), HIDE_TIME),
    timeseries("Egress to public addresses", "Flows per second from workloads to addresses outside the cluster "
               "and outside any network set.", "ops",
               [target(f'sum by (source_namespace, source_workload) (rate({FLOWS}{{{SEL},'
                       f'destination_kind="public"}}[{RATE}]))', "{{source_namespace}}/{{source_workload}}")],
               (12, 18, 12, 9)),
], namespace_source=n.NAMESPACE_SCORE, namespace_label="namespace")
