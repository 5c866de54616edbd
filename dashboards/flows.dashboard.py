"""Flows and service graph: who talks to whom, allowed or denied, on which ports, to where."""

from common import ACTION_COLOURS, DS, FLOWS, RATE, SEL, NodeGraph, dashboard, grid, table, target, timeseries

NS = f'{SEL},destination_namespace=~"$namespace"'
R = f"rate({FLOWS}{{{NS}}}[{RATE}])"

dashboard = dashboard("flows", "calico-lens / Flows", "Logged flows by workload, verdict, port and destination.", [
    timeseries("Allowed vs denied", "Logged flows per second by verdict.", "ops",
               [target(f"sum by (action) ({R})", "{{action}}")], (0, 0, 12, 8), ACTION_COLOURS, stacking=True),
    timeseries("Flows by source workload", "Top 10 source workloads by logged flows per second.", "ops",
               [target(f"topk(10, sum by (source_namespace, source_workload) ({R}))",
                       "{{source_namespace}}/{{source_workload}}")], (12, 0, 12, 8)),
    timeseries("Flows by destination namespace", "Logged flows per second into each namespace.", "ops",
               [target(f"sum by (destination_namespace) ({R})", "{{destination_namespace}}")], (0, 8, 12, 8)),
    timeseries("Egress to network sets, public and private addresses",
               "Flows leaving the cluster's workloads, by what they reach.", "ops",
               [target(f'sum by (destination_kind, destination_workload) (rate({FLOWS}{{{SEL},'
                       f'destination_kind=~"networkset|public|private"}}[{RATE}]))',
                       "{{destination_kind}} {{destination_workload}}")], (12, 8, 12, 8)),
    table("Destination ports", "The 15 busiest destination ports, with their verdicts (flows/s).", "ops",
          [target(f"topk(15, sum by (destination_port, protocol, action) ({R}))", "", "A", True, "table")],
          (0, 16, 12, 9), [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]),
    NodeGraph(title="Service graph", description="Workloads as nodes, flows per second between them as edges.",
              dataSource=DS, gridPos=grid(12, 16, 12, 18), targets=[
                  target(f'sum by (id) (label_replace({R}, "id", "$1", "source_workload", "(.*)")) '
                         f'or sum by (id) (label_replace({R}, "id", "$1", "destination_workload", "(.*)"))',
                         "", "nodes", True, "table"),
                  target(f'sum by (id, source, target) (label_join(label_replace(label_replace({R}, "source", "$1", '
                         f'"source_workload", "(.*)"), "target", "$1", "destination_workload", "(.*)"), '
                         f'"id", "->", "source", "target"))', "", "edges", True, "table")],
              transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                             "renameByName": {"Value #nodes": "mainstat",
                                                                              "Value #edges": "mainstat"}}}]),
    timeseries("Denied flows by policy", "Which policies deny, flows per second.", "ops",
               [target(f'sum by (policy, tier) (rate({FLOWS}{{{NS},action="deny"}}[{RATE}]))',
                       "{{tier}} {{policy}}")], (0, 25, 12, 9)),
])
