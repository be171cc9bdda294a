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
{{- include "flashsale.imageRef" (dict "root" . "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{/* repository:tag, with global.imageRegistry in place of the repository's registry (a
     repository without one is Docker Hub's). Call with (dict "root" $ "repository" r "tag" t). */}}
{{- define "flashsale.imageRef" -}}
{{- $repository := .repository }}
{{- with .root.Values.global.imageRegistry }}
{{- $parts := splitList "/" $repository }}
{{- $first := first $parts }}
{{- if or (contains "." $first) (contains ":" $first) (eq $first "localhost") }}
{{- $parts = rest $parts }}
{{- else if eq (len $parts) 1 }}
{{- $parts = prepend $parts "library" }}
{{- end }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) (join "/" $parts) }}
{{- end }}
{{- printf "%s:%s" $repository .tag }}
{{- end }}

{{/* What the cluster serves ------------------------------------------------- */}}

{{/* "true" when the cluster serves this API version (or capabilities.apiVersions says it
     does). Call with (dict "root" $ "api" "keda.sh/v1alpha1"). */}}
{{- define "flashsale.serves" -}}
{{- if or (.root.Capabilities.APIVersions.Has .api) (has .api .root.Values.capabilities.apiVersions) }}true{{ end }}
{{- end }}

{{/* The worker autoscaling in effect: keda, external or none (mode auto decided). */}}
{{- define "flashsale.workerScaling" -}}
{{- $mode := .Values.worker.autoscaling.mode }}
{{- if ne $mode "auto" }}{{ $mode }}
{{- else if include "flashsale.serves" (dict "root" . "api" "keda.sh/v1alpha1") }}keda
{{- else if include "flashsale.serves" (dict "root" . "api" "external.metrics.k8s.io/v1beta1") }}external
{{- else }}none
{{- end }}
{{- end }}

{{/* Why that autoscaling, for NOTES.txt. */}}
{{- define "flashsale.workerScalingReason" -}}
{{- $scaling := include "flashsale.workerScaling" . }}
{{- if ne .Values.worker.autoscaling.mode "auto" }}worker.autoscaling.mode is {{ $scaling }}
{{- else if eq $scaling "keda" }}auto: the cluster serves keda.sh/v1alpha1
{{- else if eq $scaling "external" }}auto: the cluster serves external.metrics.k8s.io but not keda.sh/v1alpha1
{{- else }}auto: the cluster serves neither keda.sh/v1alpha1 nor external.metrics.k8s.io, so {{ .Values.worker.replicaCount }} fixed workers
{{- end }}
{{- end }}

{{/* "true" when the Prometheus Operator's monitors are to be made. */}}
{{- define "flashsale.monitors" -}}
{{- $enabled := .Values.metrics.serviceMonitor.enabled }}
{{- if eq (toString $enabled) "auto" }}{{ include "flashsale.serves" (dict "root" . "api" "monitoring.coreos.com/v1") }}
{{- else if $enabled }}true
{{- end }}
{{- end }}

{{/* The API's address as other namespaces (KEDA's operator) resolve it. */}}
{{- define "flashsale.apiClusterUrl" -}}
{{- printf "http://%s-api.%s.svc:%v" (include "flashsale.fullname" .) .Release.Namespace .Values.api.service.port }}
{{- end }}

{{/* Where the app's connection URLs live ------------------------------------ */}}

{{/* The chart's own Secret of URLs, when it has any to hold. */}}
{{- define "flashsale.urlSecretName" -}}
{{- printf "%s-urls" (include "flashsale.fullname" .) }}
{{- end }}

{{- define "flashsale.redisHost" -}}
{{- printf "%s-redis.%s.svc" (include "flashsale.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The in-chart Redis's URL with the password percent-encoded (the chart knows it). */}}
{{- define "flashsale.redisUrl" -}}
{{- if .Values.redis.auth.enabled }}
{{- $password := include "flashsale.generatedPassword" (dict "root" . "secret" "redis" "key" "redis-password" "given" .Values.redis.auth.password) }}
{{- printf "redis://:%s@%s:6379/0" (include "flashsale.urlEncode" $password) (include "flashsale.redisHost" .) }}
{{- else }}
{{- printf "redis://%s:6379/0" (include "flashsale.redisHost" .) }}
{{- end }}
{{- end }}

{{/* Percent-encoding for a URL's userinfo: urlquery encodes all but [A-Za-z0-9-_.~] and
     writes a space as "+", which userinfo would read as a plus. */}}
{{- define "flashsale.urlEncode" -}}
{{- . | urlquery | replace "+" "%20" }}
{{- end }}

{{/* A password: the one given in values, else the one this release's Secret already holds
     (so upgrades keep it), else a new random one. lookup sees nothing under `helm template`,
     so GitOps users give an existingSecret instead. Call with
     (dict "root" $ "secret" "redis" "key" "redis-password" "given" <value>). */}}
{{- define "flashsale.generatedPassword" -}}
{{- /* Drawn once per render: the Secret, the URL and the checksum must see the same one. */}}
{{- if not (hasKey .root.Values "generatedPasswords") }}
{{- $_ := set .root.Values "generatedPasswords" dict }}
{{- end }}
{{- $drawn := .root.Values.generatedPasswords }}
{{- if not (hasKey $drawn .secret) }}
{{- $name := printf "%s-%s" (include "flashsale.fullname" .root) .secret }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace $name }}
{{- if .given }}
{{- $_ := set $drawn .secret .given }}
{{- else if and $existing (hasKey $existing.data .key) }}
{{- $_ := set $drawn .secret (index $existing.data .key | b64dec) }}
{{- else }}
{{- $_ := set $drawn .secret (randAlphaNum 32) }}
{{- end }}
{{- end }}
{{- index $drawn .secret }}
{{- end }}

{{/* The in-chart PostgreSQL's URL: no password (the apps get PGPASSWORD, which libpq reads
     when the URL has none). */}}
{{- define "flashsale.inChartDatabaseUrl" -}}
{{- printf "postgresql+psycopg2://%s@%s-postgresql.%s.svc:5432/%s" .Values.postgresql.auth.username (include "flashsale.fullname" .) .Release.Namespace .Values.postgresql.auth.database }}
{{- end }}

{{/* The Secret and key holding the in-chart PostgreSQL's password. */}}
{{- define "flashsale.postgresPasswordRef" -}}
{{- with .Values.postgresql.auth.existingSecret }}
name: {{ . }}
key: {{ $.Values.postgresql.auth.existingSecretKey }}
{{- else }}
name: {{ include "flashsale.fullname" . }}-postgresql
key: password
{{- end }}
{{- end }}

{{/* The Secret and key holding the in-chart Redis's password. */}}
{{- define "flashsale.redisPasswordRef" -}}
{{- with .Values.redis.auth.existingSecret }}
name: {{ . }}
key: {{ $.Values.redis.auth.existingSecretKey }}
{{- else }}
name: {{ include "flashsale.fullname" . }}-redis
key: redis-password
{{- end }}
{{- end }}

{{/* FLASHSALE_*_URL env entries: from an existing Secret, or from the chart's. */}}
{{- define "flashsale.urlEnv" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.enabled .Values.redis.auth.existingSecret }}
{{- /* The chart never sees this password: Kubernetes puts it into the URL ($(VAR) expansion). */}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- include "flashsale.redisPasswordRef" . | nindent 6 }}
- name: FLASHSALE_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "flashsale.redisHost" .) | quote }}
{{- else }}
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
{{- end }}
{{- if .Values.postgresql.enabled }}
{{- /* libpq reads PGPASSWORD when the URL has none: the password never becomes a URL. */}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      {{- include "flashsale.postgresPasswordRef" . | nindent 6 }}
{{- end }}
{{- if .Values.postgresql.enabled }}
{{- /* A plain value: it holds no password, and a pre-upgrade hook (run before this release's
     Secrets are applied) must not depend on a key an older release never wrote. */}}
- name: FLASHSALE_DATABASE_URL
  value: {{ include "flashsale.inChartDatabaseUrl" . | quote }}
{{- else }}
- name: FLASHSALE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.postgresql.external.existingSecret }}
      name: {{ .Values.postgresql.external.existingSecret }}
      key: {{ .Values.postgresql.external.existingSecretKey }}
      {{- else }}
      name: {{ include "flashsale.urlSecretName" . }}
      key: database-url
      {{- end }}
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

