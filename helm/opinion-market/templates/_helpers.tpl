{{/*
The chart's short name.
*/}}
{{- define "opinion-market.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified app name, "<release>-<chart>" unless the release name already contains the chart name.
Truncated to leave room for a component suffix within the 63-character DNS label limit.
*/}}
{{- define "opinion-market.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "opinion-market.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of a component's Deployment and Service. Call with (dict "root" $ "name" "<component>").
*/}}
{{- define "opinion-market.componentName" -}}
{{- printf "%s-%s" (include "opinion-market.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. Call with (dict "root" $ "name" "<component>"); an empty name gives the chart-wide labels.
*/}}
{{- define "opinion-market.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opinion-market.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .name }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/*
Common labels. Call with (dict "root" $ "name" "<component>").
*/}}
{{- define "opinion-market.labels" -}}
helm.sh/chart: {{ include "opinion-market.chart" .root }}
{{ include "opinion-market.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: opinion-market
{{- end }}

{{/*
The environment-variable prefix of a component's own settings: "feature" -> "FEATURE".
*/}}
{{- define "opinion-market.envPrefix" -}}
{{- . | upper | replace "-" "_" }}
{{- end }}
