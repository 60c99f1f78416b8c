{{/* Chart name, overridable. */}}
{{- define "acme-integration.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, 63 characters at most. */}}
{{- define "acme-integration.fullname" -}}
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

{{- define "acme-integration.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "acme-integration.labels" -}}
helm.sh/chart: {{ include "acme-integration.chart" .ctx }}
{{ include "acme-integration.selectorLabels" . }}
app.kubernetes.io/version: {{ include "acme-integration.tag" .ctx | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: acme-integration
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "acme-integration.selectorLabels" -}}
app.kubernetes.io/name: {{ include "acme-integration.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image tag: image.tag or the appVersion; never latest. */}}
{{- define "acme-integration.tag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}{{ fail "image.tag must be a fixed version, not latest" }}{{ end }}
{{- $tag }}
{{- end }}

{{/* An image reference; call with (dict "ctx" $ "repository" "webhook-gateway"). */}}
{{/* An image: <registry>/<repository>@<digest> when a digest pins it, else :<tag>. */}}
{{- define "acme-integration.image" -}}
{{- if .digest }}
{{- printf "%s/%s@%s" .ctx.Values.image.registry .repository .digest }}
{{- else }}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .repository (include "acme-integration.tag" .ctx) }}
{{- end }}
{{- end }}

{{- define "acme-integration.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "acme-integration.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding GATEWAY_WEBHOOK_SECRETS and WORKER_CONTACTS_API_TOKEN. */}}
{{- define "acme-integration.secretName" -}}
{{- default (include "acme-integration.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Kafka settings both binaries read. */}}
{{- define "acme-integration.kafkaEnv" -}}
{{- include "acme-integration.kafkaSecurityCheck" . }}
KAFKA_BROKERS: {{ join "," .Values.kafka.brokers | quote }}
KAFKA_TOPIC: {{ .Values.kafka.topic | quote }}
KAFKA_DLQ_TOPIC: {{ .Values.kafka.dlqTopic | quote }}
KAFKA_PROVISION_TOPICS: {{ .Values.kafka.provisionTopics | quote }}
KAFKA_TOPIC_PARTITIONS: {{ int .Values.kafka.topicPartitions | quote }}
KAFKA_DLQ_PARTITIONS: {{ int .Values.kafka.dlqPartitions | quote }}
KAFKA_REPLICATION_FACTOR: {{ int .Values.kafka.replicationFactor | quote }}
KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.security.protocol | quote }}
{{- with .Values.kafka.security.saslMechanism }}
KAFKA_SASL_MECHANISM: {{ . | quote }}
{{- end }}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol }}
KAFKA_SASL_PASSWORD_FILE: "/etc/acme-integration/kafka-sasl/password"
{{- end }}
{{- with .Values.kafka.security.tls }}
{{- if .existingSecret }}
KAFKA_TLS_CA_FILE: "/etc/acme-integration/kafka-tls/ca.crt"
{{- if .clientCertificate }}
KAFKA_TLS_CERT_FILE: "/etc/acme-integration/kafka-tls/tls.crt"
KAFKA_TLS_KEY_FILE: "/etc/acme-integration/kafka-tls/tls.key"
{{- end }}
{{- end }}
{{- with .serverName }}
KAFKA_TLS_SERVER_NAME: {{ . | quote }}
{{- end }}
{{- if .insecureSkipVerify }}
KAFKA_TLS_INSECURE_SKIP_VERIFY: "true"
{{- end }}
{{- end }}
LOG_LEVEL: {{ .Values.logLevel | quote }}
LOG_FORMAT: "json"
{{- end }}

{{/*
Kafka credentials of every container that talks to Kafka: the SASL user name
from the Secret (env), the password and the TLS files mounted read-only
from Secrets (never literal values). kafkaSecurityEnv, kafkaSecurityMounts
and kafkaSecurityVolumes go together.
*/}}
{{- define "acme-integration.kafkaSecurityCheck" -}}
{{- $s := .Values.kafka.security }}
{{- if and (hasPrefix "SASL_" $s.protocol) (or (not $s.existingSecret) (not $s.saslMechanism)) }}
{{- fail "kafka.security.protocol SASL_* needs kafka.security.saslMechanism and kafka.security.existingSecret (keys username, password)" }}
{{- end }}
{{- if and $s.saslMechanism (not (hasPrefix "SASL_" $s.protocol)) }}
{{- fail "kafka.security.saslMechanism is set but kafka.security.protocol is not SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- if and $s.tls.clientCertificate (not $s.tls.existingSecret) }}
{{- fail "kafka.security.tls.clientCertificate needs kafka.security.tls.existingSecret (keys ca.crt, tls.crt, tls.key)" }}
{{- end }}
{{- end }}

{{- define "acme-integration.kafkaSecurityEnv" -}}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.security.existingSecret }}
      key: username
{{- end }}
{{- end }}

{{- define "acme-integration.kafkaSecurityMounts" -}}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol }}
- name: kafka-sasl
  mountPath: /etc/acme-integration/kafka-sasl
  readOnly: true
{{- end }}
{{- if .Values.kafka.security.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/acme-integration/kafka-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "acme-integration.kafkaSecurityVolumes" -}}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol }}
- name: kafka-sasl
  secret:
    secretName: {{ .Values.kafka.security.existingSecret }}
    items:
      - key: password
        path: password
{{- end }}
{{- with .Values.kafka.security.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod. */}}
{{- define "acme-integration.podSpecCommon" -}}
serviceAccountName: {{ include "acme-integration.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Whole seconds of a Go duration made of h, m and s parts (e.g. 25s, 2m, 1m30s). */}}
{{- define "acme-integration.seconds" -}}
{{- $d := toString . }}
{{- if not (regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$" $d) }}{{ fail (printf "duration %q: use h, m and s parts, e.g. 25s or 1m30s" $d) }}{{ end }}
{{- $total := 0 }}
{{- range $part := regexFindAll "[0-9]+[hms]" $d -1 }}
{{- $n := int (trimSuffix "h" (trimSuffix "m" (trimSuffix "s" $part))) }}
{{- if hasSuffix "h" $part }}{{ $total = add $total (mul $n 3600) }}{{ else if hasSuffix "m" $part }}{{ $total = add $total (mul $n 60) }}{{ else }}{{ $total = add $total $n }}{{ end }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
GOMEMLIMIT of a container: 90 % of its memory limit (Mi or Gi), so the Go
garbage collector works harder near the limit instead of the pod being
OOM-killed; nothing without a limit.
*/}}
{{- define "acme-integration.goMemLimit" -}}
{{- with (dig "limits" "memory" "" .) }}
{{- $m := toString . }}
{{- if hasSuffix "Gi" $m }}
GOMEMLIMIT: {{ printf "%dMiB" (div (mul (int (trimSuffix "Gi" $m)) 1024 9) 10) | quote }}
{{- else if hasSuffix "Mi" $m }}
GOMEMLIMIT: {{ printf "%dMiB" (div (mul (int (trimSuffix "Mi" $m)) 9) 10) | quote }}
{{- else }}
{{- fail (printf "resources.limits.memory %q: use Mi or Gi" $m) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The pods' spread: across zones and nodes by default (as evenly as the
cluster allows, never blocking scheduling), or the component's own list;
call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "acme-integration.topologySpread" -}}
{{- $c := index .ctx.Values .component }}
{{- if kindIs "invalid" $c.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "acme-integration.selectorLabels" $ | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
{{- end }}
{{- else if $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $c.topologySpreadConstraints | nindent 2 }}
{{- end }}
{{- end }}

{{/* Fails when a PodDisruptionBudget would block every eviction: node drains
and cluster upgrades would hang on the pods. Call with (dict "name" "gateway.pdb.minAvailable" "value" v "replicas" n "from" "gateway.autoscaling.minReplicas" "min" true). */}}
{{- define "acme-integration.checkPdb" -}}
{{- $v := toString .value }}
{{- if hasSuffix "%" $v }}
{{- $pct := int (trimSuffix "%" $v) }}
{{- if or (and .min (ge $pct 100)) (and (not .min) (le $pct 0)) }}
{{- fail (printf "%s %s blocks every eviction (node drains would hang)" .name $v) }}
{{- end }}
{{- else if .min }}
{{- if and (gt (int .replicas) 0) (ge (int $v) (int .replicas)) }}
{{- fail (printf "%s %s is not below the %d replicas of %s: no pod could ever be evicted (node drains would hang)" .name $v (int .replicas) .from) }}
{{- end }}
{{- else if lt (int $v) 1 }}
{{- fail (printf "%s %s blocks every eviction (node drains would hang): allow at least 1" .name $v) }}
{{- end }}
{{- end }}
