{{/*
One Deployment per role. Every role runs the same code, from the full image or the slim one
(values.useSlimImage; the embedded eventlog always the full one); only the args
(`serve <service>`), the eventlog role, the port and the Secret keys differ. Call with a dict:
  root        the top-level context ($)
  component   ingest | fanout | eventlog | eventlog-sink (resource name suffix and label)
  values      the component's values (replicaCount, resources, autoscaling, extraEnv, …)
  args        container args after the image's ENTRYPOINT `webhooks`
  port        container port of the HTTP server (/livez, /healthz, /metrics and, for APIs, the API)
  role        WEBHOOKS_EVENTLOG_ROLE, or "" for other services
  secretKeys  Secret keys the container reads (see webhooks.secretKeys)
  embedded    true for the eventlog pod that holds the embedded ClickHouse volume
*/}}
{{- define "webhooks.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $selector := dict "root" $root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ printf "%s-%s" (include "webhooks.fullname" $root) .component | trunc 63 | trimSuffix "-" }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "webhooks.componentLabels" $selector | nindent 4 }}
spec:
  {{- if .embedded }}
  # chDB opens its path from one process only: exactly one pod, never two during a rollout.
  replicas: 1
  strategy:
    type: Recreate
  {{- else if not (and (hasKey $v "autoscaling") $v.autoscaling.enabled) }}
  replicas: {{ $v.replicaCount | int64 }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "webhooks.componentSelectorLabels" $selector | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "webhooks.componentSelectorLabels" $selector | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Roll the pods when their configuration changes.
        checksum/config: {{ include "webhooks.configData" $root | sha256sum }}
        {{- if not $root.Values.secrets.existingSecret }}
        # Not for secrets.existingSecret: the chart cannot see its content.
        checksum/secret: {{ include "webhooks.secretData" $root | sha256sum }}
        {{- end }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "webhooks.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
      {{- with (include "webhooks.imagePullSecrets" $root | trim) }}{{ . | nindent 6 }}{{ end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: 60
      containers:
        - name: {{ .component }}
          image: {{ include "webhooks.image" (dict "root" $root "slim" (and $v.useSlimImage (not .embedded))) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .port | int64 }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "webhooks.configName" $root }}
          env:
            {{- if .role }}
            - name: WEBHOOKS_EVENTLOG_ROLE
              value: {{ .role }}
            {{- end }}
            {{- if .embedded }}
            - name: WEBHOOKS_CLICKHOUSE_URL
              value: {{ include "webhooks.embeddedClickhouseUrl" $root }}
            {{- end }}
            {{- if eq .component "ingest" }}
            # The idempotency index (RocksDB) on the pod's emptyDir data volume: kept across
            # container restarts (which then read only new ledger records); a pod placed
            # anew rebuilds it from the ledger topic.
            - name: WEBHOOKS_IDEMPOTENCY_DIR
              value: {{ include "webhooks.dataDir" $root }}/idempotency
            {{- end }}
            {{- if eq .component "fanout" }}
            # Faust keeps its local state under the data volume.
            - name: FAUST_DATADIR
              value: {{ include "webhooks.dataDir" $root }}/fanout
            {{- end }}
            {{- with (include "webhooks.secretEnv" (dict "secretName" (include "webhooks.secretName" $root) "keys" .secretKeys) | trim) }}{{ . | nindent 12 }}{{ end }}
            {{- if and $root.Values.tracing.otlpEndpoint (has .component (list "ingest" "fanout")) }}
            # Traces: the OpenTelemetry SDK reads these standard variables.
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ $root.Values.tracing.otlpEndpoint | quote }}
            - name: OTEL_SERVICE_NAME
              value: {{ printf "webhooks-%s" .component }}
            - name: OTEL_TRACES_SAMPLER
              value: {{ $root.Values.tracing.sampler | quote }}
            - name: OTEL_TRACES_SAMPLER_ARG
              value: {{ $root.Values.tracing.samplerArg | quote }}
            {{- with $root.Values.tracing.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # /livez: the process serves HTTP (restart it if not); /healthz: Kafka (and
          # ClickHouse) reachable (take it out of the Service if not). An outage of either
          # must not restart every pod, and the start-up probe only gates liveness.
          startupProbe:
            httpGet:
              path: /livez
              port: http
            {{- toYaml $root.Values.probes.startup | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /livez
              port: http
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: data
              mountPath: {{ include "webhooks.dataDir" $root }}
            {{- with (include "webhooks.kafkaCaMount" $root | trim) }}{{ . | nindent 12 }}{{ end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if .embedded }}
        - name: data
          persistentVolumeClaim:
            claimName: {{ default (printf "%s-clickhouse" (include "webhooks.fullname" $root)) $root.Values.clickhouse.embedded.persistence.existingClaim }}
        {{- else }}
        - name: data
          emptyDir: {}
        {{- end }}
        {{- with (include "webhooks.kafkaCaVolume" $root | trim) }}{{ . | nindent 8 }}{{ end }}
      {{- if $root.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range $root.Values.topologySpread.topologyKeys }}
        - maxSkew: {{ $root.Values.topologySpread.maxSkew | int64 }}
          topologyKey: {{ . }}
          whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "webhooks.componentSelectorLabels" $selector | nindent 14 }}
        {{- end }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* A ClusterIP Service whose port "http" reaches /livez, /healthz, /metrics and the API. */}}
{{- define "webhooks.service" -}}
{{- $selector := dict "root" .root "component" .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ printf "%s-%s" (include "webhooks.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "webhooks.componentLabels" $selector | nindent 4 }}
  {{- with .service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .service.type }}
  selector:
    {{- include "webhooks.componentSelectorLabels" $selector | nindent 4 }}
  ports:
    - name: http
      port: {{ .port | int64 }}
      targetPort: http
      protocol: TCP
{{- end }}

{{/* PodDisruptionBudget: at most pdb.maxUnavailable pods of a component evicted at once. */}}
{{- define "webhooks.pdb" -}}
{{- $selector := dict "root" .root "component" .component -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ printf "%s-%s" (include "webhooks.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "webhooks.componentLabels" $selector | nindent 4 }}
spec:
  maxUnavailable: {{ .pdb.maxUnavailable | int64 }}
  selector:
    matchLabels:
      {{- include "webhooks.componentSelectorLabels" $selector | nindent 6 }}
{{- end }}

{{/* HorizontalPodAutoscaler on CPU utilisation of one Deployment. */}}
{{- define "webhooks.hpa" -}}
{{- $selector := dict "root" .root "component" .component -}}
{{- $name := printf "%s-%s" (include "webhooks.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- if gt (.autoscaling.minReplicas | int64) (.autoscaling.maxReplicas | int64) }}
{{- fail (printf "%s.autoscaling: minReplicas (%d) is above maxReplicas (%d)" .component (.autoscaling.minReplicas | int64) (.autoscaling.maxReplicas | int64)) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "webhooks.componentLabels" $selector | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ .autoscaling.minReplicas | int64 }}
  maxReplicas: {{ .autoscaling.maxReplicas | int64 }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .autoscaling.targetCPUUtilizationPercentage | int64 }}
{{- end }}

{{/*
A pre-install/pre-upgrade Job running one idempotent `webhooks` subcommand. Hooks run
before the release's own ConfigMap and Secret exist, so Jobs read the hook copies from
setup-config.yaml (or secrets.existingSecret, which exists beforehand). Call with a dict:
root, name (resource suffix), args, weight (hook order), secretKeys.
*/}}
{{- define "webhooks.setupJob" -}}
{{- $root := .root -}}
{{- $selector := dict "root" $root "component" (printf "setup-%s" .name) -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ printf "%s-%s" (include "webhooks.fullname" $root) .name | trunc 63 | trimSuffix "-" }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "webhooks.componentLabels" $selector | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: {{ .weight | quote }}
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: {{ $root.Values.setup.backoffLimit | int64 }}
  activeDeadlineSeconds: {{ $root.Values.setup.activeDeadlineSeconds | int64 }}
  template:
    metadata:
      labels:
        {{- include "webhooks.componentSelectorLabels" $selector | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $root.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      restartPolicy: Never
      {{- if not $root.Values.serviceAccount.create }}
      # The chart's own ServiceAccount does not exist yet at pre-install.
      serviceAccountName: {{ include "webhooks.serviceAccountName" $root }}
      {{- end }}
      automountServiceAccountToken: false
      {{- with (include "webhooks.imagePullSecrets" $root | trim) }}{{ . | nindent 6 }}{{ end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .name }}
          image: {{ include "webhooks.image" (dict "root" $root "slim" $root.Values.setup.useSlimImage) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          envFrom:
            - configMapRef:
                name: {{ include "webhooks.setupConfigName" $root }}
          {{- with .secretKeys }}
          env:
            {{- with (include "webhooks.secretEnv" (dict "secretName" (include "webhooks.setupSecretName" $root) "keys" .) | trim) }}{{ . | nindent 12 }}{{ end }}
          {{- end }}
          resources:
            {{- toYaml $root.Values.setup.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with (include "webhooks.kafkaCaMount" $root | trim) }}{{ . | nindent 12 }}{{ end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- with (include "webhooks.kafkaCaVolume" $root | trim) }}{{ . | nindent 8 }}{{ end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
