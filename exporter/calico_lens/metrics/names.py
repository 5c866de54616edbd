"""The one source of truth for metric and label names.

Dashboards, alert rules and tests import these names instead of retyping them, so a rename
cannot drift. Names are a contract with operators: change them only with a migration note.
"""

PREFIX = "calico_lens"

# Flow metrics.
FLOWS = f"{PREFIX}_flows"  # exposed as calico_lens_flows_total (counter)
FLOWS_HELP = "Logged flows by source, destination, port, protocol, policy, tier, verdict and direction."
FLOW_LABELS: tuple[str, ...] = (
    "source_namespace",
    "source_workload",
    "source_kind",
    "destination_namespace",
    "destination_workload",
    "destination_kind",
    "destination_port",
    "protocol",
    "action",
    "policy",
    "tier",
    "direction",
)



def policy_label(namespace: str, name: str) -> str:
    """The one form of the ``policy`` label in every family (flows, Felix's records, the inventory):
    ``namespace/name`` for a namespaced policy, ``name`` for a global one."""
    return f"{namespace}/{name}" if namespace else name


FLOW_RETRIES = f"{PREFIX}_flow_retries"  # _total{FLOW_LABELS}: retransmitted SYNs, not new flows
FLOW_RETRIES_HELP = ("Retransmitted connection attempts in logged lines (a TCP SYN resent for the same 5-tuple within "
                     "syn_retry_window): retries of a flow already counted, not new flows.")

# Self-metrics.
INPUT_LINES = f"{PREFIX}_input_lines"  # _total{source, result}
INPUT_LABELS: tuple[str, ...] = ("source", "result")
RESULTS: tuple[str, ...] = ("parsed", "ignored", "malformed")
METRICS_REFUSED = f"{PREFIX}_metrics_requests_refused"  # _total{reason}: the HTTP server's refusals
SERIES = f"{PREFIX}_series"  # gauge{metric}
SERIES_OVERFLOW = f"{PREFIX}_series_overflow"  # _total{metric}: events folded into __overflow__
SERIES_EXPIRED = f"{PREFIX}_series_expired"  # _total{metric}: idle or deleted-pod series removed
KUBE_OBJECTS = f"{PREFIX}_kubernetes_objects"  # gauge{resource}
KUBE_WATCH_RESTARTS = f"{PREFIX}_kubernetes_watch_restarts"  # _total{resource}
KUBE_SYNCED = f"{PREFIX}_kubernetes_synced"  # gauge{resource}: 1 once the first list succeeded
KUBE_LAST_SYNC = f"{PREFIX}_kubernetes_last_sync_timestamp_seconds"  # gauge{resource}: cache known current
SOURCE_ERRORS = f"{PREFIX}_source_errors"  # _total{source, reason}
ENRICH_CACHE_EVICTIONS = f"{PREFIX}_enrich_cache_evictions"  # _total
BUILD_INFO = f"{PREFIX}_build_info"  # gauge{version} = 1

OVERFLOW = "__overflow__"


# Recording rules (alerts/generate.py writes them; dashboards read them). level:metric:operations.
REC_FLOWS_WORKLOAD = "namespace_workload:calico_lens_flows:rate5m"
REC_DENIED_NAMESPACE = "namespace:calico_lens_flows_denied:rate5m"
REC_DENIED_NAMESPACE_BASELINE = "namespace:calico_lens_flows_denied:rate5m_baseline"
REC_DENIED_POLICY = "policy:calico_lens_flows_denied:rate5m"
REC_DENIED_POLICY_BASELINE = "policy:calico_lens_flows_denied:rate5m_baseline"
REC_MALFORMED_RATIO = "instance_source:calico_lens_input_lines_malformed:ratio_rate15m"
REC_DNS_NAMESPACE = "namespace_rcode_zone:calico_lens_dns_requests:rate10m"
REC_DNS_P99 = "namespace:calico_lens_dns_request_duration_seconds:p99_rate10m"
REC_RETRANS_RATIO = "namespace_workload:calico_lens_tcp_retransmitted_segments:ratio_rate10m"
REC_RTT_AVG = "namespace_workload:calico_lens_tcp_rtt_seconds:avg_rate10m"
REC_RTT_AVG_BASELINE = "namespace_workload:calico_lens_tcp_rtt_seconds:avg_rate10m_baseline"
REC_CONNECTIONS = "namespace_workload:calico_lens_connections_started:rate5m"  # each connection once
REC_PREVIEW = "policy:calico_lens_policy_preview_connections:rate15m"

# DNS (CoreDNS log plugin).
DNS_REQUESTS = f"{PREFIX}_dns_requests"  # _total
DNS_REQUEST_LABELS: tuple[str, ...] = ("client_namespace", "client_workload", "qtype", "rcode", "zone")
DNS_REQUESTS_HELP = ("CoreDNS queries by client workload, query type, response code and zone "
                     "(cluster, external, search_miss).")
