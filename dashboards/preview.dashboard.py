"""Policy preview: what each staged policy would change once enforced, from Felix's pending policy
traces (the felix source, Calico >= 3.30.1). Rows count connections whose verdict with the staged
policies differs from today's."""

from common import ALLOW, DENY, RATE, SEL, colour_overrides, dashboard, n, stat, table, target, timeseries

PV = n.POLICY_PREVIEW + "_total"
NS = 'source_namespace=~"$namespace"'
# Both ends of a pod-to-pod connection report it: the larger side counts each connection once.
ONCE = "max without (reporter) (sum by ({by}, reporter) (rate({pv}{{{sel}}}[{rate}])))"


def once(by: str, sel: str) -> str:
    return ONCE.format(by=by, pv=PV, sel=f"{SEL},{NS},{sel}", rate=RATE)


WOULD_DENY = 'enforced_action="allow",pending_action="deny"'
WOULD_ALLOW = 'enforced_action="deny",pending_action="allow"'
PAIR = "policy, source_namespace, source_workload, destination_namespace, destination_workload"
RANGE = "max without (reporter) (sum by ({by}, reporter) (increase({pv}{{{sel}}}[$__range])))"

dashboard = dashboard("preview", "calico-lens / Policy preview",
                      "What staged policies would deny or newly allow once enforced (Felix's pending policy traces).",
                      [
    stat("Staged policies that would deny allowed traffic", "Staged policies whose enforcement would deny "
         "connections that are allowed today (in the selected range).", "short",
         f"count(count by (policy) ({RANGE.format(by='policy', pv=PV, sel=f'{SEL},{NS},{WOULD_DENY}')} > 0))",
         (0, 0, 6, 5), [{"color": "green", "value": None}, {"color": "red", "value": 1}]),
    stat("Staged policies that would allow denied traffic", "Staged policies whose enforcement would allow "
         "connections that are denied today (in the selected range).", "short",
         f"count(count by (policy) ({RANGE.format(by='policy', pv=PV, sel=f'{SEL},{NS},{WOULD_ALLOW}')} > 0))",
         (6, 0, 6, 5), [{"color": "green", "value": None}, {"color": "orange", "value": 1}]),
    table("Staged policies: what would change", "Per staged policy, connections in the selected range that it "
          "would deny although allowed today (denied) and allow although denied today (allowed).", "short",
          [target(RANGE.format(by="policy, tier, pending_action", pv=PV, sel=f"{SEL},{NS}"), "", "A", True, "table")],
          (12, 0, 12, 10), [{"id": "organize", "options": {"excludeByName": {"Time": True}}},
                            {"id": "groupingToMatrix", "options": {"columnField": "pending_action",
                                                                   "rowField": "policy", "valueField": "Value"}}],
          colour_overrides({"deny": DENY, "allow": ALLOW})),
    timeseries("Would deny, by staged policy", "Connections per second allowed today that the staged policy "
               "would deny.", "ops", [target(once("policy, tier", WOULD_DENY), "{{tier}} {{policy}}")],
               (0, 5, 12, 8)),
    timeseries("Would newly allow, by staged policy", "Connections per second denied today that the staged "
               "policy would allow.", "ops", [target(once("policy, tier", WOULD_ALLOW), "{{tier}} {{policy}}")],
               (0, 13, 12, 8)),
    table("Would deny, by workload", "Which connections a staged policy would break: source and destination "
          "workloads with their rate (connections/s).", "ops",
          [target(f"topk(20, {once(PAIR, WOULD_DENY)})", "", "A", True, "table")],
          (12, 10, 12, 11), [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]),
    table("Would newly allow, by workload", "Which denied connections a staged policy would let through "
          "(connections/s).", "ops",
          [target(f"topk(20, {once(PAIR, WOULD_ALLOW)})", "", "A", True, "table")],
          (12, 21, 12, 10), [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]),
], namespace_source=PV, namespace_label="source_namespace")
