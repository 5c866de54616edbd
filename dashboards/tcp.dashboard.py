"""TCP health and traffic volume: RTT, retransmissions, resets, drops, bytes, unreplied flows."""

from calico_lens.metrics import names as n
from common import DS, RATE, SEL, HeatmapPanel, dashboard, grid, table, target, timeseries

NS = f'{SEL},namespace=~"$namespace"'


def per(metric: str, by: str, extra: str = "") -> str:
    return f"sum by ({by}) (rate({metric}_total{{{NS}{extra}}}[{RATE}]))"


dashboard = dashboard("tcp", "calico-lens / TCP", "Round-trip times, retransmissions, resets, drops and traffic "
                      "volume per node and workload, read from the kernel.", [
    timeseries("RTT min and max per node", "Lowest and highest smoothed TCP RTT seen on each node in the last "
               "collection round.", "s",
               [target(f"max by (node) ({n.TCP_RTT_MAX}{{{SEL}}})", "max {{node}}"),
                target(f"min by (node) ({n.TCP_RTT_MIN}{{{SEL}}})", "min {{node}}", "B")], (0, 0, 12, 8)),
    HeatmapPanel(title="RTT heatmap", description="Smoothed RTT of established sockets, all selected workloads.",
                 dataSource=DS, gridPos=grid(12, 0, 12, 8),
                 targets=[target(f"sum by (le) (rate({n.TCP_RTT}_bucket{{{NS}}}[{RATE}]))", "{{le}}", "A",
                                 fmt="heatmap")]),
    timeseries("Retransmitted segments", "TCP segments sent again, per workload, per second.", "pps",
               [target(per(n.TCP_RETRANS, "namespace, workload"), "{{namespace}}/{{workload}}")], (0, 8, 12, 8)),
    timeseries("Resets", "TCP resets sent (out) and connections reset by the peer (in), per second.", "pps",
               [target(per(n.TCP_RESETS, "namespace, workload, direction"),
                       "{{namespace}}/{{workload}} {{direction}}")], (12, 8, 12, 8)),
    timeseries("Connection failures and listen drops", "Failed connection attempts and connections dropped at "
               "a full listen queue, per second.", "cps",
               [target(per(n.TCP_FAILURES, "namespace, workload"), "failed {{namespace}}/{{workload}}"),
                target(per(n.TCP_LISTEN_DROPS, "namespace, workload"), "listen drop {{namespace}}/{{workload}}",
                       "B")], (0, 16, 12, 8)),
    timeseries("Interface drops", "Packets dropped on the pods' interfaces, per second.", "pps",
               [target(per(n.NET_DROPS, "namespace, workload, direction"),
                       "{{namespace}}/{{workload}} {{direction}}")], (12, 16, 12, 8)),
    timeseries("Bytes per workload", "Bytes per second on the pods' interfaces, received (in) and sent (out).",
               "Bps", [target(per(n.NET_BYTES, "namespace, workload, direction"),
                              "{{namespace}}/{{workload}} {{direction}}")], (0, 24, 12, 8)),
    timeseries("Bytes and packets per node", "Pod traffic per node, bytes (left) and packets (right) per second.",
               "Bps", [target(per(n.NET_BYTES, "node, direction"), "{{node}} {{direction}}"),
                       target(per(n.NET_PACKETS, "node, direction"), "packets {{node}} {{direction}}", "B")],
               (12, 24, 12, 8),
               [{"matcher": {"id": "byRegexp", "options": "packets.*"},
                 "properties": [{"id": "unit", "value": "pps"}, {"id": "custom.axisPlacement", "value": "right"}]}]),
    table("Unreplied flows", "Connections that never saw a reply, counted since each agent started: an upstream "
          "firewall or a dead service.", "short",
          [target(f"sum by (source_namespace, source_workload, destination_namespace, destination_workload, "
                  f"destination_port) ({n.FLOWS_UNREPLIED}_total{{{SEL}}}) > 0", "", "A", True, "table")],
          (0, 32, 12, 9), [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]),
    timeseries("Flow volume by destination", "Bytes per second from conntrack, by source and destination "
               "workload (needs nf_conntrack_acct=1).", "Bps",
               [target(f'topk(10, sum by (source_workload, destination_workload, direction) (rate({n.FLOW_BYTES}_total'
                       f'{{{SEL}}}[{RATE}])))', "{{source_workload}} → {{destination_workload}} {{direction}}")],
               (12, 32, 12, 9)),
], namespace_source=f"{n.NET_BYTES}_total", namespace_label="namespace")
