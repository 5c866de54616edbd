{{- define "cl.name" -}}calico-lens{{- end -}}
{{- define "cl.fullname" -}}{{ .Release.Name }}{{- end -}}
{{- define "cl.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
{{- define "cl.labels" -}}
app.kubernetes.io/name: calico-lens
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "cl.selector" -}}
app.kubernetes.io/name: calico-lens
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
{{- end }}

{{/* The generated rules with the chart's agent selector and runbook URL put in place of the
generator's defaults (alerts/generate.py; a test keeps the two defaults equal). */}}
{{- define "cl.rules" -}}
{{- $text := .Files.Get "files/rules/calico-lens.rules.yaml" -}}
{{- $text = replace "job=\"calico-lens\"" .Values.rules.agentSelector $text -}}
{{- $text = replace "https://github.com/calico-lens/calico-lens/blob/main/alerts/runbook.md#" (printf "%s#" .Values.rules.runbookUrl) $text -}}
{{- $text -}}
{{- end }}
