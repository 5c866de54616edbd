"""Cluster health: policies, protection, flows, top talkers, DNS, and the agents themselves."""

from calico_lens.metrics import names as n
from common import ACTION_COLOURS, CONNS, DNS, FLOWS, RANGE, RATE, SEL, dashboard, stat, target, timeseries

RED_ABOVE_0 = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
ORANGE_ABOVE_0 = [{"color": "green", "value": None}, {"color": "orange", "value": 1}]
NS = f'{SEL},destination_namespace=~"$namespace"'

dashboard = dashboard("health", "calico-lens / Cluster health", "Policies, protection, flows, DNS and agent "
                      "health at a glance.", [
    stat("Policies", "Network policies of every kind in the cluster.", "short",
         f"sum({n.POLICIES}{{{SEL}}})", (0, 0, 4, 5)),
    stat("Unused policies", "Policies that select no pod.", "short",
         f'sum({n.POLICIES}{{{SEL},state="unused"}}) or vector(0)', (4, 0, 4, 5), ORANGE_ABOVE_0),
    stat("Policies denying traffic", "Policies that denied connections or logged flows in the selected range.",
         "short", f'count((sum by (policy) (increase({CONNS}{{{SEL},action="deny"}}[{RANGE}])) or sum by (policy) '
                  f'(increase({FLOWS}{{{SEL},action="deny"}}[{RANGE}]))) > 0) or vector(0)', (8, 0, 4, 5),
         ORANGE_ABOVE_0),
    stat("Unprotected pods", "Pods no policy restricts on ingress.", "short",
         f'sum({n.ENDPOINTS}{{{SEL},ingress="unprotected",namespace=~"$namespace"}}) or vector(0)', (12, 0, 4, 5),
         RED_ABOVE_0),
    stat("Security score", "Posture score 0-100 (see the posture dashboard).", "none",
         f"min({n.SECURITY_SCORE}{{{SEL}}})", (16, 0, 4, 5),
         [{"color": "red", "value": None}, {"color": "orange", "value": 50}, {"color": "green", "value": 80}]),
    stat("Agents up", "calico-lens agents Prometheus can scrape.", "short",
         f"sum(up{{{SEL}}} and on (job, instance) {n.BUILD_INFO}{{{SEL}}})", (20, 0, 4, 5)),
    timeseries("Flows allowed vs denied", "Logged flows per second by verdict.", "ops",
               [target(f"sum by (action) (rate({FLOWS}{{{NS}}}[{RATE}]))", "{{action}}")], (0, 5, 12, 8),
               ACTION_COLOURS),
    timeseries("Top talkers", "The 10 busiest source to destination workload pairs, flows per second.", "ops",
               [target(f"topk(10, sum by (source_workload, destination_workload) (rate({FLOWS}{{{NS}}}[{RATE}])))",
                       "{{source_workload}} → {{destination_workload}}")], (12, 5, 12, 8)),
    timeseries("DNS request rate and p99 latency", "CoreDNS queries per second, and the 99th percentile of their "
               "time on the right axis.", "reqps",
               [target(f"sum(rate({DNS}{{{SEL}}}[{RATE}]))", "queries/s"),
                target(f"histogram_quantile(0.99, sum by (le) (rate({n.DNS_DURATION}_bucket{{{SEL}}}[{RATE}])))",
                       "p99 (s)", "B")], (0, 13, 12, 8),
               [{"matcher": {"id": "byName", "options": "p99 (s)"},
                 "properties": [{"id": "unit", "value": "s"}, {"id": "custom.axisPlacement", "value": "right"}]}]),
    timeseries("Agent input", "Input lines per second by result; malformed should stay at zero.", "ops",
               [target(f"sum by (result) (rate({n.INPUT_LINES}_total{{{SEL}}}[{RATE}]))", "{{result}}")],
               (12, 13, 12, 8),
               [{"matcher": {"id": "byName", "options": "malformed"},
                 "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}]),
    timeseries("Series and overflow", "Series held per table, and events folded into __overflow__ per second.",
               "short",
               [target(f"sum by (metric) ({n.SERIES}{{{SEL}}})", "{{metric}}"),
                target(f"sum by (metric) (rate({n.SERIES_OVERFLOW}_total{{{SEL}}}[{RATE}]))", "overflow {{metric}}",
                       "B")], (0, 21, 12, 8)),
    timeseries("Kubernetes metadata", "Objects in the agents' metadata cache, by resource.", "short",
               [target(f"max by (resource) ({n.KUBE_OBJECTS}{{{SEL}}})", "{{resource}}")], (12, 21, 12, 8)),
    timeseries("Input lost or cut off", "Source problems per interval, by source and reason: kernel records "
               "overwritten before the agent read them (kmsg ring, eBPF trace buffer), lines cut for length, "
               "files rotated or missing, Forward clients cut off. No data while nothing goes wrong.", "short",
               [target(f"sum by (source, reason) (increase({n.SOURCE_ERRORS}_total{{{SEL}}}[{RATE}]))",
                       "{{source}} {{reason}}")], (0, 29, 24, 8)),
    timeseries("Felix flush size", "New flow records in Felix's newest flush, by node. Felix's flow client buffers "
               f"{n.FELIX_CLIENT_BUFFER:,} and drops the rest of a larger flush: at that line, shorten "
               "flowLogsFlushInterval. No data without the felix source.", "short",
               [target(f"max by (node) ({n.FELIX_FLUSH_RECORDS}{{{SEL}}})", "{{node}}")], (0, 37, 24, 8)),
])