DNS_DURATION = f"{PREFIX}_dns_request_duration_seconds"  # histogram{client_namespace, zone}
DNS_DOMAINS = f"{PREFIX}_dns_domain_requests"  # _total{domain, rcode}: top external domains + __other__

# Cluster inventory (calico-lens inventory): policy board, protection, posture.
POLICY_INFO = f"{PREFIX}_policy_info"  # {policy, namespace, kind, tier, order, types} = 1
POLICY_SELECTED = f"{PREFIX}_policy_selected_endpoints"  # {policy, namespace, kind, tier}
POLICY_RULES = f"{PREFIX}_policy_rules"  # {policy, namespace, kind, tier, direction, action}
POLICY_ERRORS = f"{PREFIX}_policy_selector_errors"  # {policy, namespace, kind} = 1 per invalid policy
POLICIES = f"{PREFIX}_policies"  # {kind, tier, state}: active | unused | invalid
ENDPOINTS = f"{PREFIX}_endpoints"  # {namespace, ingress, egress}: default_deny | isolated | unprotected
NAMESPACE_ISOLATION = f"{PREFIX}_namespace_isolation"  # {namespace, direction}
SECURITY_SCORE = f"{PREFIX}_security_score"
SECURITY_COMPONENT = f"{PREFIX}_security_score_component"  # {component}: weighted points
NAMESPACE_SCORE = f"{PREFIX}_namespace_security_score"  # {namespace}
RECOMMENDATION = f"{PREFIX}_security_recommendation"  # {namespace, check, severity, message} = 1

# TCP health and traffic volume (per-pod procfs, sock_diag, conntrack).
TCP_SEGMENTS = f"{PREFIX}_tcp_segments"  # _total{namespace, workload, direction}
TCP_RETRANS = f"{PREFIX}_tcp_retransmitted_segments"  # _total{namespace, workload}
TCP_RESETS = f"{PREFIX}_tcp_resets"  # _total{namespace, workload, direction}
TCP_FAILURES = f"{PREFIX}_tcp_connection_failures"  # _total{namespace, workload}
TCP_LISTEN_DROPS = f"{PREFIX}_tcp_listen_drops"  # _total{namespace, workload}
TCP_RTT = f"{PREFIX}_tcp_rtt_seconds"  # histogram{namespace, workload}
TCP_RTT_MIN = f"{PREFIX}_tcp_rtt_min_seconds"  # gauge: this node, last round
TCP_RTT_MAX = f"{PREFIX}_tcp_rtt_max_seconds"
NET_BYTES = f"{PREFIX}_network_bytes"  # _total{namespace, workload, direction}
NET_PACKETS = f"{PREFIX}_network_packets"
NET_DROPS = f"{PREFIX}_network_drops"
FLOW_BYTES = f"{PREFIX}_flow_bytes"  # _total{flow labels but direction; direction in|out from the source}
FLOW_PACKETS = f"{PREFIX}_flow_packets"
FLOWS_UNREPLIED = f"{PREFIX}_flows_unreplied"  # _total{flow labels}
# Volume from conntrack (reporter "conntrack") or Felix's records (reporter "src" | "dst"): one family, one
# label set. With the felix source on, conntrack does not write volume, so bytes are never counted twice.
FLOW_VOLUME_LABELS: tuple[str, ...] = (*(x for x in FLOW_LABELS if x != "direction"), "direction", "reporter")
REPORTER_CONNTRACK = "conntrack"

# Felix's own flow records (source felix, Calico >= 3.30.1).
CONNS_STARTED = f"{PREFIX}_connections_started"  # _total{FLOW_RECORD_LABELS}
CONNS_COMPLETED = f"{PREFIX}_connections_completed"  # _total
CONNS_LIVE = f"{PREFIX}_connections_live"  # gauge
FLOW_RECORD_LABELS: tuple[str, ...] = (*FLOW_LABELS, "reporter")
POLICY_HITS = f"{PREFIX}_policy_rule_hits"  # _total: connections started per enforced policy rule
POLICY_HIT_LABELS: tuple[str, ...] = ("source_namespace", "source_workload", "destination_namespace",
                                      "destination_workload", "policy", "policy_kind", "tier", "action",
                                      "rule_index", "reporter")
POLICY_PREVIEW = f"{PREFIX}_policy_preview_connections"  # _total: pending verdict differs from enforced
POLICY_PREVIEW_LABELS: tuple[str, ...] = ("source_namespace", "source_workload", "destination_namespace",
                                          "destination_workload", "policy", "policy_kind", "tier",
                                          "enforced_action", "pending_action", "reporter")
