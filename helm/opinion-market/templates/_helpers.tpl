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

{{/*
A component's own environment: its name, HTTP host and port, datastore URLs from the Secret, upstream URLs and
its extra env. Call with (dict "root" $ "name" "<component>"). Shared by its Deployment and the CronJob.
*/}}
{{- define "opinion-market.componentEnv" -}}
{{- $root := .root }}
{{- $c := index $root.Values.components .name }}
{{- $prefix := include "opinion-market.envPrefix" .name -}}
- name: OTEL_SERVICE_NAME
  value: {{ .name | quote }}
- name: {{ $prefix }}_HTTP_HOST
  value: "0.0.0.0"
- name: {{ $prefix }}_HTTP_PORT
  value: {{ $c.port | quote }}
{{- if $c.database }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.datastores.existingSecret }}
      key: {{ $root.Values.datastores.databaseUrlKey }}
{{- end }}
{{- if $c.redis }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.datastores.existingSecret }}
      key: {{ $root.Values.datastores.redisUrlKey }}
{{- end }}
{{- range $upstream := $c.upstreams }}
{{- $u := index $root.Values.components $upstream | default dict }}
{{- if not $u.enabled }}
{{- fail (printf "components.%s.upstreams: %s is not an enabled component" $.name $upstream) }}
{{- end }}
- name: {{ printf "%s_%s_URL" $prefix (include "opinion-market.envPrefix" $upstream) }}
  value: {{ printf "http://%s:%v" (include "opinion-market.componentName" (dict "root" $root "name" $upstream)) $u.port | quote }}
{{- end }}
{{- if and (eq .name "prediction") $root.Values.modelStore.enabled }}
- name: PREDICTION_MODELS_DIR
  value: {{ $root.Values.modelStore.mountPath | quote }}
{{- end }}
{{- range $key, $value := $c.env }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $key, $ref := $c.secretEnv }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}

{{/*
The image of a component. Call with (dict "root" $ "name" "<component>").
*/}}
{{- define "opinion-market.image" -}}
{{- $c := index .root.Values.components .name -}}
{{ $c.image.repository }}:{{ $c.image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/*
Labels of the pods of a hook Job or CronJob: the chart-wide labels plus the job's role, so NetworkPolicies can
select them. Call with (dict "root" $ "name" "<role>").
*/}}
{{- define "opinion-market.jobLabels" -}}
helm.sh/chart: {{ include "opinion-market.chart" .root }}
app.kubernetes.io/name: {{ include "opinion-market.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: opinion-market
{{- end }}

{{/*
The environment of the infrastructure hooks (they run before the ConfigMap exists, so no envFrom).
*/}}
{{- define "opinion-market.hookEnv" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: KAFKA_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | default 1 | quote }}
{{- end }}

{{/*
The hardened pod-level settings and the writable /tmp every pod gets; the container securityContext is
.Values.securityContext.
*/}}
{{- define "opinion-market.podSecurity" -}}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The model registry's volume and mount (modelStore), for prediction's pods and the retraining job.
*/}}
{{- define "opinion-market.modelStoreClaim" -}}
{{- .Values.modelStore.existingClaim | default (printf "%s-models" (include "opinion-market.fullname" .)) }}
{{- end }}