{{/* The API's rate-limit policy document (the watched file's content): rateLimits, else
     config.ratePolicies, else one per-IP limit on /buy from config.rateCapacity and
     config.rateRefillPerSec (the app's own default, FLASHSALE_RATE_CAPACITY and
     FLASHSALE_RATE_REFILL_PER_SEC). The file wins over every FLASHSALE_RATE_* policy variable, so
     the chart passes none of them: this is the one source. */}}
{{- define "flashsale.ratePolicies" -}}
{{- if .Values.rateLimits }}{{ toJson .Values.rateLimits }}
{{- else if .Values.config.ratePolicies }}{{ .Values.config.ratePolicies }}
{{- else }}
{{- $limit := dict "name" "per-ip" "key" "ip" "capacity" (int .Values.config.rateCapacity) "refill_per_sec" .Values.config.rateRefillPerSec }}
{{- toJson (dict "buy" (dict "limits" (list $limit))) }}
{{- end }}
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
  {{- if eq .component "api" }}
  # Watched by each API process: a changed ConfigMap applies within seconds, no pod rolls.
  - name: FLASHSALE_RATE_POLICY_FILE
    value: /etc/flashsale/rate-limits/policies.json
  {{- end }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if eq .component "api" }}
  # A whole-directory mount (never subPath), so the kubelet's updates reach the pod.
  - name: rate-limits
    mountPath: /etc/flashsale/rate-limits
    readOnly: true
  {{- end }}
{{- end }}

