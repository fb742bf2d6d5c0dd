{{- define "switchyard.fullname" -}}
{{- printf "%s-switchyard" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchyard.labels" -}}
app.kubernetes.io/name: switchyard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "switchyard.selector" -}}
app.kubernetes.io/name: switchyard
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchyard.image" -}}
{{- printf "%s-%s:%s" .root.Values.image.registry .component (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "switchyard.dbSecret" -}}
{{- .Values.databaseUrlSecret | default (printf "%s-db" (include "switchyard.fullname" .)) -}}
{{- end -}}

{{/* Environment shared by every component: the ConfigMap, the database URL Secret, then the component's own. */}}
{{- define "switchyard.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "switchyard.fullname" .root }}
env:
  - name: SWITCHYARD_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "switchyard.dbSecret" .root }}
        key: DATABASE_URL
  {{- range $k, $v := .env }}
  - name: {{ $k }}
    value: {{ $v | quote }}
  {{- end }}
{{- end -}}

{{- define "switchyard.probes" -}}
livenessProbe:
  httpGet: {path: /health, port: {{ .port }}}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /ready, port: {{ .port }}}
  periodSeconds: 5
  failureThreshold: 2
startupProbe:
  httpGet: {path: /health, port: {{ .port }}}
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}
