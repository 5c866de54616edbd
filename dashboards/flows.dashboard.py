"""Flows and service graph: who talks to whom, allowed or denied, on which ports, to where.

Counts are connections from Felix's flow records (the felix source, each connection once) where an
agent has them, and logged flows (Log rules: kmsg, trace, Fluent Bit) where it has not."""

from common import (
    ACTION_COLOURS,
    CONNS,
    DS,
    FLOWS,
    POLICY_VARIABLE,
    RATE,
    SEL,
    NodeGraph,
    connections,
    connections_or_flows,
    dashboard,
    grid,
    n,
    table,
    target,
    timeseries,
)

NS = 'destination_namespace=~"$namespace",policy=~"$policy"'
R = f"rate({FLOWS}{{{SEL},{NS}}}[{RATE}])"
BYTES = n.FLOW_BYTES + "_total"
# Bytes once per flow: the source's node for Felix's records, and conntrack's own counts.
VOLUME = f'rate({BYTES}{{{SEL},{NS},reporter=~"src|{n.REPORTER_CONNTRACK}"}}[{RATE}])'
PAIR = "source_namespace, source_workload, destination_namespace, destination_workload, action"


def _graph_ids(expr: str) -> str:
    """Nodes keyed by namespace/workload, so same-named workloads of two namespaces stay apart."""
    src = f'label_join({expr}, "source", "/", "source_namespace", "source_workload")'
    return f'label_join({src}, "target", "/", "destination_namespace", "destination_workload")'


EDGES = _graph_ids(connections_or_flows(PAIR, NS))
COLOURED = (f'label_replace(label_replace({EDGES}, "color", "red", "action", "deny"), '
            '"color", "green", "action", "allow|pass")')

dashboard = dashboard("flows", "calico-lens / Flows",
                      "Connections (Felix's flow records) or logged flows by workload, verdict, port and destination.",
                      [
    timeseries("Allowed vs denied", "Connections started per second by final verdict (Felix's records, each "
               "connection once), or logged flows per second where the agent reads Log rules.", "ops",
               [target(connections_or_flows("action", NS), "{{action}}")], (0, 0, 12, 8), ACTION_COLOURS,
               stacking=True),
    timeseries("By source workload", "Top 10 source workloads by connections (or logged flows) per second.", "ops",
               [target(f"topk(10, {connections_or_flows('source_namespace, source_workload', NS)})",
                       "{{source_namespace}}/{{source_workload}}")], (12, 0, 12, 8)),
    timeseries("By destination namespace", "Connections (or logged flows) per second into each namespace.", "ops",
               [target(connections_or_flows("destination_namespace", NS), "{{destination_namespace}}")],
               (0, 8, 12, 8)),
    timeseries("Egress to network sets, public and private addresses",
               "Connections (or logged flows) leaving the cluster's workloads, by what they reach.", "ops",
               [target(connections_or_flows("destination_kind, destination_workload",
                                            'destination_kind=~"networkset|public|private",policy=~"$policy"'),
                       "{{destination_kind}} {{destination_workload}}")], (12, 8, 12, 8)),
    table("Destination ports", "The 15 busiest destination ports with their verdicts: connections/s from Felix's "
          "records (A) and logged flows/s (B).", "ops",
          [target(f"topk(15, {connections('destination_port, protocol, action', NS)})", "", "A", True, "table"),
           target(f"topk(15, sum by (destination_port, protocol, action) ({R}))", "", "B", True, "table")],
          (0, 16, 12, 9), [{"id": "merge", "options": {}},
                           {"id": "organize", "options": {"excludeByName": {"Time": True}}}]),
    NodeGraph(title="Service graph", description="Workloads (namespace/workload) as nodes; edges are connections "
                                                  "(or logged flows) per second, one per verdict: red denied, green "
                                                  "allowed.",
              dataSource=DS, gridPos=grid(12, 16, 12, 18), targets=[
                  target(f'sum by (id) (label_replace({EDGES}, "id", "$1", "source", "(.*)")) '
                         f'or sum by (id) (label_replace({EDGES}, "id", "$1", "target", "(.*)"))',
                         "", "nodes", True, "table"),
                  target(f'sum by (id, source, target, action, color) (label_join({COLOURED}, "id", " ", '
                         f'"source", "target", "action"))', "", "edges", True, "table")],
              transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                             "renameByName": {"Value #nodes": "mainstat",
                                                                              "Value #edges": "mainstat",
                                                                              "action": "detail__verdict"}}}]),
    timeseries("Denied by policy", "Which policies deny: connections per second (Felix's records) or logged "
               "flows per second.", "ops",
               [target(f'sum by (policy, tier) (rate({CONNS}{{{SEL},{NS},action="deny"}}[{RATE}])) '
                       f'or sum by (policy, tier) (rate({FLOWS}{{{SEL},{NS},action="deny"}}[{RATE}]))',
                       "{{tier}} {{policy}}")], (0, 25, 12, 9)),
    timeseries("Bytes by workload pair", "Top 10 source → destination pairs by bytes per second, both ways (out = "
               "sent by the source); from Felix's records (counted at the source's node) or conntrack.", "Bps",
               [target(f"topk(10, sum by (source_namespace, source_workload, destination_namespace, "
                       f"destination_workload) ({VOLUME}))",
                       "{{source_namespace}}/{{source_workload}} → "
                       "{{destination_namespace}}/{{destination_workload}}")], (0, 34, 12, 9)),
    timeseries("Live connections", "Connections open at the end of Felix's newest flush, by destination "
               "(the destination's node, or the source's for destinations outside the cluster).", "short",
               [target(f'sum by (destination_namespace, destination_workload) ({n.CONNS_LIVE}{{{SEL},{NS},'
                       f'reporter="dst"}} or {n.CONNS_LIVE}{{{SEL},{NS},reporter="src",'
                       f'destination_kind!~"pod|host"}})', "{{destination_namespace}}/{{destination_workload}}")],
               (12, 34, 12, 9)),
    timeseries("Retried connection attempts", "Logged TCP SYNs the client's kernel sent again (same 5-tuple, new IP "
               "ID): retries of one attempt, not new flows. Denied or unanswered attempts show up here.", "ops",
               [target(f"topk(10, sum by (source_namespace, source_workload, destination_namespace, "
                       f"destination_workload, destination_port, action) "
                       f"(rate({n.FLOW_RETRIES}_total{{{SEL},{NS}}}[{RATE}])))",
                       "{{source_namespace}}/{{source_workload}} → {{destination_namespace}}/"
                       "{{destination_workload}}:{{destination_port}} {{action}}")], (0, 43, 12, 9)),
], extra=(POLICY_VARIABLE,))