{{/* What every flashsale pod shares; call with (dict "root" $ "scheduling" <values>). */}}
{{- define "flashsale.podBase" -}}
serviceAccountName: {{ include "flashsale.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- include "flashsale.pulling" .root }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- include "flashsale.scheduling" .scheduling }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- if .rateLimits }}
  - name: rate-limits
    configMap:
      name: {{ include "flashsale.fullname" .root }}-rate-limits
  {{- end }}
{{- end }}

{{/* imagePullSecrets, for every pod of the chart. */}}
{{- define "flashsale.pulling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Where a pod may run: a component's nodeSelector, tolerations, affinity,
     priorityClassName and topologySpreadConstraints (as far as its values have them). */}}
{{- define "flashsale.scheduling" -}}
{{- range $field := list "nodeSelector" "tolerations" "affinity" "topologySpreadConstraints" }}
{{- with index $ $field }}
{{ $field }}:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Pods roll when their configuration or a Secret the chart writes changes (a Secret you
     bring, existingSecret, is yours to roll out). */}}
{{- define "flashsale.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secrets: {{ include "flashsale.secretsDigest" . }}
{{- end }}

{{- define "flashsale.secretsDigest" -}}
{{- $secrets := list }}
{{- range $template := list "/secret.yaml" "/postgresql/secret.yaml" "/redis/secret.yaml" }}
{{- $secrets = append $secrets (include (print $.Template.BasePath $template) $) }}
{{- end }}
{{- join "\n---\n" $secrets | sha256sum }}
{{- end }}

{{/* Connections the apps may open at once: a pool of 5 + 5 overflow per API pod
     (service/resources.py), 2 + 2 per worker (worker/jobs.py), 1 + 1 per hook, with a
     rollout's surge (25 %, rounded up) of API pods and workers at their maximums. */}}
{{- define "flashsale.connectionsNeeded" -}}
{{- $api := ternary .Values.api.autoscaling.maxReplicas .Values.api.replicaCount .Values.api.autoscaling.enabled }}
{{- /* Workers at the larger of both counts: a cluster that gains KEDA later must not need a new max_connections (a PostgreSQL restart). */}}
{{- $workers := max .Values.worker.replicaCount .Values.worker.autoscaling.maxReplicas }}
{{- $api = add $api (div (add $api 3) 4) }}
{{- $workers = add $workers (div (add $workers 3) 4) }}
{{- add (mul $api 10) (mul $workers 4) 4 }}
{{- end }}

{{/* Capacity ------------------------------------------------------------------ */}}

{{/* The in-chart Redis's maxmemory in MiB: redis.maxmemory ("<n>mb" or "<n>gb"), else what
     redis.capacity needs (its orders' bytes rounded up to a whole MiB); the chart refuses an
     override smaller than that. */}}
{{- define "flashsale.redisMaxmemoryMiB" -}}
{{- $capacity := .Values.redis.capacity }}
{{- $needed := add $capacity.baseMiB (div (add (mul $capacity.orders $capacity.bytesPerOrder) 1048575) 1048576) }}
{{- with .Values.redis.maxmemory }}
{{- $number := int (regexFind "^[0-9]+" .) }}
{{- $mib := ternary (mul $number 1024) $number (hasSuffix "gb" .) }}
{{- if lt (int $mib) (int $needed) }}
{{- fail (printf "redis.maxmemory %s is below the %dmb that redis.capacity needs (%d orders x %d B + %d MiB): raise it, or lower redis.capacity.orders" . $needed (int $capacity.orders) (int $capacity.bytesPerOrder) (int $capacity.baseMiB)) }}
{{- end }}
{{- $mib }}
{{- else }}
{{- $needed }}
{{- end }}
{{- end }}

{{/* The in-chart Redis's resources. Its memory limit, unless given, is maxmemory plus half
     again for the copy-on-write of an AOF rewrite; a given one below that is refused (the
     kernel would kill Redis before noeviction refuses writes). Its memory request, unless
     given, equals the limit: the pod holding the queue is the last a node evicts. */}}
{{- define "flashsale.redisResources" -}}
{{- $resources := deepCopy .Values.redis.resources }}
{{- $limits := default dict $resources.limits }}
{{- $requests := default dict $resources.requests }}
{{- $maxmemory := int (include "flashsale.redisMaxmemoryMiB" .) }}
{{- $needed := add $maxmemory (div $maxmemory 2) }}
{{- if hasKey $limits "memory" }}
{{- $given := int (include "flashsale.mebibytes" (dict "what" "redis.resources.limits.memory" "quantity" $limits.memory)) }}
{{- if lt $given $needed }}
{{- fail (printf "redis.resources.limits.memory %s is below the %dMi Redis needs (maxmemory %dmb plus half for an AOF rewrite): raise it, or lower redis.capacity" (toString $limits.memory) $needed $maxmemory) }}
{{- end }}
{{- else }}
{{- $_ := set $limits "memory" (printf "%dMi" $needed) }}
{{- end }}
{{- if not (hasKey $requests "memory") }}
{{- $_ := set $requests "memory" $limits.memory }}
{{- end }}
{{- $_ := set $resources "limits" $limits }}
{{- $_ := set $resources "requests" $requests }}
{{- toYaml $resources }}
{{- end }}

{{/* A memory quantity in Mi or Gi as a number of MiB. Call with (dict "what" <key> "quantity" q). */}}
{{- define "flashsale.mebibytes" -}}
{{- $quantity := toString .quantity }}
{{- if not (regexMatch "^[0-9]+(Mi|Gi)$" $quantity) }}
{{- fail (printf "%s %s: give it in Mi or Gi (e.g. 1536Mi), so the chart can check it against maxmemory" .what $quantity) }}
{{- end }}
{{- $number := int (regexFind "^[0-9]+" $quantity) }}
{{- ternary (mul $number 1024) $number (hasSuffix "Gi" $quantity) }}
{{- end }}

{{/* The in-chart Redis's volume: redis.persistence.size, else three times maxmemory (the AOF,
     and its rewrite beside it), at least 1Gi. */}}
{{- define "flashsale.redisVolumeSize" -}}
{{- with .Values.redis.persistence.size }}{{ . }}
{{- else }}{{ printf "%dMi" (max 1024 (mul 3 (int (include "flashsale.redisMaxmemoryMiB" .)))) }}
{{- end }}
{{- end }}

{{/* PostgreSQL's max_connections: postgresql.maxConnections, else what the pools need plus
     the superuser's reserved slots and headroom; the chart refuses a value below the need. */}}
{{- define "flashsale.postgresMaxConnections" -}}
{{- $needed := int (include "flashsale.connectionsNeeded" .) }}
{{- $given := int (ternary .Values.postgresql.maxConnections .Values.postgresql.external.maxConnections .Values.postgresql.enabled) }}
{{- if and $given (lt $given (add $needed 3)) }}
{{- fail (printf "PostgreSQL max_connections %d cannot hold the pools at the autoscaling maximums: %d connections plus 3 reserved for the superuser (API pods x 10, workers x 4, hooks 4); raise it or lower api/worker maxReplicas" $given $needed) }}
{{- end }}
{{- default (add $needed 3 (div $needed 5)) $given }}
{{- end }}

{{/* A component's scheduling values, its topologySpreadConstraints defaulting to a soft
     spread of its pods across nodes. Call with (dict "root" $ "component" "api" "values" <values>). */}}
{{- define "flashsale.spreadScheduling" -}}
{{- $spread := .values.topologySpreadConstraints }}
{{- if not $spread }}
{{- $selector := include "flashsale.componentSelector" (dict "root" .root "component" .component) | fromYaml }}
{{- $spread = list (dict "maxSkew" 1 "topologyKey" "kubernetes.io/hostname" "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" (dict "matchLabels" $selector)) }}
{{- end }}
{{- toYaml (merge (dict "topologySpreadConstraints" $spread) (omit .values "topologySpreadConstraints")) }}
{{- end }}

{{/* Values the schema cannot compare with each other, refused at render time. */}}
{{- define "flashsale.validate" -}}
{{- range $component := list "api" "worker" }}
{{- $autoscaling := get (get $.Values $component) "autoscaling" }}
{{- if gt (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas %v is above maxReplicas %v" $component $autoscaling.minReplicas $autoscaling.maxReplicas) }}
{{- end }}
{{- end }}
{{- $migrate := .Values.hooks.migrate }}
{{- if ge (int $migrate.waitSeconds) (int $migrate.activeDeadlineSeconds) }}
{{- fail (printf "hooks.migrate.waitSeconds %v must be below activeDeadlineSeconds %v, or the Job ends before its wait" $migrate.waitSeconds $migrate.activeDeadlineSeconds) }}
{{- end }}
{{- /* Autoscaling maximums whose database pools the server cannot hold (managed too). */}}
{{- $_ := include "flashsale.postgresMaxConnections" . }}
{{- end }}
