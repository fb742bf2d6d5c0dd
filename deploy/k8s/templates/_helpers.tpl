{{- define "turnout.fullname" -}}
{{- printf "%s-turnout" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turnout.labels" -}}
app.kubernetes.io/name: turnout
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "turnout.selector" -}}
app.kubernetes.io/name: turnout
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "turnout.image" -}}
{{- printf "%s-%s:%s" .root.Values.image.registry .component (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "turnout.dbSecret" -}}
{{- .Values.databaseUrlSecret | default (printf "%s-db" (include "turnout.fullname" .)) -}}
{{- end -}}

{{/* Environment shared by every component: the ConfigMap, the database URL Secret, then the component's own. */}}
{{- define "turnout.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "turnout.fullname" .root }}
env:
  - name: TURNOUT_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "turnout.dbSecret" .root }}
        key: DATABASE_URL
  {{- range $k, $v := .env }}
  - name: {{ $k }}
    value: {{ $v | quote }}
  {{- end }}
{{- end -}}

{{- define "turnout.probes" -}}
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
