{{- define "cl.name" -}}{{ default "calico-lens" .Values.nameOverride | trunc 40 | trimSuffix "-" }}{{- end -}}
{{/* The prefix of every resource name: fullnameOverride, else the release name. */}}
{{- define "cl.fullname" -}}{{ default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}{{- end -}}
{{- define "cl.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
{{- define "cl.labels" -}}
app.kubernetes.io/name: {{ include "cl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "cl.selector" -}}
app.kubernetes.io/name: {{ include "cl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{/* Prometheus Operator integration: on when asked, or (auto) when its API is present. */}}
{{- define "cl.operator" -}}
{{- $v := .Values.prometheusOperator.enabled -}}
{{- if eq (toString $v) "auto" -}}{{ .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}{{- else -}}{{ $v }}{{- end -}}
{{- end -}}
{{/* The quickstart stack: on when asked, or (auto) where no Prometheus Operator API is found. */}}
{{- define "cl.quickstart" -}}
{{- $v := .Values.quickstart.enabled -}}
{{- if eq (toString $v) "auto" -}}{{ not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}{{- else -}}{{ $v }}{{- end -}}
{{- end -}}

{{/* Does the agent read the Kubernetes API? Not when Felix's records are its only input. */}}
{{- define "cl.agentNeedsKube" -}}
{{- $only := and (eq (len .Values.agent.sources) 1) (has "felix" .Values.agent.sources) -}}
{{- if and $only (not .Values.agent.tcpStats) (not .Values.agent.conntrack) (not .Values.fluentbit.enabled) -}}false{{- else -}}true{{- end -}}
{{- end }}

{{/* The agent's config file (its checksum rolls the DaemonSet on any change). */}}
{{- define "cl.agentConfigText" -}}
log_prefix: {{ .Values.logPrefix | quote }}
sources: {{ .sources | toJson }}
metrics_address: "0.0.0.0:{{ .Values.agent.port }}"
source_granularity: {{ .Values.agent.granularity.source }}
destination_granularity: {{ .Values.agent.granularity.destination }}
max_series: {{ .Values.agent.maxSeries }}
series_ttl: {{ .Values.agent.seriesTTL }}
cluster_domain: {{ .Values.clusterDomain }}
tcp_stats: {{ .Values.agent.tcpStats }}
conntrack: {{ .Values.agent.conntrack }}
tcp_interval: {{ .Values.agent.tcpInterval }}
forward_max_connections: {{ .Values.agent.forwardMaxConnections }}
{{- end }}

{{/* The generated rules with the chart's agent selector and runbook URL put in place of the
generator's defaults (alerts/generate.py; a test keeps the two defaults equal). */}}
{{- define "cl.rules" -}}
{{- $text := .Files.Get "files/rules/calico-lens.rules.yaml" -}}
{{- $text = replace "job=\"calico-lens\"" .Values.rules.agentSelector $text -}}
{{- $text = replace "https://github.com/calico-lens/calico-lens/blob/main/alerts/runbook.md#" (printf "%s#" .Values.rules.runbookUrl) $text -}}
{{- $text -}}
{{- end }}

{{/* What every pod of the chart carries: podLabels and podAnnotations (under a pod template's
metadata, after its own labels/annotations), imagePullSecrets (in its spec). */}}
{{- define "cl.podLabels" -}}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- define "cl.podAnnotations" -}}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- define "cl.pullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Does anything speak Forward to the agent (Fluent Bit, or a forward source)? */}}
{{- define "cl.forward" -}}{{ or .Values.fluentbit.enabled (has "forward" .Values.agent.sources) }}{{- end -}}
{{/* The Secret holding the Forward shared key (key: shared-key). */}}
{{- define "cl.forwardSecret" -}}{{ default (printf "%s-forward" (include "cl.fullname" .)) .Values.agent.forwardSharedKey.existingSecret }}{{- end -}}
{{/* A generated secret value that survives upgrades: the one already in the cluster, else a new one. */}}
{{- define "cl.keptSecret" -}}
{{- $old := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $old $old.data (index $old.data .key) -}}{{ index $old.data .key }}{{- else -}}{{ randAlphaNum 32 | b64enc }}{{- end -}}
{{- end }}

{{/* The quickstart Prometheus's configuration (its checksum rolls Prometheus on a change). */}}
{{- define "cl.quickstartPrometheus" -}}
{{- $root := . -}}
global:
  scrape_interval: 30s
  evaluation_interval: 30s
rule_files: [/etc/prometheus/rules/*.yaml]
alerting:
  alertmanagers:
    - static_configs: [{targets: ["{{ include "cl.fullname" . }}-alertmanager:9093"]}]
{{- with .Values.quickstart.prometheus.remoteWrite }}
remote_write: {{- toYaml . | nindent 2 }}
{{- end }}
# The agents' and the inventory's pods in this namespace only (a namespaced Role lists them), with
# the labels the chart's PodMonitor gives: node, and the job names the rules and dashboards expect.
# honor_labels: the metrics' own namespace label (the pods' namespaces) is never renamed.
scrape_configs:
  {{- range $job, $component := dict "calico-lens" "agent" "calico-lens-inventory" "inventory" }}
  - job_name: {{ $job }}
    honor_labels: true
    kubernetes_sd_configs: [{role: pod, namespaces: {names: ["{{ $root.Release.Namespace }}"]}}]
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance], regex: "{{ $root.Release.Name }}", action: keep}
      - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component], regex: {{ $component }}, action: keep}
      - {source_labels: [__meta_kubernetes_pod_container_port_name], regex: metrics, action: keep}
      - {source_labels: [__meta_kubernetes_pod_node_name], target_label: node}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
    {{- if $root.Values.metrics.webConfigSecret }}
    {{- $scrape := $root.Values.quickstart.prometheus.scrape }}
    scheme: {{ $root.Values.metrics.scheme }}
    {{- if $scrape.username }}
    basic_auth: {username: {{ $scrape.username | quote }}, password_file: /etc/prometheus/scrape/password}
    {{- end }}
    {{- if eq $root.Values.metrics.scheme "https" }}
    tls_config:
      ca_file: /etc/prometheus/scrape/ca.crt
      {{- with $scrape.serverName }}
      server_name: {{ . | quote }}
      {{- end }}
      {{- if $scrape.insecureSkipVerify }}
      insecure_skip_verify: true
      {{- end }}
    {{- end }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* /metrics behind TLS and basic auth (metrics.webConfigSecret): the flag, the mount, the volume. */}}
{{- define "cl.webArgs" -}}
{{- if .Values.metrics.webConfigSecret }}, "--web-config-file", "/etc/calico-lens/web/web-config.yml"{{ end -}}
{{- end }}
{{- define "cl.webMount" -}}
{{- if .Values.metrics.webConfigSecret }}
- {name: web-config, mountPath: /etc/calico-lens/web, readOnly: true}
{{- end }}
{{- end }}
{{- define "cl.webVolume" -}}
{{- if .Values.metrics.webConfigSecret }}
- name: web-config
  secret: {secretName: {{ .Values.metrics.webConfigSecret }}}
{{- end }}
{{- end }}
{{- define "cl.probeScheme" -}}{{ upper .Values.metrics.scheme }}{{- end -}}
