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
