{{/* Names and labels. */}}

{{- define "webhooks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "webhooks.fullname" -}}
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

{{- define "webhooks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhooks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "webhooks.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "webhooks.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: webhooks
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "ingest"). */}}
{{- define "webhooks.componentLabels" -}}
{{ include "webhooks.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "webhooks.componentSelectorLabels" -}}
{{ include "webhooks.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Configuration: names of the ConfigMap and Secret, and which Secret the pods read. */}}

{{- define "webhooks.configName" -}}
{{- include "webhooks.fullname" . }}
{{- end }}

{{- define "webhooks.secretName" -}}
{{- default (include "webhooks.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Setup Jobs run before the release's own ConfigMap and Secret exist, so they read hook copies. */}}
{{- define "webhooks.setupConfigName" -}}
{{- printf "%s-setup" (include "webhooks.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "webhooks.setupSecretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "webhooks.setupConfigName" . }}
{{- end }}
{{- end }}

{{- define "webhooks.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "webhooks.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image of one pod; call with (dict "root" $ "slim" bool). slim: the role may run the
image without the embedded ClickHouse engine (its useSlimImage, never for the embedded
eventlog). It then gets repository@slimDigest, else the full image's digest when only that
one is pinned, else repository:<tag><slimSuffix>; an empty slimSuffix means no slim image.
*/}}
{{- define "webhooks.image" -}}
{{- $image := .root.Values.image }}
{{- $tag := default .root.Chart.AppVersion $image.tag }}
{{- if and .slim $image.slimSuffix $image.slimDigest }}
{{- printf "%s@%s" $image.repository $image.slimDigest }}
{{- else if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else if and .slim $image.slimSuffix }}
{{- printf "%s:%s%s" $image.repository $tag $image.slimSuffix }}
{{- else }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{- define "webhooks.embedded" -}}
{{- if eq .Values.clickhouse.mode "embedded" }}true{{ end }}
{{- end }}

{{/* Embedded ClickHouse lives on the eventlog pod's volume. */}}
{{- define "webhooks.dataDir" -}}/var/lib/webhooks{{- end }}

{{- define "webhooks.embeddedClickhouseUrl" -}}
{{- printf "chdb://%s/clickhouse" (include "webhooks.dataDir" .) }}
{{- end }}

{{- define "webhooks.kafkaCaPath" -}}/etc/webhooks/kafka-ca{{- end }}

{{/*
Non-secret settings: the ConfigMap's data (also its hook copy for the setup Jobs), as YAML.
config.extra is merged last, so it can add new WEBHOOKS_* settings or override these.
*/}}
{{- define "webhooks.configData" -}}
{{- $c := .Values.config -}}
{{- $data := dict
  "WEBHOOKS_ENVIRONMENT" $c.environment
  "WEBHOOKS_HOST" "0.0.0.0"
  "WEBHOOKS_LOG_LEVEL" $c.logLevel
  "WEBHOOKS_LOG_FORMAT" $c.logFormat
  "WEBHOOKS_INGEST_PORT" (.Values.ingest.port | int64 | toString)
  "WEBHOOKS_EVENTLOG_PORT" (.Values.eventlog.port | int64 | toString)
  "WEBHOOKS_FANOUT_PORT" (.Values.fanout.port | int64 | toString)
  "WEBHOOKS_KAFKA_BOOTSTRAP" .Values.kafka.bootstrap
  "WEBHOOKS_KAFKA_SECURITY_PROTOCOL" .Values.kafka.securityProtocol
  "WEBHOOKS_KAFKA_LINGER_MS" ($c.kafkaLingerMs | toString)
  "WEBHOOKS_TOPIC_PREFIX" $c.topicPrefix
  "WEBHOOKS_TOPIC_PARTITIONS" ($c.topicPartitions | int64 | toString)
  "WEBHOOKS_TOPIC_REPLICATION" ($c.topicReplication | int64 | toString)
  "WEBHOOKS_TOPIC_MIN_INSYNC_REPLICAS" ($c.topicMinInsyncReplicas | int64 | toString)
  "WEBHOOKS_RETENTION_DAYS" ($c.retentionDays | int64 | toString)
  "WEBHOOKS_MAX_BODY_BYTES" ($c.maxBodyBytes | int64 | toString)
  "WEBHOOKS_IDEMPOTENCY_WINDOW" $c.idempotencyWindow
  "WEBHOOKS_API_VERSION" $c.apiVersion
  "WEBHOOKS_RETRY_SCHEDULE" $c.retrySchedule
  "WEBHOOKS_RETRY_JITTER" ($c.retryJitter | toString)
  "WEBHOOKS_DELIVERY_TIMEOUT" $c.deliveryTimeout
  "WEBHOOKS_DELIVERY_CONCURRENCY" ($c.deliveryConcurrency | int64 | toString)
  "WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT" ($c.endpointMaxInFlight | int64 | toString)
  "WEBHOOKS_ENDPOINT_MAX_QUEUED" ($c.endpointMaxQueued | int64 | toString)
  "WEBHOOKS_SECRET_ROTATION_OVERLAP" $c.secretRotationOverlap
  "WEBHOOKS_DISABLE_AFTER" $c.disableAfter
  "WEBHOOKS_DISABLE_AFTER_FAILURES" ($c.disableAfterFailures | int64 | toString)
  "WEBHOOKS_ALLOW_PRIVATE_TARGETS" $c.allowPrivateTargets
  "WEBHOOKS_FANOUT_MAX_WAITING" ($c.fanoutMaxWaiting | int64 | toString)
  "WEBHOOKS_INGEST_MAX_BATCH_BYTES" ($c.ingestMaxBatchBytes | int64 | toString)
  "WEBHOOKS_INGEST_PRODUCE_TIMEOUT" $c.ingestProduceTimeout
  "WEBHOOKS_SHUTDOWN_DELAY" $c.shutdownDelay
  "WEBHOOKS_INGEST_KAFKA_INTAKE" ($c.ingestKafkaIntake | toString)
  "WEBHOOKS_INGEST_WORKERS" ($c.ingestWorkers | int64 | toString)
  "WEBHOOKS_SINK_BATCH_SIZE" ($c.sinkBatchSize | int64 | toString)
  "WEBHOOKS_SINK_BATCH_WAIT" ($c.sinkBatchWait | toString)
-}}
{{- with .Values.kafka.sasl.mechanism }}
{{- $_ := set $data "WEBHOOKS_KAFKA_SASL_MECHANISM" . }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
{{- $_ := set $data "WEBHOOKS_KAFKA_SSL_CA_LOCATION" (printf "%s/%s" (include "webhooks.kafkaCaPath" .) .Values.kafka.tls.caKey) }}
{{- end }}
{{- range $name, $value := $c.extra }}
{{- $_ := set $data $name $value }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/* Secret settings: the chart-created Secret's stringData (unless secrets.existingSecret). */}}
{{- define "webhooks.secretData" -}}
{{- $pairs := list }}
{{- range .Values.secrets.apiKeys }}
{{- $pairs = append $pairs (printf "%s:%s" .key .tenant) }}
{{- end -}}
api-keys: {{ join "," $pairs | quote }}
cursor-secret: {{ include "webhooks.cursorSecret" . | quote }}
secrets-key: {{ include "webhooks.secretsKey" . | quote }}
delivery-proxy: {{ .Values.secrets.deliveryProxy | quote }}
{{- if not (include "webhooks.embedded" .) }}
clickhouse-url: {{ .Values.clickhouse.url | quote }}
{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
kafka-sasl-username: {{ .Values.kafka.sasl.username | quote }}
kafka-sasl-password: {{ .Values.kafka.sasl.password | quote }}
{{- end }}
{{- end }}

{{/*
MAC key of the eventlog's page cursors. Every eventlog replica must use the same one, and it
must survive upgrades, or outstanding cursors stop working (clients get 400). So: the value
of secrets.cursorSecret; else the one already in the release's Secret (`lookup`, which sees
the cluster on install/upgrade but not under `helm template`); else a new random one.
Computed once per render and memoised in .Values (shared by every template of the chart),
so the Secret, its hook copy and the checksum annotations all see the same value.
*/}}
{{- define "webhooks.cursorSecret" -}}
{{- $memo := .Values.secrets }}
{{- if not (hasKey $memo "_cursorSecret") }}
{{- $value := .Values.secrets.cursorSecret }}
{{- if not $value }}
{{- $value = include "webhooks.releaseSecretValue" (dict "root" . "key" "cursor-secret") }}
{{- end }}
{{- $_ := set $memo "_cursorSecret" (default (randAlphaNum 48) $value) }}
{{- end }}
{{- get $memo "_cursorSecret" }}
{{- end }}

{{/*
Key ring of the endpoint signing secrets at rest (WEBHOOKS_SECRETS_KEY), like the cursor key:
secrets.secretsKey; else the one in the release's Secret; else a new key, named after the day
it was made. Unlike the cursor key, losing it loses data (every endpoint's secret), hence the
warnings in values.yaml and the README.
*/}}
{{- define "webhooks.secretsKey" -}}
{{- $memo := .Values.secrets }}
{{- if not (hasKey $memo "_secretsKey") }}
{{- $value := .Values.secrets.secretsKey }}
{{- if not $value }}
{{- $value = include "webhooks.releaseSecretValue" (dict "root" . "key" "secrets-key") }}
{{- end }}
{{- $generated := printf "k%s:%s" (now | date "20060102") (randBytes 32) }}
{{- $_ := set $memo "_secretsKey" (default $generated $value) }}
{{- end }}
{{- get $memo "_secretsKey" }}
{{- end }}

{{/*
A value of the release's own Secret as it is in the cluster (empty if absent): `lookup` sees
the cluster on install and upgrade, not under `helm template`. Looked up once per render.
Call with (dict "root" $ "key" name).
*/}}
{{- define "webhooks.releaseSecretValue" -}}
{{- $memo := .root.Values.secrets }}
{{- if not (hasKey $memo "_releaseSecret") }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (include "webhooks.fullname" .root) }}
{{- $_ := set $memo "_releaseSecret" ($existing.data | default dict) }}
{{- end }}
{{- get (get $memo "_releaseSecret") .key | b64dec }}
{{- end }}

{{/*
Environment entries read from the Secret, one per key a component needs (least privilege:
fanout never sees the ClickHouse URL). Call with (dict "root" $ "secretName" name "keys" list).
*/}}
{{- define "webhooks.secretEnv" -}}
{{- $envByKey := dict "api-keys" "WEBHOOKS_API_KEYS" "cursor-secret" "WEBHOOKS_CURSOR_SECRET" "secrets-key" "WEBHOOKS_SECRETS_KEY" "clickhouse-url" "WEBHOOKS_CLICKHOUSE_URL" "kafka-sasl-username" "WEBHOOKS_KAFKA_SASL_USERNAME" "kafka-sasl-password" "WEBHOOKS_KAFKA_SASL_PASSWORD" "delivery-proxy" "WEBHOOKS_DELIVERY_PROXY" }}
{{- range .keys }}
- name: {{ get $envByKey . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.secretName }}
      key: {{ . }}
      {{- if eq . "cursor-secret" }}
      # Optional in secrets.existingSecret: without it the key derives from api-keys.
      optional: true
      {{- else if eq . "delivery-proxy" }}
      # Optional in secrets.existingSecret: without it deliveries go out directly.
      optional: true
      {{- end }}
{{- end }}
{{- end }}

{{/* The Secret keys a component reads; call with (dict "root" $ "needs" (list "api-keys" …)). */}}
{{- define "webhooks.secretKeys" -}}
{{- $keys := .needs }}
{{- if .root.Values.kafka.sasl.mechanism }}
{{- $keys = concat $keys (list "kafka-sasl-username" "kafka-sasl-password") }}
{{- end }}
{{- toJson $keys }}
{{- end }}

{{/* Volumes shared by every pod: a writable /tmp and, with TLS, the Kafka CA. */}}
{{- define "webhooks.kafkaCaVolume" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end }}

{{- define "webhooks.kafkaCaMount" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: {{ include "webhooks.kafkaCaPath" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "webhooks.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
