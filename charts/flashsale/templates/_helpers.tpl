{{/* Names ------------------------------------------------------------------ */}}

{{- define "flashsale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or just the release when it already contains the chart name. */}}
{{- define "flashsale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "flashsale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flashsale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flashsale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: selectors use only the stable ones, never the version. */}}
{{- define "flashsale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flashsale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flashsale.labels" -}}
helm.sh/chart: {{ include "flashsale.chart" . }}
{{ include "flashsale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Call with (dict "root" $ "component" "api"). */}}
{{- define "flashsale.componentLabels" -}}
{{ include "flashsale.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "flashsale.componentSelector" -}}
{{ include "flashsale.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "flashsale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the app's connection URLs live ------------------------------------ */}}

{{/* The chart's own Secret of URLs, when it has any to hold. */}}
{{- define "flashsale.urlSecretName" -}}
{{- printf "%s-urls" (include "flashsale.fullname" .) }}
{{- end }}

{{- define "flashsale.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s-redis:6379/0" (include "flashsale.fullname" .) }}
{{- else }}
{{- .Values.redis.external.url }}
{{- end }}
{{- end }}

{{- define "flashsale.postgresPassword" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (printf "%s-postgresql" (include "flashsale.fullname" .)) }}
{{- if .Values.postgresql.auth.password }}
{{- .Values.postgresql.auth.password }}
{{- else if $secret }}
{{- index $secret.data "password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* FLASHSALE_*_URL env entries: from an existing Secret, or from the chart's. */}}
{{- define "flashsale.urlEnv" -}}
- name: FLASHSALE_REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- if and (not .Values.redis.enabled) .Values.redis.external.existingSecret }}
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.existingSecretKey }}
      {{- else }}
      name: {{ include "flashsale.urlSecretName" . }}
      key: redis-url
      {{- end }}
- name: FLASHSALE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if and (not .Values.postgresql.enabled) .Values.postgresql.external.existingSecret }}
      name: {{ .Values.postgresql.external.existingSecret }}
      key: {{ .Values.postgresql.external.existingSecretKey }}
      {{- else if .Values.postgresql.enabled }}
      name: {{ include "flashsale.fullname" . }}-postgresql
      key: database-url
      {{- else }}
      name: {{ include "flashsale.urlSecretName" . }}
      key: database-url
      {{- end }}
{{- if or .Values.limiterRedis.url .Values.limiterRedis.existingSecret }}
- name: FLASHSALE_LIMITER_REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.limiterRedis.existingSecret }}
      name: {{ .Values.limiterRedis.existingSecret }}
      key: {{ .Values.limiterRedis.existingSecretKey }}
      {{- else }}
      name: {{ include "flashsale.urlSecretName" . }}
      key: limiter-redis-url
      {{- end }}
{{- end }}
{{- if or .Values.adminToken .Values.adminTokenSecret }}
- name: FLASHSALE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ default (include "flashsale.urlSecretName" .) .Values.adminTokenSecret }}
      key: admin-token
{{- end }}
{{- end }}

{{/* OTEL_* env for a component: call with (dict "root" $ "component" "api"). */}}
{{- define "flashsale.otelEnv" -}}
{{- $root := .root }}
{{- $endpoint := $root.Values.otel.endpoint }}
{{- if $root.Values.otel.collector.enabled }}
{{- $endpoint = printf "http://%s-otel-collector:4318" (include "flashsale.fullname" $root) }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "flashsale-%s" .component | quote }}
{{- if $endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_TRACES_SAMPLER
  value: {{ $root.Values.otel.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $root.Values.otel.samplerArg | quote }}
{{- else }}
- name: OTEL_TRACES_EXPORTER
  value: none
{{- end }}
- name: OTEL_METRICS_EXPORTER
  value: none
- name: OTEL_LOGS_EXPORTER
  value: none
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "flashsale.resourceAttributes" $root | quote }}
{{- end }}

{{- define "flashsale.resourceAttributes" -}}
{{- $attributes := list (printf "service.namespace=%s" .Release.Namespace) "k8s.pod.name=$(K8S_POD_NAME)" (printf "service.version=%s" (default .Chart.AppVersion .Values.image.tag)) }}
{{- range $key, $value := .Values.otel.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $attributes }}
{{- end }}

{{/* What every flashsale container shares: image, env, security, writable /tmp. */}}
{{- define "flashsale.containerBase" -}}
{{- $root := .root -}}
image: {{ include "flashsale.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "flashsale.fullname" $root }}
env:
  {{- include "flashsale.urlEnv" $root | nindent 2 }}
  {{- include "flashsale.otelEnv" (dict "root" $root "component" .component) | nindent 2 }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* What every flashsale pod shares; call with (dict "root" $). */}}
{{- define "flashsale.podBase" -}}
serviceAccountName: {{ include "flashsale.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end }}

{{/* Pods roll when their configuration changes. */}}
{{- define "flashsale.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}
