"""Policy board: every policy with tier, order, endpoints selected and its allowed and denied hits."""

from calico_lens.metrics import names as n
from common import CONNS, CONTEXT, FLOWS, RANGE, SEL, SEL_REC, UIDS, dashboard, table, target, timeseries

NS = f'{SEL},namespace=~"$namespace"'


def hits(action: str) -> str:
    """Connections (Felix's records) or logged flows per policy in the selected range. The inventory and
    the flow families name a policy alike (namespace/name), so they join without relabelling."""
    return (f'sum by (policy) (increase({CONNS}{{{SEL},action="{action}"}}[{RANGE}])) '
            f'or sum by (policy) (increase({FLOWS}{{{SEL},action="{action}"}}[{RANGE}]))')


board = table(
    "Policy board", "Every policy: kind, tier, order, types, pods selected, connections (or logged flows) allowed "
    "and denied in the selected range. Selected = 0 means unused. Click a policy for its flows.", "short",
    [target(f"max by (policy, namespace, kind, tier, order, types) ({n.POLICY_INFO}{{{NS}}})", "", "info", True,
            "table"),
     target(f"max by (policy, namespace, kind, tier) ({n.POLICY_SELECTED}{{{NS}}})", "", "selected", True, "table"),
     target(hits("allow"), "", "allowed", True, "table"),
     target(hits("deny"), "", "denied", True, "table")],
    (0, 0, 24, 14),
    [{"id": "merge", "options": {}},
     {"id": "organize", "options": {"excludeByName": {"Time": True, "Value #info": True},
                                    "renameByName": {"Value #selected": "selected", "Value #allowed": "allowed",
                                                     "Value #denied": "denied"}}}],
    [{"matcher": {"id": "byName", "options": "policy"},
      "properties": [{"id": "links", "value": [{"title": "Flows of this policy",
                                                "url": f"/d/{UIDS['flows']}?{CONTEXT}&"
                                                       "var-policy=${__value.raw}"}]}]},
     {"matcher": {"id": "byName", "options": "selected"},
      "properties": [{"id": "custom.displayMode", "value": "color-background"},
                     {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                         {"color": "orange", "value": None}, {"color": "green", "value": 1}]}}]},
     {"matcher": {"id": "byName", "options": "denied"},
      "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]},
     {"matcher": {"id": "byName", "options": "allowed"},
      "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "green"}}]}])

dashboard = dashboard("policy", "calico-lens / Policy board", "Every policy with its reach and hits.", [
    board,
    table("Policies by state", "Policies per kind, tier and state (unused selects nothing, invalid cannot be "
          "parsed).", "short", [target(f"sum by (kind, tier, state) ({n.POLICIES}{{{SEL}}})", "", "A", True,
                                       "table")], (0, 14, 12, 8),
          [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]),
    timeseries("Rules per action", "Rules across all policies by direction and action.", "short",
               [target(f"sum by (direction, action) ({n.POLICY_RULES}{{{NS}}})", "{{direction}} {{action}}")],
               (12, 14, 12, 8)),
    timeseries("Denied flows per policy (5m)", "Flows per second each policy denies.", "ops",
               [target(f'sum by (policy) ({n.REC_DENIED_POLICY}{{{SEL_REC}}})', "{{policy}}")], (0, 22, 24, 8)),
], namespace_source=n.POLICY_INFO, namespace_label="namespace")
