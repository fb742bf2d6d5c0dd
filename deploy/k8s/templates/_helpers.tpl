{{- define "turnout.name" -}}
{{- .Values.nameOverride | default "turnout" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turnout.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "turnout.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "turnout.labels" -}}
app.kubernetes.io/name: {{ include "turnout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component's objects: (dict "root" $ "component" "gateway") */}}
{{- define "turnout.componentLabels" -}}
{{ include "turnout.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "turnout.selector" -}}
app.kubernetes.io/name: {{ include "turnout.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "turnout.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository ($img.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "turnout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "turnout.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The Secret a secret ref points at: its own name, else existingSecret, else the chart-made one. */}}
{{- define "turnout.secretName" -}}
{{- .ref.name | default .root.Values.secrets.existingSecret | default (include "turnout.fullname" .root) -}}
{{- end -}}

{{- define "turnout.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "turnout.secretName" . }}
      key: {{ .ref.key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Pod template annotations: config checksums (a changed ConfigMap or chart-made Secret rolls the pods). */}}
{{- define "turnout.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Environment of a component: (dict "root" $ "component" "gateway" "env" <map>). The ConfigMap for
plain settings; every secret through secretKeyRef (database and Redis URLs, backends with keys,
and for the gateway the admin and client keys); then the component's own plain variables.
*/}}
{{- define "turnout.env" -}}
{{- $root := .root -}}
{{- $refs := $root.Values.secrets.refs -}}
envFrom:
  - configMapRef:
      name: {{ include "turnout.fullname" $root }}
env:
  {{- include "turnout.secretEnv" (dict "root" $root "env" "TURNOUT_DATABASE_URL" "ref" $refs.databaseUrl) | nindent 2 }}
  {{- include "turnout.secretEnv" (dict "root" $root "env" "TURNOUT_REDIS_URL" "ref" $refs.redisUrl) | nindent 2 }}
  {{- include "turnout.secretEnv" (dict "root" $root "env" "TURNOUT_BACKENDS" "ref" $refs.backends "optional" true) | nindent 2 }}
  {{- if eq .component "gateway" }}
  {{- include "turnout.secretEnv" (dict "root" $root "env" "TURNOUT_ADMIN_KEY" "ref" $refs.adminKey "optional" true) | nindent 2 }}
  {{- include "turnout.secretEnv" (dict "root" $root "env" "TURNOUT_GATEWAY__API_KEYS" "ref" $refs.apiKeys "optional" true) | nindent 2 }}
  {{- end }}
  {{- range $name, $ref := $root.Values.extraSecretEnv }}
  {{- include "turnout.secretEnv" (dict "root" $root "env" $name "ref" $ref) | nindent 2 }}
  {{- end }}
  {{- range $k, $v := .env }}
  - name: {{ $k }}
    value: {{ $v | quote }}
  {{- end }}
{{- end -}}

{{- define "turnout.probes" -}}
livenessProbe:
  httpGet: {path: /health, port: {{ .port }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /ready, port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
startupProbe:
  httpGet: {path: /health, port: {{ .port }}}
  periodSeconds: 2
  timeoutSeconds: 3
  failureThreshold: 90
{{- end -}}

{{/* Pod-level settings shared by every workload: (dict "root" $ "c" <component values> "component" name) */}}
{{- define "turnout.podSpec" -}}
{{- $root := .root -}}
{{- $s := $root.Values.scheduling -}}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
{{- /* a hook runs before the chart's ServiceAccount exists: it keeps the namespace's default one */}}
{{- if not (and .hook $root.Values.serviceAccount.create) }}
serviceAccountName: {{ include "turnout.serviceAccountName" $root }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with (.c.priorityClassName | default $s.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- with (.c.nodeSelector | default $s.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.c.tolerations | default $s.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.c.affinity | default $s.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $spread := .c.topologySpreadConstraints | default $s.topologySpreadConstraints }}
{{- if $spread }}
topologySpreadConstraints:
  {{- range $spread }}
  - {{- toYaml (omit . "labelSelector") | nindent 4 }}
    labelSelector:
      {{- if .labelSelector }}
      {{- toYaml .labelSelector | nindent 6 }}
      {{- else }}
      matchLabels:
        {{- include "turnout.selector" (dict "root" $root "component" $.component) | nindent 8 }}
      {{- end }}
  {{- end }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ $root.Values.tmpVolume.sizeLimit }}
      {{- with $root.Values.tmpVolume.medium }}
      medium: {{ . }}
      {{- end }}
{{- end -}}

{{/* Container-level settings shared by every container: (dict "root" $ "tag" <a component's imageTag, or "">) */}}
{{- define "turnout.container" -}}
image: {{ if .tag }}{{ printf "%s:%s" .root.Values.image.repository .tag }}{{ else }}{{ include "turnout.image" .root }}{{ end }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
volumeMounts:
  - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* A Deployment: (dict "root" $ "component" "scorer" "c" .Values.scorer "module" "turnout.scorer" "port" 9101 "portName" "ops" "env" <map> "autoscaled" bool) */}}
{{- define "turnout.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "turnout.fullname" $root }}-{{ .component }}
  labels:
    {{- include "turnout.componentLabels" . | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "turnout.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "turnout.selector" . | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "turnout.podAnnotations" $root | nindent 8 }}
    spec:
      {{- include "turnout.podSpec" . | nindent 6 }}
      {{- with .terminationGracePeriodSeconds }}
      terminationGracePeriodSeconds: {{ . }}
      {{- end }}
      containers:
        - name: {{ .component }}
          {{- include "turnout.container" (dict "root" $root "tag" .c.imageTag) | nindent 10 }}
          command: ["python", "-m", {{ .module | quote }}]
          ports:
            - {name: {{ .portName }}, containerPort: {{ .port }}, protocol: TCP}
            {{- with .metricsPort }}
            - {name: metrics, containerPort: {{ . }}, protocol: TCP}
            {{- end }}
          {{- include "turnout.env" . | nindent 10 }}
          {{- include "turnout.probes" (dict "port" .portName) | nindent 10 }}
          {{- with .lifecycle }}
          lifecycle:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml .c.resources | nindent 12 }}
{{- end -}}

{{/* A PodDisruptionBudget, only where more than one replica runs (one replica: a PDB would block node drains). */}}
{{- define "turnout.pdb" -}}
{{- $min := .c.replicas -}}
{{- if and .c.autoscaling .c.autoscaling.enabled }}{{ $min = .c.autoscaling.minReplicas }}{{ end -}}
{{- if and .c.keda .c.keda.enabled }}{{ $min = .c.keda.minReplicas }}{{ end -}}
{{- if and .c.pdb.enabled (gt (int $min) 1) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "turnout.fullname" .root }}-{{ .component }}
  labels:
    {{- include "turnout.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .c.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "turnout.selector" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* An HPA on CPU: (dict "root" $ "component" "gateway" "c" .Values.gateway) */}}
{{- define "turnout.hpa" -}}
{{- if .c.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "turnout.fullname" .root }}-{{ .component }}
  labels:
    {{- include "turnout.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "turnout.fullname" .root }}-{{ .component }}
  minReplicas: {{ .c.autoscaling.minReplicas }}
  maxReplicas: {{ .c.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .c.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}

{{/* A KEDA ScaledObject on a queue-depth gauge: (dict "root" $ "component" "profiler" "c" .Values.profiler "metric" "turnout_profiler_queue_depth") */}}
{{- define "turnout.scaledObject" -}}
{{- if .c.keda.enabled }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "turnout.fullname" .root }}-{{ .component }}
  labels:
    {{- include "turnout.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ include "turnout.fullname" .root }}-{{ .component }}
  minReplicaCount: {{ .c.keda.minReplicas }}
  maxReplicaCount: {{ .c.keda.maxReplicas }}
  pollingInterval: {{ .c.keda.pollingInterval }}
  cooldownPeriod: {{ .c.keda.cooldownPeriod }}
  triggers:
    - type: prometheus
      metadata:
        serverAddress: {{ .root.Values.monitoring.kedaPrometheus.serverAddress | quote }}
        query: {{ printf "max(%s{namespace=\"%s\"})" .metric .root.Release.Namespace | quote }}
        threshold: {{ .c.keda.jobsPerReplica | quote }}
{{- end }}
{{- end -}}