FELIX_STREAMS = f"{PREFIX}_felix_streams"  # gauge: Felix streams connected now
FELIX_CONNECTS = f"{PREFIX}_felix_connections"  # _total: streams Felix opened
FELIX_LAST_FLOW = f"{PREFIX}_felix_last_flow_timestamp_seconds"  # gauge: when the last flow record arrived
FELIX_DEDUPE_ENTRIES = f"{PREFIX}_felix_dedupe_entries"  # gauge
FELIX_DEDUPE_EVICTIONS = f"{PREFIX}_felix_dedupe_evictions"  # _total: entries dropped by the bound
FELIX_FLUSH_RECORDS = f"{PREFIX}_felix_flush_records"  # gauge: new records of Felix's newest flush interval
# Felix's flow client buffers this many records while it waits for receipts and drops the rest of a
# larger flush (goldmane/pkg/client: a channel of 5000, Push drops when full).
FELIX_CLIENT_BUFFER = 5000
TCP_HELP = {
    TCP_SEGMENTS: "TCP segments received (in) and sent (out) by the workload's pods.",
    TCP_RETRANS: "TCP segments the workload's pods retransmitted.",
    TCP_RESETS: "TCP resets sent (out) and connections reset by the peer (in).",
    TCP_FAILURES: "TCP connection attempts that failed.",
    TCP_LISTEN_DROPS: "Connections dropped because a listen queue was full or the SYN could not be handled.",
    NET_BYTES: "Bytes received (in) and sent (out) on the pods' interfaces.",
    NET_PACKETS: "Packets received (in) and sent (out) on the pods' interfaces.",
    NET_DROPS: "Packets dropped on the pods' interfaces, received (in) and sent (out).",
    FLOW_BYTES: "Bytes per flow from conntrack (nf_conntrack_acct), out = from the source, in = its replies.",
    FLOW_PACKETS: "Packets per flow from conntrack (nf_conntrack_acct), out = from the source, in = its replies.",
    FLOWS_UNREPLIED: "Connections that never saw a reply (an upstream firewall, or a dead service).",
}
HELP = {
    **TCP_HELP,
    FLOW_BYTES: "Bytes per flow: out = sent by the source, in = its replies; reporter src|dst (Felix's records, "
                "count one of them) or conntrack.",
    FLOW_PACKETS: "Packets per flow: out = sent by the source, in = its replies; reporter src|dst (Felix's "
                  "records, count one of them) or conntrack.",
    CONNS_STARTED: "Connections started, from Felix's flow records (action = final verdict; reporter src|dst: "
                   "count one side, src for egress views, dst for ingress).",
    CONNS_COMPLETED: "Connections completed, from Felix's flow records.",
    CONNS_LIVE: "Connections live at the end of Felix's newest flush interval.",
    POLICY_HITS: "Connections started per enforced policy rule that acted on them (Felix's policy trace).",
    POLICY_PREVIEW: "Connections started whose verdict with staged policies enforced (pending) differs from "
                    "today's (enforced), by the policy that decides the pending verdict.",
}

ALL_METRICS: tuple[str, ...] = (
    METRICS_REFUSED,
    FLOWS,
    FLOW_RETRIES,
    INPUT_LINES,
    SERIES,
    SERIES_OVERFLOW,
    SERIES_EXPIRED,
    KUBE_OBJECTS,
    KUBE_WATCH_RESTARTS,
    KUBE_SYNCED,
    KUBE_LAST_SYNC,
    SOURCE_ERRORS,
    ENRICH_CACHE_EVICTIONS,
    BUILD_INFO,
    DNS_REQUESTS,
    DNS_DURATION,
    DNS_DOMAINS,
    POLICY_INFO,
    POLICY_SELECTED,
    POLICY_RULES,
    POLICY_ERRORS,
    POLICIES,
    ENDPOINTS,
    NAMESPACE_ISOLATION,
    SECURITY_SCORE,
    SECURITY_COMPONENT,
    NAMESPACE_SCORE,
    RECOMMENDATION,
    TCP_SEGMENTS,
    TCP_RETRANS,
    TCP_RESETS,
    TCP_FAILURES,
    TCP_LISTEN_DROPS,
    TCP_RTT,
    TCP_RTT_MIN,
    TCP_RTT_MAX,
    NET_BYTES,
    NET_PACKETS,
    NET_DROPS,
    FLOW_BYTES,
    FLOW_PACKETS,
    FLOWS_UNREPLIED,
    CONNS_STARTED,
    CONNS_COMPLETED,
    CONNS_LIVE,
    POLICY_HITS,
    POLICY_PREVIEW,
    FELIX_STREAMS,
    FELIX_CONNECTS,
    FELIX_LAST_FLOW,
    FELIX_DEDUPE_ENTRIES,
    FELIX_DEDUPE_EVICTIONS,
    FELIX_FLUSH_RECORDS,
)
