"""DNS from CoreDNS logs: request mix, failures by client workload, top domains, latency."""

from calico_lens.metrics import names as n
from common import DNS, FLOWS, RATE, SEL, colour_overrides, dashboard, table, target, timeseries
from grafanalib.core import Target

NS = f'{SEL},client_namespace=~"$namespace"'
R = f"rate({DNS}{{{NS}}}[{RATE}])"
RCODES = colour_overrides({"NOERROR": "green", "NXDOMAIN": "orange", "SERVFAIL": "red", "search_miss": "gray"})


def quantile(q: str) -> Target:
    return target(f"histogram_quantile({q}, sum by (le) (rate({n.DNS_DURATION}_bucket{{{NS}}}[{RATE}])))",
                  f"p{q[2:]}", f"p{q[2:]}")


dashboard = dashboard("dns", "calico-lens / DNS", "CoreDNS queries: who asks what, which answers fail, how long "
                      "they take. Search-path misses are shown apart: they are noise.", [
    timeseries("Query rate by response code", "CoreDNS queries per second by rcode.", "reqps",
               [target(f"sum by (rcode) ({R})", "{{rcode}}")], (0, 0, 12, 8), RCODES, stacking=True),
    timeseries("Queries by type", "Queries per second by query type (A, AAAA, SRV, ...).", "reqps",
               [target(f"sum by (qtype) ({R})", "{{qtype}}")], (12, 0, 12, 8)),
    timeseries("NXDOMAIN and SERVFAIL by client workload",
               "Failed answers per second per client; search-path misses (ndots noise) as a separate series.",
               "reqps",
               [target(f'sum by (client_namespace, client_workload, rcode) (rate({DNS}{{{NS},'
                       f'rcode=~"NXDOMAIN|SERVFAIL",zone!="search_miss"}}[{RATE}]))',
                       "{{client_namespace}}/{{client_workload}} {{rcode}}"),
                target(f'sum(rate({DNS}{{{NS},zone="search_miss"}}[{RATE}]))', "search_miss", "B")],
               (0, 8, 12, 8), RCODES),
    timeseries("Latency percentiles", "p50, p90 and p99 of CoreDNS query time.", "s",
               [quantile("0.50"), quantile("0.90"), quantile("0.99")], (12, 8, 12, 8)),
    table("Top external domains", "The heaviest external domains (bounded top-K; the rest as __other__), "
          "queries per second.", "reqps",
          [target(f"topk(20, sum by (domain, rcode) (rate({n.DNS_DOMAINS}_total{{{SEL}}}[{RATE}])))", "", "A",
                  True, "table")], (0, 16, 12, 10), [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]),
    timeseries("Queries by zone", "cluster, external and search_miss queries per second.", "reqps",
               [target(f"sum by (zone) ({R})", "{{zone}}")], (12, 16, 12, 10), RCODES),
    timeseries("DNS traffic denied by policy", "Denied flows to port 53 per second, by source workload.", "ops",
               [target(f'sum by (source_namespace, source_workload, policy) (rate({FLOWS}{{{SEL},'
                       f'destination_port="53",action="deny"}}[{RATE}]))',
                       "{{source_namespace}}/{{source_workload}} by {{policy}}")], (0, 26, 24, 8),
               colour_overrides({})),
], namespace_source=DNS, namespace_label="client_namespace")
