"""Policy board: every policy with tier, order, endpoints selected and its allowed and denied hits."""

from calico_lens.metrics import names as n
from common import FLOWS, SEL, UIDS, dashboard, table, target, timeseries

NS = f'{SEL},namespace=~"$namespace"'
# Flows carry policy="namespace/name"; the board joins on the same form.
AS_FLOW = 'label_replace(label_join({e}, "policy", "/", "namespace", "policy"), "policy", "$1", "policy", "/(.*)")'

board = table(
    "Policy board", "Every policy: kind, tier, order, types, pods selected, flows allowed and denied in the last "
    "hour. Selected = 0 means unused. Click a policy for its flows.", "short",
    [target(AS_FLOW.format(e=f"max by (policy, namespace, kind, tier, order, types) ({n.POLICY_INFO}{{{NS}}})"),
            "", "info", True, "table"),
     target(AS_FLOW.format(e=f"max by (policy, namespace, kind, tier) ({n.POLICY_SELECTED}{{{NS}}})"), "",
            "selected", True, "table"),
     target(f'sum by (policy) (increase({FLOWS}{{{SEL},action="allow"}}[1h]))', "", "allowed", True, "table"),
     target(f'sum by (policy) (increase({FLOWS}{{{SEL},action="deny"}}[1h]))', "", "denied", True, "table")],
    (0, 0, 24, 14),
    [{"id": "merge", "options": {}},
     {"id": "organize", "options": {"excludeByName": {"Time": True, "Value #info": True},
                                    "renameByName": {"Value #selected": "selected", "Value #allowed": "allowed 1h",
                                                     "Value #denied": "denied 1h"}}}],
    [{"matcher": {"id": "byName", "options": "policy"},
      "properties": [{"id": "links", "value": [{"title": "Flows of this policy",
                                                "url": f"/d/{UIDS['flows']}?${{__url_time_range}}&"
                                                       "var-datasource=${datasource}"}]}]},
     {"matcher": {"id": "byName", "options": "selected"},
      "properties": [{"id": "custom.displayMode", "value": "color-background"},
                     {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                         {"color": "orange", "value": None}, {"color": "green", "value": 1}]}}]},
     {"matcher": {"id": "byName", "options": "denied 1h"},
      "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]},
     {"matcher": {"id": "byName", "options": "allowed 1h"},
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
               [target(f'sum by (policy) ({n.REC_DENIED_POLICY}{{{SEL}}})', "{{policy}}")], (0, 22, 24, 8)),
], namespace_source=n.POLICY_INFO, namespace_label="namespace")
